"""Render presets: which models render a job, how, at what sizes, and what it costs.

A preset is one YAML file in ``models/presets/`` (the file name is the preset name). This
module only reads and validates those files; it imports neither torch nor diffusers, so the
coordinator can quote prices and check aspect ratios without loading a model. Loading the
models a preset names is ``models.pipelines``' job.
"""

from __future__ import annotations

import os
import re
import string
from functools import cache
from pathlib import Path
from typing import Annotated, Literal, Self, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRESETS_DIR = Path(__file__).with_suffix("")  # models/presets/, next to this module
DEFAULT_PRESET_ENV = "RENDERFARM_DEFAULT_PRESET"
PRESETS_PATH_ENV = "RENDERFARM_PRESETS_PATH"
TINY_PRESET = "tiny"
GPU_PRESET = "sdxl-turbo-svd"
# The ``model`` value that selects the offline random-weight pipelines of ``models.tiny``.
TINY_MODEL = "tiny"

AspectRatio = Literal["16:9", "9:16", "1:1"]
ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
DType = Literal["auto", "float16", "bfloat16", "float32"]
# "model" moves each model to the GPU only while it runs; "sequential" does so layer by layer
# (least memory, slowest). Both need an accelerator and are skipped on a CPU.
CpuOffload = Literal["none", "model", "sequential"]
# How a scene image is conditioned on a job's reference image (a product or character):
# "img2img" denoises from the reference (diffusers' image-to-image pipeline, sharing the loaded
# text-to-image components); "none" refuses jobs that ask for a reference.
ReferenceMode = Literal["img2img", "none"]


class PresetError(ValueError):
    """A preset file is missing, unreadable or invalid."""


class UnknownPreset(PresetError, KeyError):
    """No preset has this name. A ``KeyError`` too, so lookups can be caught as such."""

    def __init__(self, name: str, valid: list[str]) -> None:
        super().__init__(f"unknown preset {name!r}; valid presets: {', '.join(valid) or '(none)'}")
        self.name = name
        self.valid = valid

    def __str__(self) -> str:
        # KeyError would show the repr of the message; keep it readable.
        return str(self.args[0])


class _Strict(BaseModel):
    # Typos in a YAML key must fail loudly rather than silently fall back to a default, and
    # "4" must not pass for 4.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# A (width, height) pair; YAML gives lists, so the pair itself is parsed laxly while each
# number stays strict.
Size = Annotated[tuple[Annotated[int, Field(gt=0, strict=True)], Annotated[int, Field(gt=0, strict=True)]],
                 Field(strict=False)]
SizeTable = dict[AspectRatio, Size]


class _MemoryOptions(_Strict):
    """Ways a pipeline trades speed for GPU memory, applied by ``models.pipelines`` at load."""

    attention_slicing: bool = Field(default=False, description="compute attention in slices")
    vae_slicing: bool = Field(default=False, description="decode one image (or frame chunk) at a time")
    vae_tiling: bool = Field(default=False, description="decode in overlapping tiles; for large sizes")
    cpu_offload: CpuOffload = "none"


class ImageSpec(_MemoryOptions):
    """The text-to-image model that renders a scene's keyframe."""

    pipeline: str = Field(min_length=1, description="diffusers pipeline class name")
    model: str = Field(min_length=1, description='hub id, local directory, or "tiny"')
    variant: str | None = Field(default=None, description='weights variant on the hub, e.g. "fp16"')
    steps: int = Field(ge=1, le=200)
    guidance_scale: float = Field(ge=0.0, le=30.0)
    negative_prompt: str | None = None
    prompt_template: str = "{prompt}"
    dtype: DType = "auto"
    reference: ReferenceMode = "none"
    # img2img: how far from the reference the denoising may move (0 keeps it, 1 ignores it).
    # The pipeline runs int(steps * strength) of the steps, so at least one must remain.
    reference_strength: float = Field(default=0.6, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_reference_steps(self) -> Self:
        if self.reference == "img2img" and int(self.steps * self.reference_strength) < 1:
            raise ValueError(f"reference_strength {self.reference_strength} leaves no denoising step "
                             f"of {self.steps}; raise it to at least {1 / self.steps:g}")
        return self

    @field_validator("prompt_template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        try:
            fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
        except ValueError as exc:
            raise ValueError(f"bad prompt_template: {exc}") from None
        if "prompt" not in fields:
            raise ValueError("prompt_template must contain {prompt}")
        if extra := fields - {"prompt", "style"}:
            raise ValueError(f"prompt_template may only use {{prompt}} and {{style}}, not {sorted(extra)}")
        return template


class ClipSpec(_MemoryOptions):
    """The image-to-video model that animates a keyframe into a clip.

    ``fps`` and the guidance knobs are passed only to pipelines whose call accepts them
    (``models.pipelines`` checks this when it loads the model), so one schema covers
    Stable Video Diffusion and prompt-conditioned image-to-video models.
    """

    pipeline: str = Field(min_length=1)
    model: str = Field(min_length=1)
    variant: str | None = None
    steps: int = Field(ge=1, le=200)
    num_frames: int = Field(ge=1, le=512)
    fps: int = Field(ge=1, le=120)
    dtype: DType = "auto"
    # Stable Video Diffusion conditioning.
    motion_bucket_id: int | None = Field(default=None, ge=0, le=255)
    noise_aug_strength: float | None = Field(default=None, ge=0.0, le=1.0)
    decode_chunk_size: int | None = Field(default=None, ge=1)
    min_guidance_scale: float | None = Field(default=None, ge=0.0)
    max_guidance_scale: float | None = Field(default=None, ge=0.0)
    # Prompt-conditioned image-to-video models.
    guidance_scale: float | None = Field(default=None, ge=0.0)
    negative_prompt: str | None = None

    @model_validator(mode="after")
    def _check_guidance_range(self) -> Self:
        low, high = self.min_guidance_scale, self.max_guidance_scale
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_guidance_scale {low} is above max_guidance_scale {high}")
        return self


# Language codes as the job brief gives them: ISO 639-1 or -3, optionally with a region.
LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")]
# The transformers classes ``models.audio`` knows how to load and call; another name is a
# preset mistake, refused here rather than when a job first asks for a voice.
VoiceArchitecture = Literal["VitsModel"]
MusicArchitecture = Literal["MusicgenForConditionalGeneration"]
# The one voice of a single-speaker model (MMS-TTS has no speakers to choose from).
DEFAULT_VOICE = "default"


class VoiceModel(_Strict):
    """The text-to-speech model of one language."""

    model: str = Field(min_length=1, description='hub id, local directory, or "tiny"')
    # Named voices -> the model's speaker ids (multi-speaker VITS). Empty for a single-speaker
    # model, whose one voice is called "default".
    voices: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=32)],
                 Annotated[int, Field(ge=0)]] = {}
    default_voice: str | None = None

    @model_validator(mode="after")
    def _check_default_voice(self) -> Self:
        if self.voices and self.default_voice not in self.voices:
            raise ValueError(f"default_voice must be one of {sorted(self.voices)}")
        if not self.voices and self.default_voice not in (None, DEFAULT_VOICE):
            raise ValueError(f"a model without named voices has only {DEFAULT_VOICE!r}")
        return self

    @property
    def voice_names(self) -> list[str]:
        return sorted(self.voices) or [DEFAULT_VOICE]


class VoiceSpec(_Strict):
    """The voice-over: a text-to-speech model per language (``models.audio`` speaks with it)."""

    architecture: VoiceArchitecture
    languages: dict[LanguageCode, VoiceModel] = Field(min_length=1)
    default_language: str
    # Above 1 speaks faster (shorter lines); VITS stretches its predicted durations by 1/rate.
    speaking_rate: float = Field(default=1.0, ge=0.5, le=2.0)
    # VITS' sampling temperature; None keeps the model's own.
    noise_scale: float | None = Field(default=None, ge=0.0, le=2.0)
    # Longer lines are split at sentence ends (then commas, then words) into pieces of at most
    # this many characters, spoken one by one and joined with ``pause_s`` of silence.
    max_chars: int = Field(default=300, ge=20, le=5000)
    pause_s: float = Field(default=0.2, ge=0.0, le=2.0)
    dtype: DType = "auto"

    @model_validator(mode="after")
    def _check_default_language(self) -> Self:
        if self.default_language not in self.languages:
            raise ValueError(f"default_language {self.default_language!r} must be one of "
                             f"{sorted(self.languages)}")
        return self


class MusicSpec(_Strict):
    """The background music: a text-to-audio model (``models.audio`` composes with it)."""

    architecture: MusicArchitecture
    model: str = Field(min_length=1, description='hub id, local directory, or "tiny"')
    guidance_scale: float = Field(default=3.0, ge=0.0, le=20.0)
    # The longest piece made in one go (MusicGen was trained on 30 s); a longer bed repeats
    # that piece, each repeat crossfaded into the last over ``crossfade_s``.
    max_duration_s: float = Field(gt=0.0, le=120.0)
    crossfade_s: float = Field(default=1.0, ge=0.0)
    dtype: DType = "auto"

    @model_validator(mode="after")
    def _check_crossfade(self) -> Self:
        if self.crossfade_s * 2 > self.max_duration_s:
            raise ValueError(f"crossfade_s {self.crossfade_s} must be at most half of "
                             f"max_duration_s {self.max_duration_s}")
        return self


class Estimate(_Strict):
    """GPU-seconds per scene, the basis of cost quotes."""

    image_seconds_per_scene: float = Field(gt=0)
    clip_seconds_per_scene: float = Field(gt=0)
    # Speaking one scene's line, and composing the job's music bed once (0: no such model).
    voice_seconds_per_scene: float = Field(default=0.0, ge=0)
    music_seconds_per_job: float = Field(default=0.0, ge=0)

    def gpu_seconds(self, scenes: int) -> float:
        return scenes * (self.image_seconds_per_scene + self.clip_seconds_per_scene)


class RenderPreset(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)
    description: str = Field(min_length=1)
    image: ImageSpec
    clip: ClipSpec
    # What the image model renders, what the clip model renders, and the final video
    # resolution, per aspect ratio, as (width, height).
    image_size: SizeTable
    clip_size: SizeTable
    output_size: SizeTable
    estimate: Estimate
    # Voice-over and music models; a preset without them makes silent videos.
    voice: VoiceSpec | None = None
    music: MusicSpec | None = None

    @field_validator("image_size", "clip_size", "output_size", mode="before")
    @classmethod
    def _hint_unquoted_ratio(cls, table: object) -> object:
        # YAML 1.1 reads an unquoted 16:9 as the base-60 integer 969; say so plainly.
        if isinstance(table, dict):
            for key in table:
                if not isinstance(key, str):
                    raise ValueError(f'aspect ratio key {key!r} must be a quoted string such as "16:9"')
        return table

    @field_validator("image_size", "clip_size")
    @classmethod
    def _check_model_sizes(cls, table: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        # Latent diffusion VAEs downscale by 8.
        return _check_size_table(table, multiple=8)

    @field_validator("output_size")
    @classmethod
    def _check_output_sizes(cls, table: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        # H.264 with 4:2:0 chroma needs even dimensions.
        return _check_size_table(table, multiple=2)

    @property
    def aspect_ratios(self) -> tuple[str, ...]:
        return ASPECT_RATIOS


def _check_size_table(table: dict[str, tuple[int, int]], multiple: int) -> dict[str, tuple[int, int]]:
    if missing := [ratio for ratio in ASPECT_RATIOS if ratio not in table]:
        raise ValueError(f"missing aspect ratios {missing}")
    for ratio, (width, height) in table.items():
        if width % multiple or height % multiple:
            raise ValueError(f"{ratio} size {width}x{height} must be multiples of {multiple}")
        # The orientation must match the ratio; exact proportions are not required because the
        # model sizes are rounded to what the models render well.
        shape_ok = {"16:9": width > height, "9:16": height > width, "1:1": width == height}[ratio]
        if not shape_ok:
            raise ValueError(f"{ratio} size {width}x{height} has the wrong orientation")
    return table


def preset_files() -> dict[str, Path]:
    """Preset name -> file: the shipped presets, then any in ``$RENDERFARM_PRESETS_PATH``
    (directories separated by ``:``), where an operator's file of the same name wins."""
    directories = [PRESETS_DIR] + [Path(part) for part in
                                   os.environ.get(PRESETS_PATH_ENV, "").split(os.pathsep) if part]
    files: dict[str, Path] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.yaml")):
            files[path.stem] = path
    return files


def list_presets() -> list[str]:
    """Names of the available presets, sorted."""
    return sorted(preset_files())


def get_preset(name: str) -> RenderPreset:
    """The validated preset ``name``; ``UnknownPreset`` lists the valid names."""
    files = preset_files()
    if name not in files:
        raise UnknownPreset(name, sorted(files))
    return load_preset_file(files[name])


@cache
def load_preset_file(path: Path) -> RenderPreset:
    """Parse and validate one preset file; errors name the file and the offending fields."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PresetError(f"preset {path.name}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise PresetError(f"preset {path.name}: expected a mapping at the top level")
    try:
        preset = RenderPreset.model_validate(data)
    except ValidationError as exc:
        raise PresetError(f"preset {path.name}: {_summarise(exc)}") from None
    if preset.name != path.stem:
        raise PresetError(f"preset {path.name}: name {preset.name!r} must match the file name {path.stem!r}")
    return preset


def _summarise(exc: ValidationError) -> str:
    # One line per problem, "dotted.location: message", without pydantic's URLs and input dumps.
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}")
    return "; ".join(problems)


def default_preset_name() -> str:
    """``$RENDERFARM_DEFAULT_PRESET`` if set, else the GPU preset with CUDA and ``tiny`` without."""
    override = os.environ.get(DEFAULT_PRESET_ENV, "").strip()
    if override:
        if override not in list_presets():
            raise UnknownPreset(override, list_presets())
        return override
    import torch  # only here: the rest of this module must stay importable without torch cost

    return GPU_PRESET if torch.cuda.is_available() else TINY_PRESET


def apply_prompt_template(preset: RenderPreset, prompt: str, style: str | None = None) -> str:
    """The image prompt for a scene: the preset's template filled with ``prompt`` and ``style``.

    Without a style, the ``{style}`` slot and the separators around it disappear, so
    ``"{prompt}, {style}, product photo"`` gives ``"a red car, product photo"``.
    """
    text = preset.image.prompt_template.format(prompt=prompt.strip(), style=(style or "").strip())
    text = re.sub(r"\s*,(\s*,)+", ",", text)  # ", ," left by an empty slot
    text = re.sub(r"\s{2,}", " ", text)
    return text.strip(" ,")
