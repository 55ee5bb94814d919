"""``GET /api/v3/presets``: the render presets a job may name in ``advanced.preset``, with the
final video's size per aspect ratio and which one a job that names none gets."""

from __future__ import annotations

from fastapi import APIRouter

from coordinator.deps import CurrentUser, JobRunnerDep, SettingsDep
from coordinator.envelope import Envelope, ok
from coordinator.schemas.presets import PresetList
from models.presets import TINY_PRESET, get_preset, list_presets

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
                        "default": preset.name == default})
    return ok({"presets": presets, "defaultPreset": default})
