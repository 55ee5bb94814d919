"""Memory options of presets, and what a render does when the GPU runs out of memory.

There is no GPU here: the out-of-memory error is raised for real, by a forward hook on the tiny
pipeline's UNet or VAE decoder that raises ``torch.cuda.OutOfMemoryError`` when it is given
more than a set amount of work, the way a too-small card would."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from diffusers.models.attention_processor import SlicedAttnProcessor

from actors import steps
from models.out_of_memory import OUT_OF_MEMORY_CODE, GpuOutOfMemory
from models.pipelines import load_clip_model, load_image_model
from models.presets import PRESETS_DIR, PresetError, RenderPreset, get_preset, load_preset_file

MEMORY_OPTIONS = {"attention_slicing": True, "vae_slicing": True, "vae_tiling": True,
                  "cpu_offload": "model"}


@pytest.fixture(scope="module")
def keyframe():
    return PIL.Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))


def out_of_memory_above(module: torch.nn.Module, limit: int):
    """Makes ``module`` raise CUDA's out-of-memory error when its input batch exceeds ``limit``;
    returns the hook handle and a list of the batch sizes it saw."""
    batches: list[int] = []

    def hook(_module, args, kwargs):
        batch = (args[0] if args else next(iter(kwargs.values()))).shape[0]
        batches.append(batch)
        if batch > limit:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {batch} GiB (test hook)")

    return module.register_forward_pre_hook(hook, with_kwargs=True), batches


def preset_with(tmp_path, name: str, image: dict | None = None, clip: dict | None = None) -> RenderPreset:
    data = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    data["name"] = name
    data["image"].update(image or {})
    data["clip"].update(clip or {})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_preset_file(path)


# ---- options ------------------------------------------------------------------------------

def test_memory_options_are_applied_at_load_and_offload_is_skipped_on_cpu(tmp_path, models_dir,
                                                                          keyframe, caplog):
    # SVD's UNet cannot slice attention, and its VAE neither slices nor tiles
    # (decode_chunk_size does that job).
    clip_options = {"cpu_offload": "sequential"}
    preset = preset_with(tmp_path, "tiny-lean", image=MEMORY_OPTIONS, clip=clip_options)
    caplog.set_level(logging.INFO, logger="models.pipelines")
    image = load_image_model(preset, models_dir)
    clip = load_clip_model(preset, models_dir)
    assert image.pipeline.vae.use_slicing and image.pipeline.vae.use_tiling
    assert image.pipeline.device.type == clip.pipeline.device.type == "cpu"
    processors = image.pipeline.unet.attn_processors.values()
    assert processors and all(isinstance(p, SlicedAttnProcessor) for p in processors)
    skipped = [r.getMessage() for r in caplog.records if "cpu_offload" in r.getMessage()]
    assert len(skipped) == 2 and all("skipped" in m and "accelerator" in m for m in skipped)
    # The lean models still render.
    assert image.render(["a red car"], [1], 64, 64)[0].size == (64, 64)
    assert len(clip.render(keyframe, seed=1, width=64, height=64, num_frames=2)) == 2


@pytest.mark.parametrize("section, change, message", [
    ("image", {"cpu_offload": "disk"}, "image.cpu_offload"),
    ("clip", {"attention_slicing": "yes"}, "clip.attention_slicing"),
    ("image", {"vae_tilling": True}, "image.vae_tilling"),
])
def test_bad_memory_options_are_refused(tmp_path, section, change, message):
    with pytest.raises(PresetError, match=message):
        preset_with(tmp_path, "tiny-bad", **{section: change})


@pytest.mark.parametrize("option, message", [
    ("vae_tiling", "clip.vae_tiling: .*AutoencoderKLTemporalDecoder.*decode_chunk_size"),
    ("vae_slicing", "clip.vae_slicing: .*cannot do this"),
    ("attention_slicing", "clip.attention_slicing: StableVideoDiffusionPipeline cannot slice"),
])
def test_options_the_model_cannot_do_are_refused_at_load(tmp_path, models_dir, option, message):
    preset = preset_with(tmp_path, f"tiny-svd-{option.replace('_', '-')}", clip={option: True})
    with pytest.raises(PresetError, match=message):
        load_clip_model(preset, models_dir)


def test_shipped_presets_set_only_known_memory_options():
    # sd15-ltx cannot fit LTX-Video and its T5 encoder on a 24 GB card without offload and tiling.
    ltx = get_preset("sd15-ltx")
    assert ltx.clip.cpu_offload == "model" and ltx.clip.vae_tiling
    assert get_preset("sdxl-turbo-svd").image.vae_slicing
    assert get_preset("tiny").image.cpu_offload == "none"


# ---- out of memory: images ------------------------------------------------------------------

def test_an_image_batch_out_of_memory_is_retried_one_image_at_a_time(image_model, caplog):
    prompts, seeds = ["a red car", "a blue boat", "a green kite"], [11, 12, 13]
    alone = [image_model.render([p], [s], 64, 64)[0] for p, s in zip(prompts, seeds)]
    # The tiny preset uses classifier-free guidance: one image is a UNet batch of two.
    hook, batches = out_of_memory_above(image_model.pipeline.unet, limit=2)
    try:
        images = image_model.render(prompts, seeds, 64, 64)
    finally:
        hook.remove()
    assert batches[0] == 6 and set(batches[1:]) == {2}
    assert [i.tobytes() for i in images] == [i.tobytes() for i in alone]
    assert any("retrying one at a time" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("batch", [1, 3])
def test_an_image_out_of_memory_after_the_retry_names_the_preset_and_the_options(image_model, batch):
    hook, batches = out_of_memory_above(image_model.pipeline.unet, limit=0)
    try:
        with pytest.raises(GpuOutOfMemory) as failure:
            image_model.render(["a red car"] * batch, list(range(batch)), 64, 64)
    finally:
        hook.remove()
    # A batch is tried once whole and once split; a single image has nothing smaller to try.
    assert len(batches) == (1 if batch == 1 else 2)
    message = failure.value.message
    assert "preset 'tiny'" in message and "attention_slicing: true" in message
    assert failure.value.code == OUT_OF_MEMORY_CODE
    assert isinstance(failure.value.__cause__, torch.cuda.OutOfMemoryError)


# ---- out of memory: clips -------------------------------------------------------------------

def test_a_clip_out_of_memory_in_the_decoder_is_retried_decoding_one_frame_at_a_time(
        clip_model, keyframe, caplog):
    hook, batches = out_of_memory_above(clip_model.pipeline.vae.decoder, limit=1)
    try:
        frames = clip_model.render(keyframe, seed=5, width=64, height=64, num_frames=4)
    finally:
        hook.remove()
    assert batches[0] == 4 and set(batches[1:]) == {1}
    # SVD's decoder smooths across the frames of a chunk, so these frames differ a little
    # from a clip decoded four at a time; the clip is complete all the same.
    assert len(frames) == 4 and all(frame.size == (64, 64) for frame in frames)
    assert any("decode_chunk_size 1 instead of 4" in r.getMessage() for r in caplog.records)


def test_a_clip_out_of_memory_after_the_retry_fails_with_advice(clip_model, keyframe):
    hook, _ = out_of_memory_above(clip_model.pipeline.vae.decoder, limit=0)
    try:
        with pytest.raises(GpuOutOfMemory, match="decode_chunk_size 1.*cpu_offload: \"model\""):
            clip_model.render(keyframe, seed=5, width=64, height=64, num_frames=4)
    finally:
        hook.remove()


# ---- the job's error code, through Ray Serve ------------------------------------------------

def test_the_renderer_out_of_memory_fails_the_step_with_its_own_code(ray_session):
    """A Serve replica renders with the real tiny model on a "card" too small for any image:
    the job actor's renderer call turns the failure into the ``gpu_out_of_memory`` code."""
    from ray import serve

    @serve.deployment(name="SmallCardImages", ray_actor_options={"num_cpus": 0})
    class SmallCardImages:
        def __init__(self, models_dir: str) -> None:
            self.model = load_image_model(get_preset("tiny"), models_dir)
            self.hook, _ = out_of_memory_above(self.model.pipeline.unet, limit=0)

        def render(self, prompts: list[str]) -> int:
            return len(self.model.render(prompts, list(range(len(prompts))), 64, 64))

    handle = serve.run(SmallCardImages.bind(str(ray_session["models_dir"])),
                       name="small-card", route_prefix=None)
    try:
        with pytest.raises(steps.StepFailed) as failure:
            asyncio.run(steps.call_renderer(lambda: handle.render.remote(["a", "b"]),
                                            "Rendering the image of scene 0", timeout_s=120))
    finally:
        serve.delete("small-card")
    assert failure.value.code == "gpu_out_of_memory"
    assert failure.value.message.startswith("Rendering the image of scene 0 failed: the GPU ran "
                                            "out of memory with preset 'tiny'")
    assert "attention_slicing: true" in failure.value.message
