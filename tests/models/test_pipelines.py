"""Tiny pipelines end to end on CPU: build, save, reload, render, and reproduce from a seed."""

from __future__ import annotations

import json

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch

from models import tiny
from models.device import DEVICE_ENV, choose_device, choose_dtype
from models.pipelines import check_preset
from models.presets import PresetError, get_preset, list_presets

PROMPT = "a red sports car on a coastal road, advertising photo"


@pytest.fixture(scope="module")
def keyframe():
    # A smooth gradient stands in for a rendered keyframe; its size differs from the clip size
    # on purpose, since the pipeline must resize it.
    ramp = np.linspace(0, 255, 80, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128), axis=-1)
    return PIL.Image.fromarray(pixels.astype(np.uint8))


def _same(a: PIL.Image.Image, b: PIL.Image.Image) -> bool:
    return a.size == b.size and a.tobytes() == b.tobytes()


# --- devices -------------------------------------------------------------------------------

def test_device_defaults_to_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device() == "cuda"


def test_device_env_override(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    assert choose_device() == "cuda:1"
    monkeypatch.setenv(DEVICE_ENV, "toaster")
    with pytest.raises(ValueError, match=DEVICE_ENV):
        choose_device()


def test_dtype_choice():
    assert choose_dtype("cuda", "auto") == torch.float16
    assert choose_dtype("cuda:0", "bfloat16") == torch.bfloat16
    assert choose_dtype("cpu", "auto") == torch.float32
    # Half precision is not worth having on a CPU.
    assert choose_dtype("cpu", "float16") == torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        choose_dtype("cpu", "float8")


# --- presets against diffusers ---------------------------------------------------------------

@pytest.mark.parametrize("name", list_presets())
def test_shipped_presets_fit_their_pipelines(name):
    # No weights are loaded: class names and call parameters only.
    check_preset(get_preset(name))


def test_preset_settings_a_pipeline_does_not_take_are_refused(preset):
    clip = preset.clip.model_copy(update={"model": "some/model", "guidance_scale": 2.0})
    with pytest.raises(PresetError, match="does not take guidance_scale"):
        check_preset(preset.model_copy(update={"clip": clip}))
    image = preset.image.model_copy(update={"pipeline": "NoSuchPipeline"})
    with pytest.raises(PresetError, match="'NoSuchPipeline' is not a diffusers pipeline class"):
        check_preset(preset.model_copy(update={"image": image}))


# --- tiny builds -----------------------------------------------------------------------------

def test_tiny_image_build_is_a_saved_pipeline(models_dir):
    path = tiny.ensure_tiny_image_pipeline(models_dir)
    assert path == models_dir / "tiny-image"
    pipeline = diffusers.StableDiffusionPipeline.from_pretrained(path)
    assert pipeline.safety_checker is None
    assert pipeline.tokenizer.model_max_length == 77
    assert pipeline.unet.config.block_out_channels == [32, 64]
    # Production latent diffusion downscales by 8; so does the tiny VAE.
    assert pipeline.vae_scale_factor == 8


def test_tiny_clip_build_is_a_saved_pipeline(models_dir):
    path = tiny.ensure_tiny_clip_pipeline(models_dir)
    assert path == models_dir / "tiny-clip"
    pipeline = diffusers.StableVideoDiffusionPipeline.from_pretrained(path)
    assert pipeline.image_encoder.config.image_size == 224
    assert isinstance(pipeline.scheduler, diffusers.EulerDiscreteScheduler)


def test_second_ensure_reuses_the_saved_build(models_dir, monkeypatch):
    paths = [tiny.ensure_tiny_image_pipeline(models_dir), tiny.ensure_tiny_clip_pipeline(models_dir)]
    before = [(p.stat().st_ino, (p / tiny.MARKER_FILE).stat().st_mtime_ns) for p in paths]

    def no_rebuild():
        raise AssertionError("rebuilt a pipeline that was already saved")

    monkeypatch.setattr(tiny, "build_tiny_image_pipeline", no_rebuild)
    monkeypatch.setattr(tiny, "build_tiny_clip_pipeline", no_rebuild)
    assert [tiny.ensure_tiny_image_pipeline(models_dir), tiny.ensure_tiny_clip_pipeline(models_dir)] == paths
    assert [(p.stat().st_ino, (p / tiny.MARKER_FILE).stat().st_mtime_ns) for p in paths] == before


def test_losing_the_build_race_uses_the_winners_copy(tmp_path, monkeypatch):
    build = tiny.build_tiny_image_pipeline
    calls = 0

    def racing_build():
        # While this process builds, "another worker" finishes and moves its copy into place.
        nonlocal calls
        calls += 1
        if calls == 1:
            tiny.ensure_tiny_image_pipeline(tmp_path)
            winner.append((tmp_path / "tiny-image").stat().st_ino)
        return build()

    winner: list[int] = []
    monkeypatch.setattr(tiny, "build_tiny_image_pipeline", racing_build)
    path = tiny.ensure_tiny_image_pipeline(tmp_path)
    assert calls == 2
    assert path.stat().st_ino == winner[0]
    assert tiny.is_current_build(path)
    # The loser's staging directory is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-image"]


def test_stale_build_is_replaced(tmp_path):
    stale = tmp_path / "tiny-image"
    stale.mkdir()
    (stale / tiny.MARKER_FILE).write_text(json.dumps({"version": tiny.TINY_BUILD_VERSION - 1}))
    path = tiny.ensure_tiny_image_pipeline(tmp_path)
    assert tiny.is_current_build(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-image"]


# --- image model -----------------------------------------------------------------------------

def test_image_model_runs_tiny_on_cpu_float32(image_model):
    assert image_model.device == "cpu"
    assert image_model.dtype == torch.float32
    assert image_model.pipeline.unet.dtype == torch.float32


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16", "1:1"])
def test_image_render_has_the_requested_size(image_model, preset, aspect_ratio):
    width, height = preset.image_size[aspect_ratio]
    images = image_model.render([PROMPT, "a blue boat"], [1, 2], width, height)
    assert [image.size for image in images] == [(width, height)] * 2
    assert all(image.mode == "RGB" for image in images)


def test_image_render_is_reproducible_per_seed(image_model):
    first = image_model.render([PROMPT], [1], 96, 64)[0]
    again = image_model.render([PROMPT], [1], 96, 64)[0]
    other_seed = image_model.render([PROMPT], [2], 96, 64)[0]
    assert _same(first, again)
    assert not _same(first, other_seed)
    # Not a flat image: random weights still give varied pixels, so "different" is meaningful.
    assert np.asarray(first).std() > 1


def test_image_in_a_batch_matches_it_rendered_alone(image_model):
    # A scene re-rendered on its own must reproduce its storyboard image. Each image has its own
    # generator, so the noise is the same; batched kernels round differently from single ones,
    # which can move an odd pixel value by one level, and nothing more.
    alone = image_model.render([PROMPT], [1], 96, 64)[0]
    batch = image_model.render(["a blue boat", PROMPT, "a green field"], [7, 1, 9], 96, 64)
    difference = np.abs(np.asarray(batch[1], dtype=int) - np.asarray(alone, dtype=int))
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.001
    assert not _same(batch[0], alone)
    # The same batch again is bit for bit the same.
    again = image_model.render(["a blue boat", PROMPT, "a green field"], [7, 1, 9], 96, 64)
    assert all(_same(a, b) for a, b in zip(batch, again, strict=True))


def test_image_negative_prompt_is_used(image_model):
    default = image_model.render([PROMPT], [1], 64, 64)[0]
    custom = image_model.render([PROMPT], [1], 64, 64, negative_prompt="cartoon, text")[0]
    assert not _same(default, custom)


def test_image_render_refuses_bad_arguments(image_model):
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        image_model.render([PROMPT, PROMPT], [1], 64, 64)
    with pytest.raises(ValueError, match="multiples of 8"):
        image_model.render([PROMPT], [1], 60, 64)
    with pytest.raises(ValueError, match="seed must be"):
        image_model.render([PROMPT], [-1], 64, 64)
    assert image_model.render([], [], 64, 64) == []


# --- clip model ------------------------------------------------------------------------------

def test_clip_model_runs_tiny_on_cpu_float32(clip_model):
    assert clip_model.device == "cpu"
    assert clip_model.pipeline.unet.dtype == torch.float32


@pytest.mark.parametrize("aspect_ratio", ["16:9", "9:16", "1:1"])
def test_clip_render_has_the_presets_frames_and_size(clip_model, preset, keyframe, aspect_ratio):
    width, height = preset.clip_size[aspect_ratio]
    frames = clip_model.render(keyframe, 1, width, height)
    assert len(frames) == preset.clip.num_frames
    assert {frame.size for frame in frames} == {(width, height)}


def test_clip_render_is_reproducible_per_seed(clip_model, keyframe):
    first = clip_model.render(keyframe, 1, 64, 64)
    again = clip_model.render(keyframe, 1, 64, 64)
    other_seed = clip_model.render(keyframe, 2, 64, 64)
    assert all(_same(a, b) for a, b in zip(first, again, strict=True))
    assert not all(_same(a, b) for a, b in zip(first, other_seed, strict=True))


def test_clip_num_frames_override(clip_model, keyframe):
    frames = clip_model.render(keyframe, 1, 64, 64, num_frames=4)
    assert len(frames) == 4
    with pytest.raises(ValueError, match="num_frames"):
        clip_model.render(keyframe, 1, 64, 64, num_frames=0)
