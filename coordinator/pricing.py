"""Prices: the quote a job gets before it runs (from the preset's estimated GPU-seconds) and
the actual cost after (from the seconds the renders really used). One set of rates for both."""

from __future__ import annotations

from datetime import datetime, time, timezone

from coordinator.settings import Settings

BREAKDOWN_KEYS = ("storyboard_generation", "image_generation", "video_rendering")


def end_of_utc_day(now: datetime | None = None) -> str:
    """Quotes hold until 23:59:59.000 UTC of the day they were made (spec 001)."""
    now = now or datetime.now(timezone.utc)
    end = datetime.combine(now.astimezone(timezone.utc).date(), time(23, 59, 59), timezone.utc)
    return end.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def llm_cost(settings: Settings, tokens: int) -> float:
    return tokens / 1000.0 * settings.price_llm_per_1k_tokens


def image_cost(settings: Settings, gpu_seconds: float) -> float:
    return gpu_seconds * settings.price_image_per_gpu_second


def clip_cost(settings: Settings, gpu_seconds: float) -> float:
    return gpu_seconds * settings.price_clip_per_gpu_second


def audio_cost(settings: Settings, gpu_seconds: float) -> float:
    """Speaking a line or composing music: the audio models share the renderers' GPUs, at the
    image rate."""
    return gpu_seconds * settings.price_image_per_gpu_second


def composite_cost(settings: Settings, seconds: float) -> float:
    return seconds * settings.price_composite_per_second


def quote(settings: Settings, *, scene_count: int, image_seconds_per_scene: float,
          clip_seconds_per_scene: float, uses_llm: bool, voice_seconds_per_scene: float = 0.0,
          music_seconds: float = 0.0) -> dict:
    """The dry-run body: ``estimatedCost``, ``currency``, ``breakdown``, ``validUntil``. The
    spec's three breakdown keys stay: the voice-over and music are part of rendering the video
    (the spec's "rendering: combining audio and visuals")."""
    breakdown = {
        "storyboard_generation": llm_cost(settings, settings.price_llm_estimated_tokens) if uses_llm else 0.0,
        "image_generation": image_cost(settings, scene_count * image_seconds_per_scene),
        "video_rendering": clip_cost(settings, scene_count * clip_seconds_per_scene)
        + composite_cost(settings, scene_count * settings.estimated_composite_seconds_per_scene)
        + audio_cost(settings, scene_count * voice_seconds_per_scene + music_seconds),
    }
    breakdown = {key: round(value, 6) for key, value in breakdown.items()}
    return {
        "estimatedCost": round(sum(breakdown.values()), 6),
        "currency": settings.price_currency,
        "breakdown": breakdown,
        "validUntil": end_of_utc_day(),
    }
