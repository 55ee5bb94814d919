"""``GET /presets``: the render presets a job may name in ``advanced.preset``."""

from __future__ import annotations

from pydantic import BaseModel

from coordinator.schemas.common import CamelModel


class OutputSize(BaseModel):
    width: int
    height: int


class PresetOut(CamelModel):
    name: str
    description: str
    # The final video's size per aspect ratio ("16:9", "9:16", "1:1").
    output_sizes: dict[str, OutputSize]
    default: bool


class PresetList(CamelModel):
    presets: list[PresetOut]
    # The preset of a job that names none.
    default_preset: str
