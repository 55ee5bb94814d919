"""Loading a preset's models and calling them: the only place renderers' work meets diffusers.

``load_image_model`` and ``load_clip_model`` turn a preset's ``image``/``clip`` section into a
loaded pipeline on the chosen device, and wrap it in an object with one ``render`` call that
takes plain prompts, seeds and sizes and returns PIL images. Renderers depend on that call
only, so swapping a model family is a preset change, not a renderer change.

Reproducibility: every output starts from noise drawn from its own CPU ``torch.Generator``
seeded from the caller's seed, so the same prompt, seed, preset and size give the same image,
bit for bit on one machine for the same call. An image re-rendered alone after being rendered
in a batch starts from the same noise, but batched kernels round differently: on CPU a few
pixel values may move by one level (of 255); GPUs can differ a little more.
"""

from __future__ import annotations

import inspect
import logging
import threading
from pathlib import Path
from typing import Any

import diffusers
import PIL.Image
import PIL.ImageOps
import torch
import transformers
from diffusers import AutoPipelineForImage2Image, DiffusionPipeline
from diffusers.utils import deprecation_utils

from models import tiny
from models.device import choose_device, choose_dtype
from models.out_of_memory import GpuOutOfMemory, out_of_memory_message
from models.presets import TINY_MODEL, ClipSpec, ImageSpec, PresetError, RenderPreset, apply_prompt_template
from models.prompts import PromptFitter

__all__ = [
    "ClipModel",
    "GpuOutOfMemory",
    "ImageModel",
    "apply_prompt_template",
    "check_preset",
    "load_clip_model",
    "load_image_model",
]

log = logging.getLogger(__name__)

# torch.Generator.manual_seed takes any 64-bit value; keep seeds non-negative and storable in
# a signed 64-bit database column.
MAX_SEED = 2**63 - 1
# Latent diffusion VAEs downscale by 8; other sizes fail deep inside the pipeline or get cropped.
SIZE_MULTIPLE = 8
# Hub weights are cached under models_dir so one volume holds every model a worker uses.
HUB_CACHE_SUBDIR = "hub"
# diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype`` (the old name now warns and
# goes away in 1.0); releases from before the rename, which the project's pins allow, only
# know ``torch_dtype``. The rename shipped with this deprecation message, so it marks them apart.
# Tokenizers without a length limit report a huge model_max_length.
_UNBOUNDED_LENGTH = 10**6
_DTYPE_OPTION = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


class ImageModel:
    """A loaded text-to-image pipeline. Not for concurrent use from threads (calls serialise)."""

    def __init__(self, pipeline: DiffusionPipeline, spec: ImageSpec, device: str, dtype: torch.dtype,
                 preset: str = "") -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.preset = preset  # named in out-of-memory errors
        # Prompts longer than the text encoder reads are fitted to it, not cut off silently.
        self._prompts = _prompt_fitter(pipeline)
        # Scenes conditioned on a reference image denoise from it: the image-to-image pipeline
        # of the same family, built from the loaded components (no second copy of the weights).
        self._from_reference = _image_to_image(pipeline) if spec.reference == "img2img" else None
        # A pipeline's scheduler keeps per-call state, so two threads must not share a call.
        self._lock = threading.Lock()

    def render(
        self,
        prompts: list[str],
        seeds: list[int],
        width: int,
        height: int,
        negative_prompt: str | None = None,
        reference: PIL.Image.Image | None = None,
    ) -> list[PIL.Image.Image]:
        """One image per prompt, rendered in one batched pipeline call.

        With a ``reference`` (a product or character the images must keep), every image of
        the call is conditioned on it as the preset says (``image.reference``: img2img starts
        denoising from the reference, cropped to width x height, at ``reference_strength``);
        a preset without reference support raises ``ValueError``.

        Prompts are used as given (apply ``apply_prompt_template`` first), except that one
        longer than the text encoder reads loses its last phrases (``models.prompts``, logged).
        ``negative_prompt`` defaults to the preset's; it only matters when the preset uses
        classifier-free guidance. A batch that runs out of GPU memory is retried once an image
        at a time; if that fails too, ``GpuOutOfMemory`` says which preset options would help.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        if not prompts:
            return []
        _check_size(width, height)
        negative = self.spec.negative_prompt if negative_prompt is None else negative_prompt
        if reference is not None:
            if self._from_reference is None:
                raise ValueError(f"preset {self.preset or '?'} does not condition images on a "
                                 "reference (image.reference is none)")
            reference = _framed(reference, width, height)
        prompts = [self._prompts.fit(prompt) for prompt in prompts]
        negative = self._prompts.fit(negative, "negative prompt") if negative else negative
        with self._lock, torch.inference_mode():
            try:
                images = self._denoise(prompts, seeds, width, height, negative, reference)
            except torch.cuda.OutOfMemoryError as exc:
                images = self._retry_one_at_a_time(prompts, seeds, width, height, negative,
                                                   reference, exc)
        return [image.convert("RGB") for image in images]

    def _denoise(self, prompts: list[str], seeds: list[int], width: int, height: int,
                 negative: str | None, reference: PIL.Image.Image | None = None
                 ) -> list[PIL.Image.Image]:
        pipeline = self.pipeline
        kwargs: dict[str, Any] = {
            "prompt": list(prompts),
            "num_inference_steps": self.spec.steps,
            "guidance_scale": self.spec.guidance_scale,
            # One generator per prompt: each image's noise depends on its own seed only,
            # not on its position in the batch or on the other prompts.
            "generator": [_generator(seed) for seed in seeds],
            "output_type": "pil",
        }
        if negative:
            kwargs["negative_prompt"] = [negative] * len(prompts)
        if reference is None:
            kwargs.update(width=width, height=height)
        else:
            # The output takes the reference's size, already framed to width x height.
            pipeline = self._from_reference
            kwargs.update(image=[reference] * len(prompts), strength=self.spec.reference_strength)
        return pipeline(**kwargs).images

    def _retry_one_at_a_time(self, prompts: list[str], seeds: list[int], width: int, height: int,
                             negative: str | None, reference: PIL.Image.Image | None,
                             exc: BaseException) -> list[PIL.Image.Image]:
        """After the GPU ran out of memory: once more, one image per call (each from its own
        seed, as in the batch), then give up with an error an operator can act on."""
        _release_cuda_memory()
        if len(prompts) == 1:
            raise GpuOutOfMemory(out_of_memory_message(
                self.preset, "image", self.spec, f"one {width}x{height} image")) from exc
        log.warning("a batch of %d images ran out of GPU memory (preset %s); retrying one at a time",
                    len(prompts), self.preset)
        try:
            return [image for prompt, seed in zip(prompts, seeds)
                    for image in self._denoise([prompt], [seed], width, height, negative, reference)]
        except torch.cuda.OutOfMemoryError as again:
            _release_cuda_memory()
            raise GpuOutOfMemory(out_of_memory_message(
                self.preset, "image", self.spec,
                f"a batch of {len(prompts)} {width}x{height} images, then one at a time")) from again


class ClipModel:
    """A loaded image-to-video pipeline. Not for concurrent use from threads (calls serialise)."""

    def __init__(
        self,
        pipeline: DiffusionPipeline,
        spec: ClipSpec,
        device: str,
        dtype: torch.dtype,
        preset: str = "",
    ) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.preset = preset  # named in out-of-memory errors
        accepted = _call_parameters(pipeline)
        self._knobs = _clip_knobs(spec, accepted)
        self._takes_prompt = "prompt" in accepted
        # T5 encoders read as many tokens as the call's max_sequence_length (LTX: 128).
        self._prompts = _prompt_fitter(pipeline, _call_default(pipeline, "max_sequence_length"))
        # Video VAEs that compress time too (LTX: 8x in time, 32x in space) only make clips of
        # 8k+1 frames at multiples of 32 pixels; other counts come out shorter without a word.
        self.size_multiple = _pixel_multiple(pipeline)
        self.frame_step = getattr(pipeline, "vae_temporal_compression_ratio", 1)
        self._lock = threading.Lock()

    def render(
        self,
        image: PIL.Image.Image,
        seed: int,
        width: int,
        height: int,
        num_frames: int | None = None,
        prompt: str | None = None,
    ) -> list[PIL.Image.Image]:
        """The clip's frames, animating ``image`` (resized by the pipeline to width x height).

        ``num_frames`` defaults to the preset's. ``prompt`` is used by prompt-aware models
        (fitted to their text encoder, see ``models.prompts``) and ignored by image-only ones
        such as Stable Video Diffusion. A clip that runs out of GPU memory is retried once with
        a smaller VAE decode; if that fails too, ``GpuOutOfMemory`` says what would help.
        """
        _check_size(width, height, self.size_multiple)
        frame_count = self.spec.num_frames if num_frames is None else num_frames
        if frame_count < 1:
            raise ValueError(f"num_frames must be at least 1, got {frame_count}")
        if (frame_count - 1) % self.frame_step:
            raise ValueError(f"num_frames must be {self.frame_step}k+1 for {type(self.pipeline).__name__}, "
                             f"got {frame_count}")
        kwargs: dict[str, Any] = {
            "image": image.convert("RGB"),
            "width": width,
            "height": height,
            "num_frames": frame_count,
            "num_inference_steps": self.spec.steps,
            "generator": _generator(seed),
            "output_type": "pil",
            **self._knobs,
        }
        if self._takes_prompt:
            kwargs["prompt"] = self._prompts.fit(prompt or "")
            if kwargs.get("negative_prompt"):
                kwargs["negative_prompt"] = self._prompts.fit(kwargs["negative_prompt"], "negative prompt")
        if "decode_chunk_size" in kwargs:
            # Decoding more frames than the clip has at once buys nothing.
            kwargs["decode_chunk_size"] = min(kwargs["decode_chunk_size"], frame_count)
        with self._lock, torch.inference_mode():
            try:
                video = self.pipeline(**kwargs).frames[0]
            except torch.cuda.OutOfMemoryError as exc:
                video = self._retry_smaller(kwargs, seed, exc)
        return [frame.convert("RGB") for frame in video]

    def _retry_smaller(self, kwargs: dict[str, Any], seed: int, exc: BaseException) -> list[PIL.Image.Image]:
        """After the GPU ran out of memory: once more decoding one frame at a time (or, for
        pipelines without a decode chunk size, with VAE tiling), then give up. SVD's decoder
        smooths across the frames of a chunk, so such a clip is a little less smooth."""
        _release_cuda_memory()
        size = f"{kwargs['num_frames']} frames at {kwargs['width']}x{kwargs['height']}"
        retry = {**kwargs, "generator": _generator(seed)}  # the same noise as the first try
        vae = getattr(self.pipeline, "vae", None)
        tiling = False
        if kwargs.get("decode_chunk_size", 1) > 1:
            retry["decode_chunk_size"] = 1
            smaller = f"decode_chunk_size 1 instead of {kwargs['decode_chunk_size']}"
        elif hasattr(vae, "use_tiling") and not vae.use_tiling:
            vae.enable_tiling()
            tiling = True
            smaller = "VAE tiling"
        else:
            raise GpuOutOfMemory(out_of_memory_message(self.preset, "clip", self.spec, size)) from exc
        log.warning("a clip (%s) ran out of GPU memory (preset %s); retrying with %s",
                    size, self.preset, smaller)
        try:
            return self.pipeline(**retry).frames[0]
        except torch.cuda.OutOfMemoryError as again:
            _release_cuda_memory()
            raise GpuOutOfMemory(out_of_memory_message(
                self.preset, "clip", self.spec, f"{size}, then with {smaller}")) from again
        finally:
            if tiling:
                vae.disable_tiling()


def load_image_model(preset: RenderPreset, models_dir: Path | str) -> ImageModel:
    """Load the preset's text-to-image model on the chosen device."""
    pipeline, device, dtype = _load(preset.image, "image", Path(models_dir))
    return ImageModel(pipeline, preset.image, device, dtype, preset=preset.name)


def load_clip_model(preset: RenderPreset, models_dir: Path | str) -> ClipModel:
    """Load the preset's image-to-video model on the chosen device."""
    pipeline, device, dtype = _load(preset.clip, "clip", Path(models_dir))
    model = ClipModel(pipeline, preset.clip, device, dtype, preset=preset.name)
    _check_clip_rules(preset, model)
    return model


def check_preset(preset: RenderPreset) -> None:
    """Raise ``PresetError`` for mistakes only diffusers can spot, without loading weights.

    The pipeline names must be diffusers pipeline classes, the tiny model must be paired with
    the class it is built as, and the clip settings must be ones the clip pipeline takes.
    """
    _pipeline_class(preset.image, "image")
    clip_class = _pipeline_class(preset.clip, "clip")
    if issubclass(clip_class, DiffusionPipeline):  # auto-pipelines pick their class at load time
        _clip_knobs(preset.clip, _call_parameters(clip_class))


def _load(
    spec: ImageSpec | ClipSpec, role: str, models_dir: Path
) -> tuple[DiffusionPipeline, str, torch.dtype]:
    pipeline_class = _pipeline_class(spec, role)
    device = choose_device()
    dtype = choose_dtype(device, spec.dtype)
    options: dict[str, Any] = {_DTYPE_OPTION: dtype}
    if spec.model == TINY_MODEL:
        ensure = tiny.ensure_tiny_image_pipeline if role == "image" else tiny.ensure_tiny_clip_pipeline
        source: str | Path = ensure(models_dir)
    else:
        # A hub id or a local directory; from_pretrained tells them apart. Downloads obey the
        # usual HF_HUB_OFFLINE switch.
        source = spec.model
        options["cache_dir"] = models_dir / HUB_CACHE_SUBDIR
        if spec.variant:
            options["variant"] = spec.variant
    # Workers log to files, where loading, saving and per-step bars are only noise. The switches
    # are process-wide, which suits a worker process.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    log.info("loading %s model %s (%s) on %s as %s", role, spec.model, spec.pipeline, device, dtype)
    pipeline = pipeline_class.from_pretrained(source, **options)
    _place(pipeline, spec, role, device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline, device, dtype


def _place(pipeline: DiffusionPipeline, spec: ImageSpec | ClipSpec, role: str, device: str) -> None:
    """Turns on the preset's memory options and puts the pipeline on ``device`` (or, with CPU
    offload, lets diffusers move each model there while it runs)."""
    if spec.attention_slicing:
        # Only some denoisers can slice (SD and SDXL UNets; not SVD's or LTX's): say so at load
        # rather than run a preset that only looks leaner.
        if not any(hasattr(component, "set_attention_slice") for component in pipeline.components.values()):
            raise PresetError(f"{role}.attention_slicing: {spec.pipeline} cannot slice attention; "
                              "turn it off")
        pipeline.enable_attention_slicing()
    vae = getattr(pipeline, "vae", None)
    for option, flag, method in (("vae_slicing", "use_slicing", "enable_slicing"),
                                 ("vae_tiling", "use_tiling", "enable_tiling")):
        if getattr(spec, option):
            # VAEs that slice or tile keep a flag for it; others (SVD's) have only the method,
            # which raises. SVD decodes in chunks of decode_chunk_size frames instead.
            if not hasattr(vae, flag):
                raise PresetError(f"{role}.{option}: the VAE of {spec.pipeline} "
                                  f"({type(vae).__name__}) cannot do this; turn it off"
                                  + (" and lower decode_chunk_size" if role == "clip" else ""))
            getattr(vae, method)()
    if spec.cpu_offload != "none":
        if torch.device(device).type == "cpu":
            # Offloading moves models between CPU and an accelerator; on a CPU there is none.
            log.info("%s.cpu_offload %r skipped: %s runs on the CPU, and offloading needs an "
                     "accelerator", role, spec.cpu_offload, spec.model)
        else:
            offload = (pipeline.enable_model_cpu_offload if spec.cpu_offload == "model"
                       else pipeline.enable_sequential_cpu_offload)
            offload(device=device)
            return
    pipeline.to(device)


def _prompt_fitter(pipeline: DiffusionPipeline, sequence_length: int | None = None) -> PromptFitter:
    """A fitter for what the pipeline's text encoder(s) read: the tokenizers' model length
    (CLIP: 77), or the call's ``max_sequence_length`` where that is shorter (T5)."""
    names = [name for name in ("tokenizer", "tokenizer_2", "tokenizer_3") if getattr(pipeline, name, None)]
    tokenizers = [getattr(pipeline, name) for name in names]
    limits = [t.model_max_length for t in tokenizers if 0 < t.model_max_length < _UNBOUNDED_LENGTH]
    if sequence_length:
        limits.append(sequence_length)
    if not tokenizers or not limits:
        return PromptFitter([], _UNBOUNDED_LENGTH, "no text encoder")
    encoders = [type(getattr(pipeline, name.replace("tokenizer", "text_encoder"), None)).__name__
                for name in names]
    return PromptFitter(tokenizers, min(limits), " and ".join(dict.fromkeys(encoders)))


def _image_to_image(pipeline: DiffusionPipeline) -> DiffusionPipeline:
    """The image-to-image pipeline of ``pipeline``'s family (SD, SDXL, ...) over the same
    loaded components; diffusers knows which class that is."""
    try:
        from_reference = AutoPipelineForImage2Image.from_pipe(pipeline)
    except ValueError as exc:  # a family with no image-to-image pipeline
        raise PresetError(f"image.reference img2img: {type(pipeline).__name__} has no "
                          f"image-to-image pipeline ({exc}); set image.reference: none") from None
    from_reference.set_progress_bar_config(disable=True)
    return from_reference


def _framed(reference: PIL.Image.Image, width: int, height: int) -> PIL.Image.Image:
    # Centre-cropped to fill the frame; a no-op when the job actor already framed it.
    reference = reference.convert("RGB")
    if reference.size == (width, height):
        return reference
    return PIL.ImageOps.fit(reference, (width, height), method=PIL.Image.Resampling.LANCZOS)


def _call_default(pipeline: DiffusionPipeline, name: str) -> Any:
    parameter = inspect.signature(pipeline.__call__).parameters.get(name)
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def _release_cuda_memory() -> None:
    # What the failed call allocated is garbage now; hand the cached blocks back before retrying.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pipeline_class(spec: ImageSpec | ClipSpec, role: str) -> type:
    candidate = getattr(diffusers, spec.pipeline, None)
    is_pipeline = isinstance(candidate, type) and (
        issubclass(candidate, DiffusionPipeline) or spec.pipeline.startswith("AutoPipeline")
    )
    if not is_pipeline:
        raise PresetError(f"{role}.pipeline {spec.pipeline!r} is not a diffusers pipeline class")
    if spec.model == TINY_MODEL:
        expected = tiny.TINY_IMAGE_PIPELINE if role == "image" else tiny.TINY_CLIP_PIPELINE
        if spec.pipeline != expected:
            raise PresetError(f"{role}.pipeline must be {expected} for the tiny model, not {spec.pipeline}")
    return candidate


def _call_parameters(pipeline: DiffusionPipeline | type) -> set[str]:
    return set(inspect.signature(pipeline.__call__).parameters)


def _clip_knobs(spec: ClipSpec, accepted: set[str]) -> dict[str, Any]:
    """The preset's optional clip settings as keyword arguments this pipeline accepts.

    A setting the pipeline has no parameter for is a preset mistake, reported at load time
    rather than ignored. The frame rate is the exception: it is also the output video's rate,
    so it is legitimately set for models that do not condition on it.
    """
    knobs: dict[str, Any] = {}
    for fps_name in ("fps", "frame_rate"):
        if fps_name in accepted:
            knobs[fps_name] = spec.fps
            break
    optional = {
        "motion_bucket_id": spec.motion_bucket_id,
        "noise_aug_strength": spec.noise_aug_strength,
        "decode_chunk_size": spec.decode_chunk_size,
        "min_guidance_scale": spec.min_guidance_scale,
        "max_guidance_scale": spec.max_guidance_scale,
        "guidance_scale": spec.guidance_scale,
        "negative_prompt": spec.negative_prompt,
    }
    unsupported = sorted(name for name, value in optional.items() if value is not None and name not in accepted)
    if unsupported:
        raise PresetError(f"clip.pipeline {spec.pipeline} does not take {', '.join(unsupported)}")
    knobs.update({name: value for name, value in optional.items() if value is not None})
    return knobs


def _generator(seed: int) -> torch.Generator:
    # CPU generators draw the same noise whatever device the model runs on, so a seed means
    # the same starting point on every worker.
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    return torch.Generator(device="cpu").manual_seed(seed)


def _check_size(width: int, height: int, multiple: int = SIZE_MULTIPLE) -> None:
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise ValueError(f"size {width}x{height} must be positive multiples of {multiple}")


def _pixel_multiple(pipeline: DiffusionPipeline) -> int:
    """The pixel multiple a pipeline's VAE needs (at least ``SIZE_MULTIPLE``)."""
    ratio = getattr(pipeline, "vae_spatial_compression_ratio", None) or getattr(pipeline, "vae_scale_factor", None)
    return max(SIZE_MULTIPLE, int(ratio or SIZE_MULTIPLE))


def _check_clip_rules(preset: RenderPreset, model: ClipModel) -> None:
    """Refuse, when the model loads, a preset whose clip sizes or frame count the loaded clip
    model cannot render as asked, rather than failing (or shortening clips) in a job."""
    problems = [f"clip_size {ratio} {width}x{height} is not a multiple of {model.size_multiple}"
                for ratio, (width, height) in preset.clip_size.items()
                if width % model.size_multiple or height % model.size_multiple]
    if (preset.clip.num_frames - 1) % model.frame_step:
        problems.append(f"clip.num_frames {preset.clip.num_frames} is not {model.frame_step}k+1")
    if problems:
        raise PresetError(f"preset {preset.name}: {preset.clip.pipeline} needs " + "; ".join(problems))
