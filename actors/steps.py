"""The job's side effects as small step functions: build the planning brief, name artifacts,
call a renderer (riding out replica deaths), composite. Each is idempotent: artifacts are
keyed by job, scene and version, so doing a step twice overwrites the same object."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from typing import Any, Callable, TypeVar

import ray.exceptions
from PIL import Image, ImageOps
from ray.serve import exceptions as serve_exceptions

from actors.capacity import CHECK_AFTER_S, CapacityProblem, CapacityWait
from coordinator.db.models import Job
from coordinator.media import ImageLimits, ImageRejected, open_checked_image
from coordinator.planner import PlanningBrief, negative_prompt_terms
from coordinator.schemas.jobs import CTA_CARD_SECONDS
from coordinator.settings import get_settings
from coordinator.storage import ObjectStore
from models.out_of_memory import GpuOutOfMemory
from models.presets import RenderPreset

log = logging.getLogger(__name__)

T = TypeVar("T")

RENDER_ATTEMPTS = 5
# Failures of the machinery (a replica or node died, Serve shed load), not of the request.
_RETRYABLE = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
              ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
              serve_exceptions.BackPressureError, serve_exceptions.DeploymentUnavailableError)
_RETRYABLE_NAMES = {"ReplicaUnavailableError", "ActorUnavailableError", "ActorDiedError"}


class JobEnded(Exception):
    """The job reached a final state behind the actor's back (a cancel): stop quietly."""


class StepFailed(Exception):
    """A step failed in a way a person must hear about; ``code`` is machine-readable."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


# ---- names --------------------------------------------------------------------------------

def scene_image_key(job_id: str, scene_id: str, version: int) -> str:
    return f"jobs/{job_id}/scenes/{scene_id}/image-v{version}.png"


def scene_clip_key(job_id: str, scene_id: str, version: int) -> str:
    return f"jobs/{job_id}/scenes/{scene_id}/clip-v{version}.mp4"


def video_key(job_id: str, revision: int = 0) -> str:
    """Each revision of a completed job is delivered under a name of its own, so the video it
    replaces stays served (and intact) until the new one lands."""
    return f"jobs/{job_id}/video{_revision_suffix(revision)}.mp4"


def thumbnail_key(job_id: str, revision: int = 0) -> str:
    return f"jobs/{job_id}/thumbnail{_revision_suffix(revision)}.jpg"


def _revision_suffix(revision: int) -> str:
    return f"-r{revision}" if revision else ""


def scene_seed(job_seed: int, scene_id: str, version: int) -> int:
    """Deterministic per (job seed, scene, version): a re-render of the same version gives the
    same image; a regeneration (new version) gives a new one."""
    digest = hashlib.sha256(f"{job_seed}:{scene_id}:{version}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# ---- sound --------------------------------------------------------------------------------

# A scene lasts at least its spoken line plus this pause, so a line never runs into the next.
VOICE_PAD_S = 0.4


def voice_enabled(job: Job) -> bool:
    """Whether the job has a voice-over (``advanced.voiceOver``, settled at creation)."""
    return bool((job.advanced or {}).get("voiceOver"))


def music_source(job: Job) -> str:
    """"generated", "asset" or "none" (``advanced.music``, settled at creation)."""
    return (job.advanced or {}).get("music") or "none"


def voice_text_hash(text: str, language: str, voice: str | None) -> str:
    """What a spoken line depends on; a scene whose hash is unchanged is never spoken again."""
    return hashlib.sha256(f"{language}\x00{voice or ''}\x00{text}".encode()).hexdigest()


def scene_voice_key(job_id: str, scene_id: str, version: int, text_hash: str) -> str:
    return f"jobs/{job_id}/scenes/{scene_id}/voice-v{version}-{text_hash[:16]}.wav"


def music_key(job_id: str, source: str) -> str:
    return f"jobs/{job_id}/music-{source}"


def voice_seed(job_seed: int, scene_id: str, text_hash: str) -> int:
    """The same line of the same scene is always spoken the same way."""
    digest = hashlib.sha256(f"{job_seed}:{scene_id}:{text_hash}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def spoken_scene_seconds(duration_s: float, voice_duration_s: float | None) -> float:
    """A scene's length on the timeline: as planned, or its spoken line plus a pad if longer."""
    if voice_duration_s is None:
        return duration_s
    return max(duration_s, round(voice_duration_s + VOICE_PAD_S, 3))


def music_prompt(job: Job) -> str:
    """The music model's prompt, from the brief's mood (tone, style); never reaches ffmpeg."""
    direction = (job.brief or {}).get("creative", {}).get("direction", {})
    mood = ", ".join(part for part in (direction.get("tone"), direction.get("style")) if part)
    return f"{mood + ' ' if mood else ''}instrumental background music for a video advert"[:500]


# ---- the brief ----------------------------------------------------------------------------

def planning_brief(job: Job) -> PlanningBrief:
    """What the planner needs, from the request and brand context stored on the job."""
    brief: dict[str, Any] = job.brief or {}
    basics = brief.get("adBasics", {})
    direction = brief.get("creative", {}).get("direction", {})
    brand = brief.get("brand") or {}
    advanced = job.advanced or {}
    return PlanningBrief(
        product=basics.get("product", ""),
        target_audience=basics.get("targetAudience", ""),
        key_message=basics.get("keyMessage", ""),
        call_to_action=basics.get("callToAction", ""),
        style=direction.get("style", ""),
        tone=direction.get("tone") or None,
        visual_elements=direction.get("visualElements") or [],
        brand_colors=brand.get("colors") or [],
        brand_tone=brand.get("tone"),
        brand_restrictions=brand.get("restrictions") or [],
        campaign_brief=brief.get("campaignBrief"),
        scene_count=int(advanced.get("sceneCount", 4)),
        # The call-to-action card closes the ad inside the requested duration.
        total_duration_s=float(advanced.get("durationSeconds", 14.0)) - CTA_CARD_SECONDS,
        aspect_ratio=job.aspect_ratio,
    )


def style_unless_present(style: str | None, prompt: str) -> str | None:
    """The style for the preset's template, unless the planner already wrote it into the prompt."""
    return None if style and style.lower() in prompt.lower() else style


def negative_prompt(preset: RenderPreset, brief: PlanningBrief) -> str | None:
    """The brand's restrictions (things never to show), then the preset's negative prompt. The
    restrictions go first: a prompt too long for its encoder loses phrases from the end."""
    parts = [part for part in (negative_prompt_terms(brief), preset.image.negative_prompt) if part]
    return ", ".join(parts) or None


def product_image_png(objects: ObjectStore, key: str, width: int, height: int,
                      limits: ImageLimits | None = None) -> bytes:
    """The client's product photo, cropped to fill the scene's frame, as PNG.

    Decoding is bounded: the header is checked against the image limits (``limits``, else the
    process's settings) before any pixel is decoded, a JPEG is decoded at the smallest DCT
    scale that still covers the frame, and other formats are shrunk right after decoding, so
    the copies that follow are frame-sized. An image over the limits fails the step."""
    limits = limits or ImageLimits.from_settings(get_settings())
    cover = max(width, height)  # enough for either orientation the EXIF tag may ask for
    try:
        with open_checked_image(objects.get_bytes(key), limits) as photo:
            photo.draft("RGB", (cover, cover))  # JPEG only; a no-op elsewhere
            # The decode (at most ``limits.max_pixels``); palette and alpha images become RGB
            # first, as averaging palette indices or unpremultiplied alpha would be wrong.
            image = photo if photo.mode in ("RGB", "L") else photo.convert("RGB")
            factor = min(image.width, image.height) // cover
            image = image.reduce(factor) if factor >= 2 else image.copy()
    except ImageRejected as exc:
        raise StepFailed(f"The product image cannot be used: {exc.message}", exc.code) from None
    framed = ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (width, height),
                          method=Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    framed.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- calling renderers --------------------------------------------------------------------

def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _RETRYABLE) or type(exc).__name__ in _RETRYABLE_NAMES


async def call_renderer(call: Callable[[], Any], what: str,
                        attempts: int = RENDER_ATTEMPTS, timeout_s: float = 900.0,
                        capacity: Callable[[], CapacityWait] | None = None) -> Any:
    """Awaits a renderer call (a ``DeploymentResponse``), retrying when the replica serving it
    died (Serve restarts it or routes to another). A failure of the request itself is raised
    as ``StepFailed``. When the caller is cancelled or the call times out, the request is
    cancelled on the replica too, so no GPU keeps working for a job that stopped waiting.

    ``timeout_s`` counts from when a replica took the request: time queued for a worker is
    governed by ``capacity`` (see ``actors.capacity``), not by the render time limit."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        response = call()
        try:
            await _assigned(response, capacity() if capacity else None)
            return await asyncio.wait_for(_result(response), timeout=timeout_s)
        except asyncio.TimeoutError:
            response.cancel()
            raise StepFailed(f"{what} took longer than {timeout_s:.0f} s", "render_timeout") from None
        except CapacityProblem as problem:
            response.cancel()
            raise StepFailed(problem.message, problem.code) from None
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as exc:  # sorted below: retry the machinery's failures only
            if (out_of_memory := _out_of_memory(exc)) is not None:
                # The renderer already retried smaller; the message names the preset options.
                log.warning("%s failed: %s", what, out_of_memory.message)
                raise StepFailed(f"{what} failed: {out_of_memory.message}",
                                 out_of_memory.code) from exc
            if not is_retryable(exc) or attempt == attempts:
                log.warning("%s failed: %r", what, exc)
                raise StepFailed(f"{what} failed: {_reason(exc)}", "render_failed") from exc
            log.info("%s: renderer unavailable (%s); retry %d/%d", what, type(exc).__name__,
                     attempt, attempts - 1)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


async def _assigned(response: Any, capacity: CapacityWait | None) -> None:
    """Returns once a replica has taken the request. ``_to_object_ref`` (a Serve developer
    API) resolves exactly then; only a request still waiting after ``CHECK_AFTER_S`` has its
    capacity looked at, so a request taken at once costs no extra call."""
    assignment = asyncio.ensure_future(response._to_object_ref())
    try:
        while True:
            done, _ = await asyncio.wait({assignment}, timeout=CHECK_AFTER_S)
            if done:
                assignment.result()  # raises what the assignment raised (e.g. no replica)
                return
            if capacity is not None:
                await capacity.check()
    finally:
        if not assignment.done():
            assignment.cancel()


async def _result(response: Any) -> Any:
    return await response


def _out_of_memory(exc: BaseException) -> GpuOutOfMemory | None:
    """The renderer's out-of-memory error, as raised or as Ray wrapped it."""
    # Ray's wrapper is an instance of the cause's class too, but only the cause holds its fields.
    for candidate in (getattr(exc, "cause", None), exc):
        if isinstance(candidate, GpuOutOfMemory):
            return candidate
    return None


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1][:300] if text else type(cause).__name__
