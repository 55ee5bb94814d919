"""``GET /jobs/{id}/metadata``: what the delivered video is."""

from __future__ import annotations

from pydantic import BaseModel

from coordinator.schemas.common import CamelModel, UtcDatetime


class VideoCodecs(BaseModel):
    video: str
    audio: str | None  # null: no audio track (the ads are silent)


class VideoMetadata(CamelModel):
    job_id: str
    duration: float | None
    # Null only when the job's preset is no longer installed.
    width: int | None
    height: int | None
    fps: int
    codecs: VideoCodecs
    format: str
    file_size: int
    created_at: UtcDatetime
