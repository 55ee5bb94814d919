"""Tiny random-weight pipelines of the real diffusers classes, for CPU tests and laptops.

The ``tiny`` preset runs the same code path as production (the same pipeline classes,
``save_pretrained``/``from_pretrained``, schedulers, generators) with models small enough to
render a frame in a fraction of a second, and without any weights from a model hub: every
weight comes from a seeded random initialisation and the tokenizer vocabulary is built in code.

The saved pipelines live under ``models_dir/"tiny-image"`` and ``models_dir/"tiny-clip"``.
Several worker processes may ask for them at once, so a pipeline is saved into a private
staging directory and moved into place with one atomic ``os.rename``; a process that loses
the race throws its copy away and uses the winner's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableVideoDiffusionPipeline,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

log = logging.getLogger(__name__)

# Bump when a builder below changes, so saved copies from an older build are replaced.
TINY_BUILD_VERSION = 1
# Written last into a finished build; its presence (with the right version) is what
# "this directory holds a usable tiny pipeline" means.
MARKER_FILE = "renderfarm-tiny.json"

IMAGE_DIR_NAME = "tiny-image"
CLIP_DIR_NAME = "tiny-clip"

# The diffusers classes the tiny builds are, so a preset can be checked against them.
TINY_IMAGE_PIPELINE = StableDiffusionPipeline.__name__
TINY_CLIP_PIPELINE = StableVideoDiffusionPipeline.__name__

SEED = 0
# Hidden size of the tiny text encoder and of the tiny image encoder's projection; it is the
# UNets' cross-attention width, so both must agree.
_EMBED_DIM = 32
# Four VAE levels give the production 8x latent downscale, so sizes that break the real models
# (not multiples of 8) break the tiny ones too. Group norm needs channels divisible by 32.
_VAE_CHANNELS = (32, 32, 32, 32)
# SVD conditions on (fps, motion bucket, noise augmentation): three added time ids.
_SVD_TIME_IDS = 3
_SVD_TIME_EMBED_DIM = 32


def _euler_scheduler(**overrides: object) -> EulerDiscreteScheduler:
    # The Stable Diffusion noise schedule; the clip model overrides it with the SVD settings.
    config: dict[str, object] = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
    }
    config.update(overrides)
    return EulerDiscreteScheduler(**config)


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: every character is one token.

    Its vocabulary (the 256 byte symbols, each also in end-of-word form, plus the special
    tokens) is built here, so nothing is downloaded. ``model_max_length`` is the real 77, so
    prompts are padded and truncated exactly as with production tokenizers.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [f"{symbol}</w>" for symbol in alphabet]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_image_pipeline() -> StableDiffusionPipeline:
    """A text-to-image ``StableDiffusionPipeline`` with small random weights (seeded)."""
    tokenizer = tiny_clip_tokenizer()
    # fork_rng keeps the caller's global RNG untouched while the seed fixes every weight.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=_EMBED_DIM,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        torch.manual_seed(SEED)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(_VAE_CHANNELS),
            up_block_types=("UpDecoderBlock2D",) * len(_VAE_CHANNELS),
            block_out_channels=_VAE_CHANNELS,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=64,
        )
        torch.manual_seed(SEED)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=_EMBED_DIM,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_euler_scheduler(),
        # Random weights make no images worth screening, and a checker needs its own weights.
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_clip_pipeline(num_frames: int = 8) -> StableVideoDiffusionPipeline:
    """An image-to-video ``StableVideoDiffusionPipeline`` with small random weights (seeded),
    its UNet configured for clips of ``num_frames``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNetSpatioTemporalConditionModel(
            sample_size=8,
            # Noisy latents concatenated with the conditioning image's latents.
            in_channels=8,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=_EMBED_DIM,
            num_attention_heads=(2, 4),
            addition_time_embed_dim=_SVD_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=_SVD_TIME_IDS * _SVD_TIME_EMBED_DIM,
            num_frames=num_frames,
        )
        torch.manual_seed(SEED)
        vae = AutoencoderKLTemporalDecoder(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(_VAE_CHANNELS),
            block_out_channels=_VAE_CHANNELS,
            layers_per_block=1,
            latent_channels=4,
            sample_size=64,
        )
        torch.manual_seed(SEED)
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                # The pipeline always resizes the conditioning image to 224x224 for CLIP.
                image_size=224,
                patch_size=32,
                hidden_size=32,
                intermediate_size=64,
                projection_dim=_EMBED_DIM,
                num_hidden_layers=2,
                num_attention_heads=4,
            )
        )
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
    )
    # The Stable Video Diffusion sampler: continuous-time Euler on Karras sigmas, v-prediction.
    scheduler = _euler_scheduler(
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_type="continuous",
        steps_offset=0,
    )
    return StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )


def ensure_tiny_image_pipeline(models_dir: Path) -> Path:
    """Return ``models_dir/"tiny-image"``, building and saving the pipeline there if needed."""
    return ensure_saved(Path(models_dir), IMAGE_DIR_NAME, build_tiny_image_pipeline)


def ensure_tiny_clip_pipeline(models_dir: Path) -> Path:
    """Return ``models_dir/"tiny-clip"``, building and saving the pipeline there if needed."""
    return ensure_saved(Path(models_dir), CLIP_DIR_NAME, build_tiny_clip_pipeline)


def is_current_build(directory: Path) -> bool:
    """True when ``directory`` holds a finished tiny build of the current version."""
    try:
        marker = json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    # model_index.json: a diffusers pipeline; config.json: a transformers model (the audio ones).
    saved = (directory / "model_index.json").is_file() or (directory / "config.json").is_file()
    return marker.get("version") == TINY_BUILD_VERSION and saved


def ensure_saved(
    models_dir: Path, name: str, build: Callable[[], DiffusionPipeline | Any], variant: str | None = None
) -> Path:
    """Return ``models_dir/name``, saving ``build()`` there (as weights ``variant``) if needed.
    ``build`` returns anything with diffusers' or transformers' ``save_pretrained``."""
    target = models_dir / name
    if is_current_build(target):
        return target

    models_dir.mkdir(parents=True, exist_ok=True)
    if target.exists():
        # An older build (or a leftover without a marker): move it out of the way atomically
        # so no reader ever sees a half-replaced directory. Only a code upgrade gets here.
        _retire(target)

    log.info("building random-weight pipeline %s", target)
    # The staging directory is a sibling of the target so the final rename stays on one
    # filesystem and is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=models_dir))
    try:
        build().save_pretrained(staging, safe_serialization=True, variant=variant)
        # The marker goes in last: a directory with it is complete by construction.
        (staging / MARKER_FILE).write_text(json.dumps({"version": TINY_BUILD_VERSION}))
        # mkdtemp makes a private directory; workers running as other users must read it too.
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)
        except OSError:
            # Renaming onto a non-empty directory fails: another process finished first.
            if not is_current_build(target):
                raise
            log.info("tiny pipeline %s was built by another process; using it", target)
    finally:
        # Only left behind when we lost the race or failed.
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _retire(target: Path) -> None:
    graveyard = target.with_name(f".{target.name}-stale-{uuid.uuid4().hex}")
    try:
        os.rename(target, graveyard)
    except FileNotFoundError:
        return  # another process already moved it
    shutil.rmtree(graveyard, ignore_errors=True)
