"""A reference image (a product or character) conditions scene images: image-to-image from the
reference, over the text-to-image pipeline's own loaded components, for every preset class.

Random-weight VAEs do not reconstruct what they encode, so closeness to the reference cannot
show in the decoded pixels of these tiny models; it is measured where the conditioning acts, in
the latents the VAE decodes (the same pipeline call, ``output_type="latent"``).
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from models import twins
from models.pipelines import load_image_model
from models.presets import PRESETS_DIR, PresetError, RenderPreset, get_preset, load_preset_file
from models.twin_presets import TWIN_MODELS, twin_preset

PROMPT = "a can of lime soda on a sunny beach, advertising photo"
SHIPPED_PRESETS = sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def reference_image(width: int, height: int) -> PIL.Image.Image:
    """A left-to-right gradient with a red block: structure a reference would carry over."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[...] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    pixels[height // 4: 3 * height // 4, width // 3: 2 * width // 3] = (230, 30, 30)
    return PIL.Image.fromarray(pixels)


def as_array(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_shipped_presets_condition_images_by_img2img():
    for name in SHIPPED_PRESETS:
        spec = get_preset(name).image
        assert spec.reference == "img2img", name
        assert int(spec.steps * spec.reference_strength) >= 1, name


def test_a_strength_that_leaves_no_denoising_step_is_refused(tmp_path):
    data = get_preset("tiny").model_dump(mode="json")
    data["image"].update(reference="img2img", reference_strength=0.2)  # 4 steps x 0.2 = 0
    path = tmp_path / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PresetError, match="reference_strength 0.2 leaves no denoising step"):
        load_preset_file(path)


def test_reference_changes_every_image_of_the_call_and_shares_the_weights(image_model):
    width, height = 96, 64
    reference = reference_image(width, height)
    prompts, seeds = [PROMPT, "a bottle of water"], [3, 4]
    plain = image_model.render(prompts, seeds, width, height)
    conditioned = image_model.render(prompts, seeds, width, height, reference=reference)
    again = image_model.render(prompts, seeds, width, height, reference=reference)

    assert [image.size for image in conditioned] == [(width, height)] * 2
    for with_reference, without in zip(conditioned, plain):
        assert np.abs(as_array(with_reference) - as_array(without)).mean() > 5
    # Same seed, same reference: the same images.
    assert all(np.array_equal(as_array(a), as_array(b)) for a, b in zip(conditioned, again))
    # The image-to-image pipeline holds the text-to-image pipeline's modules, not copies.
    from_reference = image_model._from_reference
    assert from_reference.unet is image_model.pipeline.unet
    assert from_reference.vae is image_model.pipeline.vae


def test_reference_of_another_size_is_cropped_to_the_frame(image_model):
    (image,) = image_model.render([PROMPT], [5], 64, 96, reference=reference_image(300, 120))
    assert image.size == (64, 96)


def test_conditioned_latents_are_closer_to_the_reference(image_model):
    """Where img2img acts: the latents it hands the VAE start from the reference's and stay far
    closer to them than the text-to-image latents of the same seed."""
    width, height = 96, 64
    reference = reference_image(width, height)
    pipeline, from_reference = image_model.pipeline, image_model._from_reference
    with torch.inference_mode():
        pixels = from_reference.image_processor.preprocess(reference)
        reference_latents = (pipeline.vae.encode(pixels).latent_dist.mean
                             * pipeline.vae.config.scaling_factor)
        common = {"prompt": [PROMPT], "num_inference_steps": image_model.spec.steps,
                  "guidance_scale": image_model.spec.guidance_scale, "output_type": "latent"}
        for seed in (1, 2):
            generator = torch.Generator().manual_seed(seed)
            without = pipeline(**common, width=width, height=height, generator=[generator]).images
            generator = torch.Generator().manual_seed(seed)
            with_reference = from_reference(**common, image=[reference], generator=[generator],
                                            strength=image_model.spec.reference_strength).images
            near = (with_reference - reference_latents).abs().mean().item()
            far = (without - reference_latents).abs().mean().item()
            assert near * 3 < far, (seed, near, far)


@pytest.mark.parametrize("name", [name for name in SHIPPED_PRESETS
                                  if get_preset(name).image.model in TWIN_MODELS])
def test_gpu_presets_render_from_a_reference(name, tmp_path_factory):
    """SD 1.5 and SDXL (through AutoPipelineForText2Image) both get their image-to-image
    pipeline from the loaded one, with the preset's own settings (twins: random weights)."""
    models_dir = tmp_path_factory.mktemp("reference-twins")
    preset = get_preset(name)
    twins.ensure_twin(models_dir, preset.image.model, preset.image.variant)
    twin = RenderPreset.model_validate(twin_preset(preset, models_dir))
    model = load_image_model(twin, models_dir)
    width, height = twin.image_size["16:9"]
    reference = reference_image(width, height)
    (plain,) = model.render([PROMPT], [7], width, height)
    (conditioned,) = model.render([PROMPT], [7], width, height, reference=reference)
    assert conditioned.size == (width, height)
    assert float(as_array(conditioned).std()) > 0  # not NaNs decoded to black
    assert not np.array_equal(as_array(plain), as_array(conditioned))
    assert model._from_reference.unet is model.pipeline.unet
