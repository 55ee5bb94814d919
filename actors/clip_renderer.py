"""The clip renderer: a Serve deployment holding the image-to-video pipelines of a few presets
(``actors.model_shelf``: Serve routes each preset to a replica holding it). It animates a scene
image and returns the clip as an H.264 MP4."""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from ray import serve
from ray.util import metrics

from actors.compositor import encode_frames_to_mp4
from actors.messages import ClipRequest, ClipResult
from actors.model_shelf import ModelShelf
from actors.render_queue import RenderQueue
from actors.placement import MODELS_PER_REPLICA
from actors.render_sharing import SharedRenders
from models.pipelines import ClipModel, load_clip_model
from models.presets import RenderPreset, default_preset_name, get_preset

log = logging.getLogger(__name__)

ENCODE_TIMEOUT_S = 120


@serve.deployment(name="ClipRenderer", max_ongoing_requests=8, health_check_period_s=5)
class ClipRenderer:
    async def __init__(self, models_dir: str, preload: list[str] | None = None,
                       max_models: int = MODELS_PER_REPLICA["local"]["ClipRenderer"]):
        """Loads the default preset's pipeline (or the first of ``preload``, then the rest, up
        to ``max_models``) and renders once with it before taking traffic: Serve counts the
        replica as started, and healthy, only after that."""
        self.models = ModelShelf[ClipModel](load_clip_model, _warm_up, Path(models_dir), "clip",
                                            max_models)
        # A job actor's next incarnation re-sends its renders: they are adopted, not redone.
        self._shared = SharedRenders(keep=16)
        # The one pipeline renders one clip at a time; waiting clips are admitted by priority
        # and per-user round robin.
        self._queue_depth = metrics.Gauge(
            "renderfarm_renderer_queue_depth", "Requests waiting for a renderer's pipeline",
            tag_keys=("preset", "kind"))
        self._pipeline_turn = RenderQueue(slots=1, on_depth=lambda preset, waiting:
                                          self._queue_depth.set(waiting, tags={"preset": preset,
                                                                               "kind": "clip"}))
        self._clips_rendered = metrics.Counter(
            "renderfarm_clips_rendered", "Scene clips rendered", tag_keys=("preset",))
        self._render_seconds = metrics.Histogram(
            "renderfarm_clip_seconds", "Diffusion time of one clip",
            boundaries=[0.5, 1, 2, 5, 10, 30, 60, 120, 300], tag_keys=("preset",))
        names = preload or [default_preset_name()]
        await self.models.warm_up(names[0])
        for name in names[1:]:
            async with self.models.use(name):
                pass

    async def render(self, request: ClipRequest) -> ClipResult:
        """Animate one scene image into a clip of the preset's frame count and fps; a request
        equal to one in flight or just rendered is answered from it (``SharedRenders``)."""
        return await self._shared.run(request, lambda: self._render(request))

    def model_state(self) -> dict[str, Any]:
        """This replica's presets: loaded (least recently used first), loading, load and
        eviction counts, and recent load/render events in order (``ModelShelf.state``)."""
        return {"replica": serve.get_replica_context().replica_tag, **self.models.state()}

    def queue_state(self) -> dict[str, Any]:
        """The admission queue: slots, busy, waiting, and recent events labelled by seed."""
        return self._pipeline_turn.state()

    def reconfigure(self, user_config: dict) -> None:
        """The priority-aging knob from the Serve config's ``user_config``."""
        if "priority_aging_s" in user_config:
            self._pipeline_turn.configure(aging_s=float(user_config["priority_aging_s"]))

    def recent_renders_by_seed(self) -> dict[int, int]:
        """How many times each recent request was rendered on this replica, by seed."""
        return dict(self._shared.renders_by_seed)

    def recent_arrivals_by_seed(self) -> dict[int, float]:
        """When each recent request first reached this replica (epoch seconds), by seed."""
        return dict(self._shared.arrivals_by_seed)

    async def _render(self, request: ClipRequest) -> ClipResult:
        preset = get_preset(request.preset)
        image = Image.open(io.BytesIO(request.image_png)).convert("RGB")
        # The model is loaded (or found) before the clip queues for the pipeline, so a load
        # holds up only the clips of its own preset.
        async with self.models.use(request.preset) as model:
            # Clips queue for the one pipeline here, so the clock starts once it is this
            # clip's turn: the ledger (and the bill) counts diffusion time, not waiting.
            async with self._pipeline_turn.turn(request.priority, request.owner,
                                                label=request.seed, group=request.preset):
                self.models.note("render_started", request.preset)
                started = time.perf_counter()
                frames = await asyncio.to_thread(model.render, image, request.seed,
                                                 request.width, request.height, None,
                                                 request.prompt)
                elapsed = time.perf_counter() - started
                self.models.note("rendered", request.preset)
        self._render_seconds.observe(elapsed, tags={"preset": request.preset})
        self._clips_rendered.inc(tags={"preset": request.preset})
        mp4 = await asyncio.to_thread(_encode, frames, preset.clip.fps)
        return ClipResult(mp4=mp4, seconds=elapsed, frames=len(frames), fps=preset.clip.fps)

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("the default clip model is not loaded and warmed up yet")


def _warm_up(model: ClipModel, preset: RenderPreset) -> None:
    """One clip of the preset's frame count at its square size, from a blank image: the first
    real clip then pays no one-off costs (CUDA kernel selection, lazily built tables)."""
    width, height = preset.clip_size["1:1"]
    model.render(Image.new("RGB", (width, height)), 0, width, height, None, "warm-up")


def _encode(frames: list[Image.Image], fps: int) -> bytes:
    with tempfile.TemporaryDirectory(prefix="clip-") as workdir:
        path = Path(workdir) / "clip.mp4"
        encode_frames_to_mp4(frames, fps, path, timeout_s=ENCODE_TIMEOUT_S)
        return path.read_bytes()
