"""Random-weight twins of the production pipelines, for running GPU presets on a CPU.

Each builder makes the pipeline a production model id loads, from the same diffusers and
transformers classes with the same structural settings (text encoders, conditioning, latent
channels' role, compression ratios, scheduler class and schedule), only narrow and shallow and
with seeded random weights. Tokenizer vocabularies are built in code; nothing is downloaded.

What each twin keeps, because it is what production code depends on:

- SDXL-Turbo: ``StableDiffusionXLPipeline`` components (two CLIP text encoders, the second with
  a projection, a UNet with ``addition_embed_type="text_time"``), SDXL's VAE scaling, Turbo's
  Euler-ancestral "trailing" schedule; saved as the ``fp16`` variant in float16, as on the hub,
  and loaded through ``AutoPipelineForText2Image`` by the preset.
- SVD-XT: the spatio-temporal UNet trained for 25 frames, the temporal VAE decoder, the CLIP
  image encoder at 224 pixels, the v-prediction Karras schedule; ``fp16`` variant.
- SD 1.5: the classic pipeline with its PNDM scheduler and its safety checker and feature
  extractor, which ``from_pretrained`` loads for the real model too.
- LTX-Video: the video transformer, the causal video VAE at the real 32x spatial and 8x temporal
  compression (so sizes must be multiples of 32 and frame counts 8k+1, as on a GPU), a T5
  encoder with a T5 tokenizer, the flow-matching Euler schedule with dynamic shifting.

Twins are saved under ``models_dir/twins/<name>`` (see ``models.twin_presets``) with the same
atomic build-and-rename as the tiny pipelines.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLLTXVideo,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LTXImageToVideoPipeline,
    LTXVideoTransformer3DModel,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    StableVideoDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from models import tiny, tiny_audio
from models.presets import get_preset
from models.twin_presets import TWIN_MODELS, twin_directory

SEED = 0
# Width of every tiny text encoder; SDXL's UNet attends to both encoders side by side.
_TEXT_DIM = 32
# SDXL's added time ids: original size, crop corner and target size, two numbers each.
_SDXL_TIME_IDS = 6
_SDXL_TIME_EMBED_DIM = 8
# T5's own maximum; the LTX pipeline pads prompts to its max_sequence_length (128) within it.
_T5_MAX_LENGTH = 512


def build_sdxl_turbo_twin() -> StableDiffusionXLPipeline:
    """SDXL-Turbo's pipeline with small random weights, in float16 like the hub's fp16 variant."""
    tokenizer = tiny.tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            # The penultimate states of both text encoders, concatenated.
            cross_attention_dim=2 * _TEXT_DIM,
            # SDXL's micro-conditioning: time ids plus the second encoder's pooled embedding.
            addition_embed_type="text_time",
            addition_time_embed_dim=_SDXL_TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=_SDXL_TIME_IDS * _SDXL_TIME_EMBED_DIM + _TEXT_DIM,
            norm_num_groups=32,
        )
        torch.manual_seed(SEED)
        vae = _sd_vae(scaling_factor=0.13025, force_upcast=True)
        torch.manual_seed(SEED)
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer))
        torch.manual_seed(SEED)
        text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer, projection_dim=_TEXT_DIM))
    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        # Turbo is distilled for a handful of steps on a "trailing" spacing.
        timestep_spacing="trailing",
    )
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tiny.tiny_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    return pipeline.to(torch.float16)


def build_svd_xt_twin() -> StableVideoDiffusionPipeline:
    """Stable Video Diffusion XT's pipeline (a UNet for 25 frames), float16 like its fp16 variant."""
    # XT's UNet is trained for 25 frames; the rest of SVD is what the tiny clip build has.
    return tiny.build_tiny_clip_pipeline(num_frames=25).to(torch.float16)


def build_sd15_twin() -> StableDiffusionPipeline:
    """Stable Diffusion 1.5's pipeline, with its PNDM scheduler and a safety checker."""
    base = tiny.build_tiny_image_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        safety_checker = StableDiffusionSafetyChecker(
            CLIPConfig(
                text_config=_clip_text_config(base.tokenizer).to_dict(),
                vision_config=CLIPVisionConfig(
                    image_size=224, patch_size=32, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4,
                ).to_dict(),
                projection_dim=_TEXT_DIM,
            )
        )
    # Random concept embeddings would flag random images at random; these thresholds keep the
    # checker running on every image (as it does in production) without blacking any out.
    with torch.no_grad():
        safety_checker.concept_embeds_weights.fill_(2.0)
        safety_checker.special_care_embeds_weights.fill_(2.0)
    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=base.unet,
        scheduler=scheduler,
        safety_checker=safety_checker,
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": 224},
                                             crop_size={"height": 224, "width": 224}),
        requires_safety_checker=True,
    )


def build_ltx_video_twin() -> LTXImageToVideoPipeline:
    """LTX-Video's image-to-video pipeline at its real compression ratios, in bfloat16."""
    tokenizer = _t5_tokenizer()
    latent_channels = 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        transformer = LTXVideoTransformer3DModel(
            in_channels=latent_channels,
            out_channels=latent_channels,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=2,
            attention_head_dim=16,
            cross_attention_dim=32,
            num_layers=1,
            caption_channels=_TEXT_DIM,
        )
        torch.manual_seed(SEED)
        # The production layout (4x4 patches, three space-time downsamplings: 32x spatial, 8x
        # temporal compression) with narrow blocks.
        vae = AutoencoderKLLTXVideo(
            latent_channels=latent_channels,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False),
            patch_size=4,
            patch_size_t=1,
        )
        torch.manual_seed(SEED)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer),
                d_model=_TEXT_DIM,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    # LTX-Video's schedule: the shift grows with the number of latent tokens.
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )
    pipeline = LTXImageToVideoPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer
    )
    return pipeline.to(torch.bfloat16)


# Twin directory name (models.twin_presets.TWIN_MODELS) -> builder.
TWIN_BUILDERS: dict[str, Callable[[], DiffusionPipeline | tiny_audio.SavedTogether]] = {
    "sdxl-turbo": build_sdxl_turbo_twin,
    "svd-xt": build_svd_xt_twin,
    "sd15": build_sd15_twin,
    "ltx-video": build_ltx_video_twin,
    # Audio twins: the tiny builds, single-speaker like MMS-TTS (models.tiny_audio).
    **{f"mms-tts-{language}": lambda: tiny_audio.build_tiny_voice(num_speakers=1)
       for language in ("eng", "deu", "spa", "fra")},
    "musicgen-small": tiny_audio.build_tiny_music,
}


def ensure_twin(models_dir: Path | str, model_id: str, variant: str | None = None) -> Path:
    """The twin of production model ``model_id`` under ``models_dir``, built if missing, saved as
    weights ``variant`` when the preset loads one."""
    target = twin_directory(models_dir, model_id)
    build = TWIN_BUILDERS[TWIN_MODELS[model_id].directory]
    return tiny.ensure_saved(target.parent, target.name, build, variant=variant)


def ensure_twins(models_dir: Path | str, preset_names: list[str]) -> list[Path]:
    """Build the twins of the models the named (production) presets load."""
    built = []
    for name in preset_names:
        preset = get_preset(name)
        for spec in (preset.image, preset.clip):
            if spec.model in TWIN_MODELS:
                built.append(ensure_twin(models_dir, spec.model, spec.variant))
        audio_models = [language.model for language in preset.voice.languages.values()] if preset.voice else []
        audio_models += [preset.music.model] if preset.music else []
        built += [ensure_twin(models_dir, model) for model in audio_models if model in TWIN_MODELS]
    return built


def _sd_vae(**overrides: object) -> AutoencoderKL:
    # Four levels give the production 8x latent downscale.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        **overrides,
    )


def _clip_text_config(tokenizer, projection_dim: int | None = None) -> CLIPTextConfig:
    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_DIM,
        intermediate_size=64,
        # SDXL reads the penultimate layer, so at least two.
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _t5_tokenizer() -> T5TokenizerFast:
    """A character-level T5 (Unigram) tokenizer: T5's special tokens, then one piece per
    printable character, with and without the word-start marker."""
    characters = [c for c in string.printable if not c.isspace()]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{c}", -3.0) for c in characters] + [(c, -4.0) for c in characters]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=_T5_MAX_LENGTH)
