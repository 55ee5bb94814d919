"""``GET /api/v3/presets``: the render presets a job may name in ``advanced.preset``, with the
final video's size per aspect ratio, the voice-over languages and voices and whether it makes
music (what ``advanced`` may choose), and which preset a job that names none gets."""

from __future__ import annotations

from fastapi import APIRouter

from coordinator.audio_options import default_language, default_voice
from coordinator.deps import CurrentUser, JobRunnerDep, SettingsDep
from coordinator.envelope import Envelope, ok
from coordinator.schemas.presets import PresetList
from models.presets import TINY_PRESET, VoiceSpec, get_preset, list_presets

router = APIRouter(prefix="/presets", tags=["presets"])


@router.get("", response_model=Envelope[PresetList])
async def list_render_presets(user: CurrentUser, settings: SettingsDep, runner: JobRunnerDep):
    # The same choice job creation makes (coordinator.crud.jobs.resolve_plan).
    default = (settings.renderfarm_default_preset or await runner.default_preset()
               or TINY_PRESET)
    presets = []
    for name in list_presets():
        preset = get_preset(name)
        presets.append({"name": preset.name, "description": preset.description,
                        "outputSizes": {ratio: {"width": width, "height": height}
                                        for ratio, (width, height) in preset.output_size.items()},
                        "default": preset.name == default,
                        "voice": _voice_offer(preset.voice),
                        "music": preset.music is not None})
    return ok({"presets": presets, "defaultPreset": default})


def _voice_offer(voice: VoiceSpec | None) -> dict | None:
    """The languages and voices a job may choose, with the defaults it gets (the same choice
    job creation makes: ``coordinator.audio_options``)."""
    if voice is None:
        return None
    return {"languages": {code: {"voices": model.voice_names, "defaultVoice": default_voice(model)}
                          for code, model in sorted(voice.languages.items())},
            "defaultLanguage": default_language(voice)}
