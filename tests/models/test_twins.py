"""Every shipped preset has a twin that runs its exact pipelines and settings on a CPU.

The presets are enumerated from ``models/presets/``, so a new preset whose models have no twin
fails here rather than on a customer's first GPU job.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from models import twins
from models.pipelines import load_clip_model, load_image_model
from models.presets import PRESETS_DIR, PresetError, RenderPreset, get_preset
from models.twin_presets import TWIN_MODELS, NoTwin, twin_directory, twin_preset

SHIPPED_PRESETS = sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))
PROMPT = "a can of lime soda on a sunny beach, advertising photo"
# What a twin preset may differ in from its production preset; everything else is kept.
CHANGED_FOR_TWIN = {"name", "description", "image_size", "clip_size", "output_size"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("twin-models")


def _twin(name: str, models_dir, **changes) -> RenderPreset:
    data = twin_preset(get_preset(name), models_dir)
    for section, values in changes.items():
        data[section] = {**data[section], **values}
    twins.ensure_twins(models_dir, [name])
    return RenderPreset.model_validate(data)


def _not_blank(image: PIL.Image.Image) -> bool:
    # Weights loaded in the wrong dtype give NaNs, which decode to flat black frames.
    return float(np.asarray(image).std()) > 0


@pytest.mark.parametrize("name", SHIPPED_PRESETS)
def test_twin_renders_image_and_clip_with_the_presets_settings(name, models_dir):
    production = get_preset(name)
    twin = _twin(name, models_dir)

    # The same classes, weight variants, dtypes, steps, frames, fps, guidance and motion settings.
    kept = {key: value for key, value in production.model_dump().items() if key not in CHANGED_FOR_TWIN}
    twin_kept = {key: value for key, value in twin.model_dump().items() if key not in CHANGED_FOR_TWIN}
    for role in ("image", "clip", "music"):
        kept[role].pop("model"), twin_kept[role].pop("model")
    for language in kept["voice"]["languages"]:
        kept["voice"]["languages"][language].pop("model")
        twin_kept["voice"]["languages"][language].pop("model")
    assert twin_kept == kept

    image_model = load_image_model(twin, models_dir)
    clip_model = load_clip_model(twin, models_dir)
    width, height = twin.image_size["16:9"]
    (image,) = image_model.render([PROMPT], [7], width, height)
    assert image.size == (width, height) and _not_blank(image)

    clip_width, clip_height = twin.clip_size["16:9"]
    frames = clip_model.render(image, 7, clip_width, clip_height, prompt=PROMPT)
    assert len(frames) == production.clip.num_frames
    assert {frame.size for frame in frames} == {(clip_width, clip_height)}
    assert all(_not_blank(frame) for frame in frames)


@pytest.mark.parametrize("name", SHIPPED_PRESETS)
def test_twin_sizes_keep_the_models_size_rules(name, models_dir):
    production, twin = get_preset(name), RenderPreset.model_validate(twin_preset(get_preset(name), "/m"))
    for table in ("image_size", "clip_size", "output_size"):
        for ratio, (width, height) in getattr(twin, table).items():
            real_width, real_height = getattr(production, table)[ratio]
            assert (width > height) == (real_width > real_height) and (width == height) == (real_width == real_height)
            assert width <= real_width and height <= real_height
    for role in ("image", "clip"):
        spec = getattr(production, role)
        if spec.model in TWIN_MODELS:
            multiple = TWIN_MODELS[spec.model].size_multiple
            assert all(side % multiple == 0 for size in getattr(twin, f"{role}_size").values() for side in size)
            assert getattr(twin, role).model == str(twin_directory("/m", spec.model))


def test_sdxl_turbo_twin_is_loaded_as_sdxl_through_the_auto_pipeline(models_dir):
    twin = _twin("sdxl-turbo-svd", models_dir)
    assert twin.image.pipeline == "AutoPipelineForText2Image" and twin.image.variant == "fp16"
    model = load_image_model(twin, models_dir)
    assert type(model.pipeline).__name__ == "StableDiffusionXLPipeline"
    assert model.pipeline.unet.config.addition_embed_type == "text_time"
    assert type(model.pipeline.text_encoder_2).__name__ == "CLIPTextModelWithProjection"


def test_ltx_frame_count_must_be_8k_plus_1(models_dir):
    # LTX compresses time 8x: 96 frames would silently come out as 89.
    twin = _twin("sd15-ltx", models_dir, clip={"num_frames": 96})
    with pytest.raises(PresetError, match="num_frames 96 is not 8k\\+1"):
        load_clip_model(twin, models_dir)


def test_ltx_clip_sizes_must_be_multiples_of_32(models_dir):
    # A multiple of 8 passes the preset schema but not LTX's 32x spatial compression.
    twin = _twin("sd15-ltx", models_dir, clip_size={"16:9": [136, 64]})
    with pytest.raises(PresetError, match="clip_size 16:9 136x64 is not a multiple of 32"):
        load_clip_model(twin, models_dir)
    model = load_clip_model(_twin("sd15-ltx", models_dir), models_dir)
    with pytest.raises(ValueError, match="multiples of 32"):
        model.render(PIL.Image.new("RGB", (64, 64)), 1, 136, 64)
    with pytest.raises(ValueError, match="8k\\+1"):
        model.render(PIL.Image.new("RGB", (64, 64)), 1, 128, 64, num_frames=12)


def test_a_model_without_a_twin_is_named():
    data = get_preset("sdxl-turbo-svd").model_dump(mode="json")
    data["clip"]["model"] = "example/new-video-model"
    with pytest.raises(NoTwin, match="example/new-video-model"):
        twin_preset(RenderPreset.model_validate(data), "/m")
