"""``GET /presets``: the render presets a job may name in ``advanced.preset``."""

from __future__ import annotations

from pydantic import BaseModel

from coordinator.schemas.common import CamelModel


class OutputSize(BaseModel):
    width: int
    height: int


class VoiceLanguageOut(CamelModel):
    # What ``advanced.voice`` may name in this language, and what a job naming none gets.
    voices: list[str]
    default_voice: str


class PresetVoiceOut(CamelModel):
    # What ``advanced.language`` may name (language code -> its voices), and the default.
    languages: dict[str, VoiceLanguageOut]
    default_language: str


class PresetOut(CamelModel):
    name: str
    description: str
    # The final video's size per aspect ratio ("16:9", "9:16", "1:1").
    output_sizes: dict[str, OutputSize]
    default: bool
    # The voice-over on offer; null: the preset speaks no lines (its ads have no voice-over).
    voice: PresetVoiceOut | None
    # Whether the preset makes music (``advanced.music`` "generated"); "asset" and "none" are
    # always on offer.
    music: bool


class PresetList(CamelModel):
    presets: list[PresetOut]
    # The preset of a job that names none.
    default_preset: str
