"""A simulated GPU for the benchmarks: renderer deployments with the real renderers' interface
whose replicas hold a device for a time given by a cost model instead of running a model.

Only ``bench/`` uses this. It is not a preset (nothing in ``models/presets/``), a user cannot
pick it, and no test takes its output as evidence that rendering works: its images are one
flat colour and its clips one cached MP4. What it is for is measuring the farm's own
scheduling (job actors, Serve routing, batching, queues, compositing, the database) with many
"GPUs" on a 2-core machine.

The parts:

- ``DeviceCost`` / ``DeviceProfile``: the cost model. A call holds the device for
  ``per_call_s + per_item_s * items`` real-GPU seconds (items: images in a batch, or one clip),
  per preset, from published figures (cited at ``PROFILES``), times a ``time_factor`` so a run
  fits minutes.
- ``DevicePool``: one Ray actor (no CPU) that *is* the N simulated GPUs. A call holds device
  ``i`` under its lock with ``asyncio.sleep`` (no CPU used), and is recorded, so a benchmark
  reads the device-seconds spent and the batches formed from here. Renderer replica ``i`` of
  each kind is given device ``i mod N``: an image and a clip replica share a card, as both
  renderers share the GPU of a one-card machine.
- ``SimulatedImageRenderer`` / ``SimulatedClipRenderer``: Serve deployments named like the
  real ones (``ImageRenderer``, ``ClipRenderer``), bound by ``serve_app.build_app`` through its
  ``renderers`` argument. They keep the real request path's own building blocks: Serve's
  multiplexing through ``actors.model_shelf.ModelShelf`` (with a loader that loads nothing),
  ``actors.render_sharing.SharedRenders``, the priority queue ``actors.render_queue.RenderQueue``
  and ``@serve.batch`` with the placement's batch size and wait, so batches across jobs form
  exactly as in the real image renderer. They import neither torch nor diffusers (a replica is
  a ~150 MB process that starts in a second or two), and ask for no CPU, so dozens fit.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import ray
from ray import serve

from actors.messages import ClipRequest, ClipResult, ImageRequest, ImageResult
from actors.model_shelf import ModelShelf
from actors.placement import MODELS_PER_REPLICA
from actors.render_queue import RenderQueue
from actors.render_sharing import SharedRenders
from models.presets import DEFAULT_PRESET_ENV, TINY_PRESET, RenderPreset, get_preset

POOL_NAME = "simulated-gpu-pool"
POOL_NAMESPACE = "renderfarm-bench"
# The real image renderer's batch size before the placement's user_config sets it.
MAX_BATCH_SIZE = 4
# Holds kept for ``DevicePool.usage`` (a 32-job run makes ~600).
RECORDS_KEPT = 200_000


@dataclass(frozen=True)
class DeviceCost:
    """Real-GPU seconds one call holds the device: a fixed part plus a part per item."""

    per_call_s: float
    per_item_s: float

    def seconds(self, items: int) -> float:
        if items < 1:
            raise ValueError(f"a call renders at least one item, got {items}")
        return self.per_call_s + self.per_item_s * items

    def batch_speedup(self, batch: int) -> float:
        """Items per second in batches of ``batch`` over items per second one at a time: the
        most batching can gain under this cost model."""
        return batch * self.seconds(1) / self.seconds(batch)


@dataclass(frozen=True)
class DeviceProfile:
    """What one preset costs on one card: an image call (items: images in the batch) and a
    clip call (one clip)."""

    preset: str
    card: str
    image: DeviceCost
    clip: DeviceCost

    def cost(self, kind: str) -> DeviceCost:
        if kind not in ("image", "clip"):
            raise ValueError(f"unknown kind of render {kind!r}")
        return self.image if kind == "image" else self.clip


PROFILES: dict[str, DeviceProfile] = {
    # SDXL-Turbo: 207 ms for one 512x512 image on an A100 (prompt encoding, one denoising step,
    # VAE decode, fp16), of which 67 ms is the UNet (Stability AI, "Introducing SDXL Turbo",
    # 28 Nov 2023). The split into 0.100 s per call and 0.107 s per image is ours: one image
    # costs the published 0.207 s, a batch of 4 costs 0.528 s (1.57x the images per second).
    # SVD-XT: 25 frames at 1024x576, 25 steps, fp16: 40 s on an A100, the middle of reported
    # figures (30-60 s on A100-class cards; 45-90 s on an RTX 4090); the preset's own quote
    # for an A10G is 75 s (models/presets/sdxl-turbo-svd.yaml, estimate). One clip per call.
    "sdxl-turbo-svd": DeviceProfile(
        preset="sdxl-turbo-svd", card="A100 80GB",
        image=DeviceCost(per_call_s=0.100, per_item_s=0.107),
        clip=DeviceCost(per_call_s=0.5, per_item_s=39.5)),
    # LTX-Video: 121 frames (5 s at 24 fps) at 768x512 in 2 s on an H100, 20 steps (Lightricks,
    # "LTX-Video: Realtime Video Latent Diffusion", arXiv:2501.00103; "faster than it takes to
    # watch them" in its release notes). The preset renders 97 frames with 40 steps: 2 s x
    # 40/20 x 97/121 = 3.2 s. SD 1.5 at 512x512, 30 steps, on an H100: ~1 s per image alone
    # (our estimate from ~20 steps/s for SD 1.5 at batch 1 on A100/H100-class cards), with
    # 0.25 s of it per call; a batch of 4 costs 3.25 s (1.23x).
    "sd15-ltx": DeviceProfile(
        preset="sd15-ltx", card="H100 80GB",
        image=DeviceCost(per_call_s=0.25, per_item_s=0.75),
        clip=DeviceCost(per_call_s=0.2, per_item_s=3.0)),
}
DEFAULT_PROFILE = "sdxl-turbo-svd"


@ray.remote(num_cpus=0)
class DevicePool:
    """The N simulated GPUs. Every job's requests are charged as ``profile`` (the benchmarks
    run the small ``tiny`` preset so stored images, clips and composites stay cheap, and bill
    the device as the production preset named here)."""

    def __init__(self, devices: int, profile: str = DEFAULT_PROFILE, time_factor: float = 1.0,
                 first_clip_device: int = 0):
        if devices < 1:
            raise ValueError(f"a pool has at least one device, got {devices}")
        if time_factor <= 0:
            raise ValueError(f"time_factor must be positive, got {time_factor}")
        self.devices = devices
        self.profile = PROFILES[profile]
        self.time_factor = time_factor
        self._locks = [asyncio.Lock() for _ in range(devices)]
        # Clip replicas from ``first_clip_device`` on: with 1, image replicas have card 0 to
        # themselves (the cluster layout, a renderer per GPU) instead of sharing every card.
        self._next = {"image": itertools.count(), "clip": itertools.count(first_clip_device)}
        # (device, kind, items, started, ended), epoch seconds (comparable with the database's times)
        self._holds: list[tuple[int, str, int, float, float]] = []

    def assign(self, kind: str) -> int:
        """The device of the next replica of ``kind`` to start: 0, 1, ..., N-1, 0, ..."""
        return next(self._next[kind]) % self.devices

    async def hold(self, device: int, kind: str, items: int) -> float:
        """Holds ``device`` for the cost of ``items`` (waiting for it if another replica on the
        same card holds it); returns the seconds held."""
        seconds = self.profile.cost(kind).seconds(items) * self.time_factor
        async with self._locks[device]:
            started = time.time()
            await asyncio.sleep(seconds)
            ended = time.time()
        if len(self._holds) < RECORDS_KEPT:
            self._holds.append((device, kind, items, started, ended))
        return ended - started

    def reset(self) -> None:
        self._holds.clear()

    def usage(self) -> dict[str, Any]:
        """Device-seconds held (wall, and in real-GPU seconds), items and calls per kind,
        batch sizes formed, the first start and last end (epoch seconds)."""
        busy = defaultdict(float)
        items = defaultdict(int)
        calls = defaultdict(int)
        batches: dict[int, int] = defaultdict(int)
        for _device, kind, count, started, ended in self._holds:
            busy[kind] += ended - started
            items[kind] += count
            calls[kind] += 1
            if kind == "image":
                batches[count] += 1
        return {"devices": self.devices, "profile": self.profile.preset,
                "card": self.profile.card, "time_factor": self.time_factor,
                "busy_s": dict(busy), "items": dict(items), "calls": dict(calls),
                "image_batches": dict(sorted(batches.items())),
                "first_start": min((h[3] for h in self._holds), default=None),
                "last_end": max((h[4] for h in self._holds), default=None),
                "holds": [(d, k, n, s, e) for d, k, n, s, e in self._holds]}


def start_pool(devices: int, profile: str = DEFAULT_PROFILE, time_factor: float = 1.0,
               first_clip_device: int = 0):
    """Starts the pool the simulated renderers find by name; kill it with ``ray.kill``."""
    return DevicePool.options(name=POOL_NAME, namespace=POOL_NAMESPACE).remote(
        devices, profile, time_factor, first_clip_device)


class _Device:
    """A replica's card: the pool and the device index it was given."""

    def __init__(self, kind: str):
        self.kind = kind
        self.pool = ray.get_actor(POOL_NAME, namespace=POOL_NAMESPACE)
        self.index: int | None = None

    async def hold(self, items: int) -> float:
        if self.index is None:
            self.index = await self.pool.assign.remote(self.kind)
        return await self.pool.hold.remote(self.index, self.kind, items)


class _NoModel:
    """What the simulated shelf "loads": nothing (the device pool stands for the model)."""

    def __init__(self, preset: RenderPreset):
        self.preset = preset


def _load_nothing(preset: RenderPreset, models_dir: Path) -> _NoModel:
    return _NoModel(preset)


def _warm_nothing(model: _NoModel, preset: RenderPreset) -> None:
    return None


@lru_cache(maxsize=16)
def flat_png(width: int, height: int) -> bytes:
    """A real PNG of the requested size, made once per size."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@lru_cache(maxsize=16)
def flat_mp4(width: int, height: int, frames: int, fps: int) -> bytes:
    """A real H.264 MP4 of the requested size, frame count and rate, encoded once per shape
    (by the project's own encoder, so the compositor gets what a real clip renderer sends)."""
    from PIL import Image

    from actors.compositor import encode_frames_to_mp4

    images = [Image.new("RGB", (width, height), (40, 120 + 8 * (i % 8), 200))
              for i in range(frames)]
    with tempfile.TemporaryDirectory(prefix="simulated-clip-") as workdir:
        path = Path(workdir) / "clip.mp4"
        encode_frames_to_mp4(images, fps, path)
        return path.read_bytes()


def _default_preset() -> str:
    # Like the real renderer without CUDA: $RENDERFARM_DEFAULT_PRESET, else tiny (never
    # importing torch to ask).
    return os.environ.get(DEFAULT_PRESET_ENV, "").strip() or TINY_PRESET


@serve.deployment(name="ImageRenderer", max_ongoing_requests=32, health_check_period_s=5,
                  ray_actor_options={"num_cpus": 0})
class SimulatedImageRenderer:
    """``actors.image_renderer.ImageRenderer``'s interface and request path, on a simulated
    card: the batch holds the device for the cost of its size."""

    async def __init__(self, models_dir: str, preload: list[str] | None = None,
                 max_models: int = MODELS_PER_REPLICA["local"]["ImageRenderer"]):
        self.models = ModelShelf[_NoModel](_load_nothing, _warm_nothing, Path(models_dir),
                                           "image", max_models)
        self._shared = SharedRenders(keep=64)
        self._queue = RenderQueue(slots=MAX_BATCH_SIZE)
        self._device = _Device("image")
        # Serve counts the replica as started once the preset is on its shelf (reported to
        # the router for multiplexing), as with the real renderer.
        await self.models.warm_up((preload or [_default_preset()])[0])

    def default_preset(self) -> str:
        return _default_preset()

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("the simulated image renderer is not warm yet")

    async def render(self, request: ImageRequest) -> ImageResult:
        return await self._shared.run(request, lambda: self._render_loaded(request))

    def model_state(self) -> dict[str, Any]:
        return {"replica": serve.get_replica_context().replica_tag, **self.models.state()}

    def queue_state(self) -> dict[str, Any]:
        return self._queue.state()

    def recent_renders_by_seed(self) -> dict[int, int]:
        return dict(self._shared.renders_by_seed)

    async def _render_loaded(self, request: ImageRequest) -> ImageResult:
        async with self.models.use(request.preset) as model:
            async with self._queue.turn(request.priority, request.owner, label=request.seed,
                                        group=request.preset):
                return await self._render_batch(request, model)

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=0.02)
    async def _render_batch(self, requests: list[ImageRequest],
                            models: list[_NoModel]) -> list[ImageResult]:
        results: list[ImageResult | None] = [None] * len(requests)
        # Grouped as the real renderer groups a batch: one device call per compatible group.
        groups: dict[tuple[str, int, int, str | None], list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[(request.preset, request.width, request.height,
                    request.negative_prompt)].append(index)
        for (preset, width, height, _negative), indices in groups.items():
            self.models.note("render_started", preset)
            seconds = await self._device.hold(len(indices))
            self.models.note("rendered", preset)
            png = flat_png(width, height)
            for index in indices:
                results[index] = ImageResult(png=png, seconds=seconds / len(indices))
        return results  # type: ignore[return-value]

    def reconfigure(self, user_config: dict) -> None:
        """The same knobs as the real image renderer."""
        if "max_batch_size" in user_config:
            self._render_batch.set_max_batch_size(int(user_config["max_batch_size"]))
            self._queue.configure(slots=int(user_config["max_batch_size"]))
        if "priority_aging_s" in user_config:
            self._queue.configure(aging_s=float(user_config["priority_aging_s"]))
        if "batch_wait_timeout_s" in user_config:
            self._render_batch.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))


@serve.deployment(name="ClipRenderer", max_ongoing_requests=8, health_check_period_s=5,
                  ray_actor_options={"num_cpus": 0})
class SimulatedClipRenderer:
    """``actors.clip_renderer.ClipRenderer``'s interface and request path, on a simulated
    card: one clip at a time holds the device for the cost of a clip."""

    async def __init__(self, models_dir: str, preload: list[str] | None = None,
                 max_models: int = MODELS_PER_REPLICA["local"]["ClipRenderer"]):
        self.models = ModelShelf[_NoModel](_load_nothing, _warm_nothing, Path(models_dir),
                                           "clip", max_models)
        self._shared = SharedRenders(keep=16)
        self._pipeline_turn = RenderQueue(slots=1)
        self._device = _Device("clip")
        # Serve counts the replica as started once the preset is on its shelf (reported to
        # the router for multiplexing), as with the real renderer.
        await self.models.warm_up((preload or [_default_preset()])[0])

    async def render(self, request: ClipRequest) -> ClipResult:
        return await self._shared.run(request, lambda: self._render(request))

    def model_state(self) -> dict[str, Any]:
        return {"replica": serve.get_replica_context().replica_tag, **self.models.state()}

    def queue_state(self) -> dict[str, Any]:
        return self._pipeline_turn.state()

    def recent_renders_by_seed(self) -> dict[int, int]:
        return dict(self._shared.renders_by_seed)

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("the simulated clip renderer is not warm yet")

    def reconfigure(self, user_config: dict) -> None:
        if "priority_aging_s" in user_config:
            self._pipeline_turn.configure(aging_s=float(user_config["priority_aging_s"]))

    async def _render(self, request: ClipRequest) -> ClipResult:
        spec = get_preset(request.preset).clip
        async with self.models.use(request.preset):
            async with self._pipeline_turn.turn(request.priority, request.owner,
                                                label=request.seed, group=request.preset):
                self.models.note("render_started", request.preset)
                seconds = await self._device.hold(1)
                self.models.note("rendered", request.preset)
        mp4 = await asyncio.to_thread(flat_mp4, request.width, request.height, spec.num_frames,
                                      spec.fps)
        return ClipResult(mp4=mp4, seconds=seconds, frames=spec.num_frames, fps=spec.fps)


def simulated_renderers() -> dict[str, Any]:
    """The ``renderers`` argument of ``serve_app.build_app`` that puts the simulated GPU in
    place of both renderers (start the pool first: ``start_pool``)."""
    # Replicas unpickle these classes by value: bench/ is not an installed package.
    from ray import cloudpickle
    import sys

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return {"ImageRenderer": SimulatedImageRenderer, "ClipRenderer": SimulatedClipRenderer}
