"""A job's sound options checked against its preset: voice-over on or off, the language and
voice (only what the preset's voice section offers), and where the music comes from. Reads
``models.presets`` only (no torch). What it returns is stored in ``jobs.advanced``, so the job
actor reads settled values: ``voiceOver``, ``language``, ``voice``, ``music``."""

from __future__ import annotations

from typing import Any

from coordinator.envelope import APIError
from coordinator.schemas.jobs import AdvancedOptions, MusicSource
from models.presets import RenderPreset, VoiceModel, VoiceSpec

DEFAULT_LANGUAGE = "en"


def _invalid(message: str) -> APIError:
    return APIError(400, message, "validation_error")


def default_language(voice: VoiceSpec) -> str:
    """The language of a job that names none: English if the preset speaks it, else its default."""
    return DEFAULT_LANGUAGE if DEFAULT_LANGUAGE in voice.languages else voice.default_language


def default_voice(model: VoiceModel) -> str:
    """The voice of a job that names none, in one language."""
    return model.default_voice or model.voice_names[0]


def resolve_audio(preset: RenderPreset, advanced: AdvancedOptions) -> dict[str, Any]:
    """The settled sound options. A preset without a voice (or music) model makes the default
    silent; asking for one explicitly is a 400 naming what the preset offers."""
    chosen = advanced.model_fields_set
    voice_spec, music_spec = getattr(preset, "voice", None), getattr(preset, "music", None)
    voice_over = advanced.voice_over and voice_spec is not None
    if advanced.voice_over and voice_spec is None and "voice_over" in chosen:
        raise _invalid(f"advanced.voiceOver: preset {preset.name!r} has no voice model; "
                       "set voiceOver to false or choose another preset")
    language = voice = None
    if voice_over:
        languages = voice_spec.languages
        language = advanced.language or default_language(voice_spec)
        if language not in languages:
            raise _invalid(f"advanced.language: {language!r} is not a language preset "
                           f"{preset.name!r} speaks; valid languages: {', '.join(sorted(languages))}")
        model = languages[language]
        voice = advanced.voice or default_voice(model)
        if voice not in model.voice_names:
            raise _invalid(f"advanced.voice: {voice!r} is not a voice of preset {preset.name!r} "
                           f"in {language!r}; valid voices: {', '.join(model.voice_names)}")
    music = advanced.music
    if music == MusicSource.GENERATED and music_spec is None:
        if "music" in chosen:
            raise _invalid(f'advanced.music: preset {preset.name!r} has no music model; choose '
                           '"asset" (with musicAssetId) or "none"')
        music = MusicSource.NONE
    return {"voiceOver": voice_over, "language": language, "voice": voice, "music": music.value,
            "musicAssetId": advanced.music_asset_id if music == MusicSource.ASSET else None}
