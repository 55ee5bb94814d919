"""The clip renderer: a Serve deployment holding an image-to-video pipeline per preset, loaded
once per replica. It animates a scene image and returns the clip as an H.264 MP4."""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import time
from pathlib import Path

from PIL import Image
from ray import serve
from ray.util import metrics

from actors.compositor import encode_frames_to_mp4
from actors.messages import ClipRequest, ClipResult
from actors.model_shelf import ModelShelf
from actors.render_sharing import SharedRenders
from models.pipelines import ClipModel, load_clip_model
from models.presets import default_preset_name, get_preset

log = logging.getLogger(__name__)

ENCODE_TIMEOUT_S = 120


@serve.deployment(name="ClipRenderer", max_ongoing_requests=8, health_check_period_s=5)
class ClipRenderer:
    def __init__(self, models_dir: str, preload: list[str] | None = None):
        """Loads the default preset's pipeline (and any in ``preload``) before taking traffic."""
        self.models = ModelShelf[ClipModel](load_clip_model, Path(models_dir), "clip")
        # A job actor's next incarnation re-sends its renders: they are adopted, not redone.
        self._shared = SharedRenders(keep=16)
        self._pipeline_turn = asyncio.Lock()
        self._clips_rendered = metrics.Counter(
            "renderfarm_clips_rendered", "Scene clips rendered", tag_keys=("preset",))
        self._render_seconds = metrics.Histogram(
            "renderfarm_clip_seconds", "Diffusion time of one clip",
            boundaries=[0.5, 1, 2, 5, 10, 30, 60, 120, 300], tag_keys=("preset",))
        for name in preload or [default_preset_name()]:
            self.models.load_now(name)

    async def render(self, request: ClipRequest) -> ClipResult:
        """Animate one scene image into a clip of the preset's frame count and fps; a request
        equal to one in flight or just rendered is answered from it (``SharedRenders``)."""
        return await self._shared.run(request, lambda: self._render(request))

    def recent_renders_by_seed(self) -> dict[int, int]:
        """How many times each recent request was rendered on this replica, by seed."""
        return dict(self._shared.renders_by_seed)

    async def _render(self, request: ClipRequest) -> ClipResult:
        preset = get_preset(request.preset)
        model = await self.models.get(request.preset)
        image = Image.open(io.BytesIO(request.image_png)).convert("RGB")
        # Clips queue for the one pipeline here, so the clock starts once it is this clip's
        # turn: the ledger (and the bill) counts diffusion time, not time spent waiting.
        async with self._pipeline_turn:
            started = time.perf_counter()
            frames = await asyncio.to_thread(model.render, image, request.seed, request.width,
                                             request.height, None, request.prompt)
            elapsed = time.perf_counter() - started
        self._render_seconds.observe(elapsed, tags={"preset": request.preset})
        self._clips_rendered.inc(tags={"preset": request.preset})
        mp4 = await asyncio.to_thread(_encode, frames, preset.clip.fps)
        return ClipResult(mp4=mp4, seconds=elapsed, frames=len(frames), fps=preset.clip.fps)

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("no clip model loaded")


def _encode(frames: list[Image.Image], fps: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="clip-") as workdir:
        path = Path(workdir) / "clip.mp4"
        encode_frames_to_mp4(frames, fps, path, timeout_s=ENCODE_TIMEOUT_S)
        return path.read_bytes()
