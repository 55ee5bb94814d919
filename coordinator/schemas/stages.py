"""The stage timeline's entry shape (``coordinator.stages`` builds the timeline)."""

from __future__ import annotations

from typing import Literal

from coordinator.schemas.common import CamelModel, UtcDatetime


class StageOut(CamelModel):
    name: Literal["storyboard", "images", "review", "clips", "compositing", "upload"]
    status: Literal["pending", "running", "completed", "failed", "skipped"]
    percent: float
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None
    error: str | None = None
