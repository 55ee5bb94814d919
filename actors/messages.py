"""What the job actor sends the renderers and gets back. Plain dataclasses: they cross process
boundaries through Ray's object store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageRequest:
    preset: str
    prompt: str  # the full prompt, preset template already applied
    seed: int
    width: int
    height: int
    negative_prompt: str | None = None  # None: the preset's own
    # A product or character reference (PNG) every scene image is conditioned on, if the job
    # chose one; how it conditions the image is the preset's call (models.pipelines).
    reference_png: bytes | None = None
    # Who asked and how urgently: the order a busy replica admits work in (actors.render_queue).
    priority: str = "normal"
    owner: str = ""


@dataclass(frozen=True)
class ImageResult:
    png: bytes
    seconds: float  # this image's share of the measured render time (batches are split evenly)


@dataclass(frozen=True)
class ClipRequest:
    preset: str
    image_png: bytes
    seed: int
    width: int
    height: int
    prompt: str = ""
    priority: str = "normal"  # as ImageRequest
    owner: str = ""


@dataclass(frozen=True)
class ClipResult:
    mp4: bytes
    seconds: float  # measured diffusion time (encoding excluded)
    frames: int
    fps: int


@dataclass(frozen=True)
class VoiceRequest:
    """One scene's line of voice-over, spoken by the preset's text-to-speech model."""

    preset: str
    text: str
    language: str  # e.g. "en"; the preset maps languages to models
    voice: str | None  # a voice the preset names for that language; None: its default
    seed: int
    priority: str = "normal"
    owner: str = ""


@dataclass(frozen=True)
class VoiceResult:
    wav: bytes  # mono 16-bit PCM WAV at the model's own sample rate
    seconds: float  # measured synthesis time (device time, for the cost ledger)
    duration_s: float  # how long the line lasts when spoken


@dataclass(frozen=True)
class MusicRequest:
    """A bed of background music for the whole ad, from the brief's mood."""

    preset: str
    prompt: str
    duration_s: float
    seed: int
    priority: str = "normal"
    owner: str = ""


@dataclass(frozen=True)
class MusicResult:
    wav: bytes  # 16-bit PCM WAV (mono or stereo) at the model's own sample rate
    seconds: float  # measured generation time
    duration_s: float
