"""Twin presets: each shipped preset with its models swapped for small random-weight twins.

A twin (built by ``models.twins``) is the production pipeline's own diffusers classes with tiny
random weights, so a CPU can run a GPU preset's exact loading and calling code in seconds. The
twin preset keeps every setting of its production preset (pipeline classes, weight variants,
dtypes, steps, frame counts, fps, guidance, motion settings) and changes only:

- ``model``: the twin's directory under ``models_dir`` (also each voice language's and the music's);
- the sizes: divided by ``SIZE_SCALE`` and rounded to the model's size multiple, keeping the
  orientation, so every size rule of the real model still holds (and still bites).

No other setting needed scaling for CPU runs: at these sizes even SVD-XT's 25 steps x 25 frames
with guidance and LTX's 40 steps x 97 frames render in a few seconds on two cores (measured),
because the twins are narrow. Should a future preset be too slow, scale its twin's model (fewer
layers, narrower blocks) before its settings, so the preset's own values keep being exercised.

This module only derives preset data; it imports neither torch nor diffusers, so test set-up can
write twin presets cheaply. A production model with no entry in ``TWIN_MODELS`` has no twin, and
``twin_preset`` says so: adding a preset with a new model means adding its twin here and a
builder in ``models.twins``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.presets import TINY_MODEL, RenderPreset, get_preset

# Twins live together under models_dir, apart from the hub cache and the tiny builds.
TWINS_SUBDIR = "twins"
TWIN_SUFFIX = "-twin"
# Production sizes are 512-1280 pixels; an eighth keeps renders on a CPU to a fraction of a second.
SIZE_SCALE = 8


@dataclass(frozen=True)
class TwinModel:
    """The twin of one production model: where it is saved and which rules it keeps."""

    directory: str
    # The pixel multiple the real model needs: 8 for SD/SDXL/SVD latents, 32 for LTX-Video.
    size_multiple: int = 8


# Production model id -> its twin. ``models.twins.TWIN_BUILDERS`` has a builder per directory.
TWIN_MODELS: dict[str, TwinModel] = {
    "stabilityai/sdxl-turbo": TwinModel("sdxl-turbo"),
    "stabilityai/stable-video-diffusion-img2vid-xt": TwinModel("svd-xt"),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": TwinModel("sd15"),
    "Lightricks/LTX-Video": TwinModel("ltx-video", size_multiple=32),
    # Audio: the tiny VITS (one speaker, as MMS) and MusicGen of models.tiny_audio.
    "facebook/mms-tts-eng": TwinModel("mms-tts-eng"),
    "facebook/mms-tts-deu": TwinModel("mms-tts-deu"),
    "facebook/mms-tts-spa": TwinModel("mms-tts-spa"),
    "facebook/mms-tts-fra": TwinModel("mms-tts-fra"),
    "facebook/musicgen-small": TwinModel("musicgen-small"),
}


class NoTwin(LookupError):
    """A preset names a production model that has no twin yet."""


def twin_model(model_id: str) -> TwinModel:
    try:
        return TWIN_MODELS[model_id]
    except KeyError:
        raise NoTwin(f"model {model_id!r} has no twin: add it to models.twin_presets.TWIN_MODELS "
                     "and a builder to models.twins.TWIN_BUILDERS") from None


def twin_directory(models_dir: Path | str, model_id: str) -> Path:
    """Where the twin of ``model_id`` is saved under ``models_dir``."""
    return Path(models_dir) / TWINS_SUBDIR / twin_model(model_id).directory


def twin_preset_name(preset_name: str) -> str:
    return preset_name if preset_name == TINY_MODEL else f"{preset_name}{TWIN_SUFFIX}"


def twin_preset(preset: RenderPreset, models_dir: Path | str) -> dict[str, Any]:
    """The twin of ``preset`` as preset data (validate it with ``RenderPreset.model_validate``).

    The ``tiny`` preset is its own twin: its models are already random-weight builds.
    """
    data = preset.model_dump(mode="json")
    if preset.image.model == TINY_MODEL and preset.clip.model == TINY_MODEL:
        return data
    image_twin, clip_twin = twin_model(preset.image.model), twin_model(preset.clip.model)
    data["name"] = twin_preset_name(preset.name)
    data["description"] = f"Random-weight twin of {preset.name}, for CPU tests; output is noise."
    data["image"]["model"] = str(twin_directory(models_dir, preset.image.model))
    data["clip"]["model"] = str(twin_directory(models_dir, preset.clip.model))
    data["image_size"] = _scaled(data["image_size"], image_twin.size_multiple)
    data["clip_size"] = _scaled(data["clip_size"], clip_twin.size_multiple)
    # H.264 4:2:0 needs even output sizes.
    data["output_size"] = _scaled(data["output_size"], 2)
    for language in (data.get("voice") or {}).get("languages", {}).values():
        language["model"] = str(twin_directory(models_dir, language["model"]))
    if data.get("music"):
        data["music"]["model"] = str(twin_directory(models_dir, data["music"]["model"]))
    return data


def write_twin_presets(directory: Path, models_dir: Path | str) -> list[str]:
    """Write a twin preset file for every shipped preset that is not its own twin; return their
    names. ``directory`` is meant for ``RENDERFARM_PRESETS_PATH``; the twins themselves are built
    by ``models.twins.ensure_twins`` before a job uses them."""
    from models.presets import PRESETS_DIR

    names = []
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        data = twin_preset(get_preset(path.stem), models_dir)
        if data["name"] == path.stem:
            continue
        (directory / f"{data['name']}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        names.append(data["name"])
    return names


def _scaled(table: dict[str, list[int]], multiple: int) -> dict[str, list[int]]:
    scaled = {}
    for ratio, (width, height) in table.items():
        new_width, new_height = (max(multiple, round(side / SIZE_SCALE / multiple) * multiple)
                                 for side in (width, height))
        if ratio == "1:1":
            new_height = new_width
        elif (width > height) != (new_width > new_height) or new_width == new_height:
            # Rounding squashed the shape: grow the long side by one multiple.
            if width > height:
                new_width = new_height + multiple
            else:
                new_height = new_width + multiple
        scaled[ratio] = [new_width, new_height]
    return scaled
