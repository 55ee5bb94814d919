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
