"""The image renderer: a Serve deployment holding the text-to-image pipelines of a few presets
(``actors.model_shelf``: Serve routes each preset to a replica holding it), with concurrent
requests batched into one pipeline call per preset."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import PIL.Image
from ray import serve
from ray.util import metrics

from actors.messages import ImageRequest, ImageResult
from actors.model_shelf import ModelShelf
from actors.render_queue import RenderQueue
from actors.placement import MODELS_PER_REPLICA
from actors.render_sharing import SharedRenders
from models.pipelines import ImageModel, load_image_model
from models.presets import RenderPreset, default_preset_name

log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 4


@serve.deployment(name="ImageRenderer", max_ongoing_requests=32, health_check_period_s=5)
class ImageRenderer:
    async def __init__(self, models_dir: str, preload: list[str] | None = None,
                       max_models: int = MODELS_PER_REPLICA["local"]["ImageRenderer"]):
        """Loads the default preset's pipeline (or the first of ``preload``, then the rest, up
        to ``max_models``) and renders once with it before taking traffic: Serve counts the
        replica as started, and healthy, only after that."""
        self.models = ModelShelf[ImageModel](load_image_model, _warm_up, Path(models_dir),
                                             "image", max_models)
        # A job actor's next incarnation re-sends its renders: they are adopted, not redone.
        self._shared = SharedRenders(keep=64)
        # Admits one batch's worth of requests at a time, by priority and per-user round
        # robin, so the batch that forms next is made of the requests due first.
        self._queue_depth = metrics.Gauge(
            "renderfarm_renderer_queue_depth", "Requests waiting for a renderer's pipeline",
            tag_keys=("preset", "kind"))
        self._queue = RenderQueue(slots=MAX_BATCH_SIZE, on_depth=lambda preset, waiting:
                                  self._queue_depth.set(waiting, tags={"preset": preset,
                                                                       "kind": "image"}))
        self._images_rendered = metrics.Counter(
            "renderfarm_images_rendered", "Scene images rendered", tag_keys=("preset",))
        self._render_seconds = metrics.Histogram(
            "renderfarm_image_batch_seconds", "Wall time of one batched image render",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60], tag_keys=("preset",))
        # Decided here, where the renderer runs (CUDA or not), and told to the API on request.
        self._default_preset = default_preset_name()
        names = preload or [self._default_preset]
        await self.models.warm_up(names[0])
        for name in names[1:]:
            async with self.models.use(name):
                pass

    def default_preset(self) -> str:
        """The preset of jobs that name none: the GPU preset where CUDA is, else ``tiny``."""
        return self._default_preset

    async def render(self, request: ImageRequest) -> ImageResult:
        """One scene image. Concurrent calls are batched (see ``_render_batch``); a request
        equal to one in flight or just rendered is answered from it (``SharedRenders``)."""
        return await self._shared.run(request, lambda: self._render_loaded(request))

    def model_state(self) -> dict[str, Any]:
        """This replica's presets: loaded (least recently used first), loading, load and
        eviction counts, and recent load/render events in order (``ModelShelf.state``)."""
        return {"replica": serve.get_replica_context().replica_tag, **self.models.state()}

    def queue_state(self) -> dict[str, Any]:
        """The admission queue: slots, busy, waiting, and recent events labelled by seed."""
        return self._queue.state()

    def recent_renders_by_seed(self) -> dict[int, int]:
        """How many times each recent request was rendered on this replica, by seed."""
        return dict(self._shared.renders_by_seed)

    def recent_arrivals_by_seed(self) -> dict[int, float]:
        """When each recent request first reached this replica (epoch seconds), by seed."""
        return dict(self._shared.arrivals_by_seed)

    async def _render_loaded(self, request: ImageRequest) -> ImageResult:
        # The model is loaded (or found) before the request joins a batch, so a load holds up
        # only the requests for its own preset, never a batch of presets already loaded.
        async with self.models.use(request.preset) as model:
            async with self._queue.turn(request.priority, request.owner, label=request.seed,
                                        group=request.preset):
                return await self._render_batch(request, model)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=0.02)
    async def _render_batch(self, requests: list[ImageRequest],
                            models: list[ImageModel]) -> list[ImageResult]:
        results: list[ImageResult | None] = [None] * len(requests)
        # Serve splits batches by multiplexed model id; grouping by preset here as well keeps
        # a batch from callers that set none correct. One pipeline call per compatible group
        # (same model, size, negative prompt and reference image: a call conditions all its
        # images on one reference, or on none).
        groups: dict[tuple[str, int, int, str | None, str | None], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[(request.preset, request.width, request.height, request.negative_prompt,
                    _digest(request.reference_png))].append(index)
        for (preset, width, height, negative, _), indices in groups.items():
            model = models[indices[0]]
            # Decoded once per group, however many of its scenes share it.
            reference = _decoded(requests[indices[0]].reference_png)
            self.models.note("render_started", preset)
            started = time.perf_counter()
            # The pipeline call blocks for the whole denoising loop: keep it off the event loop
            # so health checks and new requests are still answered.
            images = await asyncio.to_thread(
                model.render, [requests[i].prompt for i in indices],
                [requests[i].seed for i in indices], width, height, negative, reference)
            elapsed = time.perf_counter() - started
            self._render_seconds.observe(elapsed, tags={"preset": preset})
            self._images_rendered.inc(len(indices), tags={"preset": preset})
            self.models.note("rendered", preset)
            for index, image in zip(indices, images):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                results[index] = ImageResult(png=buffer.getvalue(), seconds=elapsed / len(indices))
        return results  # type: ignore[return-value]

    def reconfigure(self, user_config: dict) -> None:
        """Batching and priority-aging knobs from the Serve config's ``user_config`` (no code
        change to tune)."""
        if "max_batch_size" in user_config:
            self._render_batch.set_max_batch_size(int(user_config["max_batch_size"]))
            self._queue.configure(slots=int(user_config["max_batch_size"]))
        if "priority_aging_s" in user_config:
            self._queue.configure(aging_s=float(user_config["priority_aging_s"]))
        if "batch_wait_timeout_s" in user_config:
            self._render_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("the default image model is not loaded and warmed up yet")


def _digest(png: bytes | None) -> str | None:
    return hashlib.sha256(png).hexdigest() if png is not None else None


def _decoded(png: bytes | None) -> PIL.Image.Image | None:
    # The job actor sends a PNG it framed itself from a checked asset (within the image limits).
    if png is None:
        return None
    with PIL.Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def _warm_up(model: ImageModel, preset: RenderPreset) -> None:
    """One render at the preset's square size: the first real batch then pays no one-off
    costs (CUDA kernel selection, lazily built scheduler tables)."""
    width, height = preset.image_size["1:1"]
    model.render(["warm-up"], [0], width, height)
