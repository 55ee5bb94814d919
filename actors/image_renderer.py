"""The image renderer: a Serve deployment holding a text-to-image pipeline per preset, loaded
once per replica, with concurrent requests batched into one pipeline call."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections import defaultdict
from pathlib import Path

from ray import serve
from ray.util import metrics

from actors.messages import ImageRequest, ImageResult
from actors.model_shelf import ModelShelf
from actors.render_sharing import SharedRenders
from models.pipelines import ImageModel, load_image_model
from models.presets import default_preset_name

log = logging.getLogger(__name__)


@serve.deployment(name="ImageRenderer", max_ongoing_requests=32, health_check_period_s=5)
class ImageRenderer:
    def __init__(self, models_dir: str, preload: list[str] | None = None):
        """Loads the default preset's pipeline (and any in ``preload``) before taking traffic."""
        self.models = ModelShelf[ImageModel](load_image_model, Path(models_dir), "image")
        # A job actor's next incarnation re-sends its renders: they are adopted, not redone.
        self._shared = SharedRenders(keep=64)
        self._images_rendered = metrics.Counter(
            "renderfarm_images_rendered", "Scene images rendered", tag_keys=("preset",))
        self._render_seconds = metrics.Histogram(
            "renderfarm_image_batch_seconds", "Wall time of one batched image render",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60], tag_keys=("preset",))
        # Decided here, where the renderer runs (CUDA or not), and told to the API on request.
        self._default_preset = default_preset_name()
        for name in preload or [self._default_preset]:
            self.models.load_now(name)

    def default_preset(self) -> str:
        """The preset of jobs that name none: the GPU preset where CUDA is, else ``tiny``."""
        return self._default_preset

    async def render(self, request: ImageRequest) -> ImageResult:
        """One scene image. Concurrent calls are batched (see ``_render_batch``); a request
        equal to one in flight or just rendered is answered from it (``SharedRenders``)."""
        return await self._shared.run(request, lambda: self._render_batch(request))

    def recent_renders_by_seed(self) -> dict[int, int]:
        """How many times each recent request was rendered on this replica, by seed."""
        return dict(self._shared.renders_by_seed)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def _render_batch(self, requests: list[ImageRequest]) -> list[ImageResult]:
        results: list[ImageResult | None] = [None] * len(requests)
        # One pipeline call per compatible group (same model, size and negative prompt).
        groups: dict[tuple[str, int, int, str | None], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[(request.preset, request.width, request.height,
                    request.negative_prompt)].append(index)
        for (preset, width, height, negative), indices in groups.items():
            model = await self.models.get(preset)
            started = time.perf_counter()
            # The pipeline call blocks for the whole denoising loop: keep it off the event loop
            # so health checks and new requests are still answered.
            images = await asyncio.to_thread(
                model.render, [requests[i].prompt for i in indices],
                [requests[i].seed for i in indices], width, height, negative)
            elapsed = time.perf_counter() - started
            self._render_seconds.observe(elapsed, tags={"preset": preset})
            self._images_rendered.inc(len(indices), tags={"preset": preset})
            for index, image in zip(indices, images):
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                results[index] = ImageResult(png=buffer.getvalue(), seconds=elapsed / len(indices))
        return results  # type: ignore[return-value]

    def reconfigure(self, user_config: dict) -> None:
        """Batching knobs from the Serve config's ``user_config`` (no code change to tune)."""
        if "max_batch_size" in user_config:
            self._render_batch.set_max_batch_size(int(user_config["max_batch_size"]))
        if "batch_wait_timeout_s" in user_config:
            self._render_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("no image model loaded")
