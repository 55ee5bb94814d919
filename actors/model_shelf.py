"""The models a renderer replica holds: a few presets at a time, placed by Ray Serve's model
multiplexing, loaded beside the work instead of inside it.

Why Serve's multiplexing rather than routing of our own: the caller (the job actor) names the
preset as ``handle.options(multiplexed_model_id=preset)``; the replica loads through a
``@serve.multiplexed`` loader, which reports the presets it holds or is loading to the
controller, and Serve's router then sends a request to a replica that holds its preset (after
``RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S`` without one free, to the replica holding
the fewest models). The loader keeps at most ``max_models`` presets and unloads the least
recently used one before loading another. ``@serve.batch`` splits each batch by multiplexed
model id (Ray 2.60 ``batching._split_batch_by_model_id``), so a batch never mixes presets.
Routing, LRU order and batch splitting are all Serve's; none of it is rebuilt here.

What this module adds around Serve's loader, because Serve's own does not do it:

- The load (``from_pretrained``: seconds to minutes) runs in a worker thread, and a renderer
  awaits its model *before* its request joins a batch. So only requests for the preset being
  loaded wait; batches of loaded presets keep running.
- An unloaded model is freed only once no request still holds it (a batch may be mid-render
  with it when the LRU picks it), then ``gc`` and ``torch.cuda.empty_cache()`` hand the memory
  back, before Serve loads the next model in its place.
- Metrics (``ray.util.metrics``, shown by the Ray dashboard), tagged by preset and kind:
  ``renderfarm_model_loads``, ``renderfarm_model_load_seconds``, ``renderfarm_model_evictions``,
  ``renderfarm_model_cold_start_seconds`` (load plus warm-up render at replica start).
- A record of what the replica holds and of loads, evictions and renders in order
  (``state``), for operators and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Generic, TypeVar

from ray import serve
from ray.util import metrics

from models.presets import RenderPreset, get_preset

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")

# Events kept for ``state``: enough to see the order of the last few loads and renders.
EVENTS_KEPT = 256
_LOAD_BUCKETS_S = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600]


class ServedModel(Generic[ModelT]):
    """One loaded preset, with a count of the requests using it right now.

    Serve's LRU calls ``__del__`` (in a worker thread) when it unloads the model; that waits
    for the requests still using it, then drops the pipeline."""

    def __init__(self, shelf: "ModelShelf[ModelT]", preset: str, model: ModelT):
        self.shelf = shelf
        self.preset = preset
        self.model: ModelT | None = model
        self._users = 0
        self._idle = threading.Condition()

    def acquire(self) -> bool:
        """Marks one more request as using the model; False if it was already unloaded."""
        with self._idle:
            if self.model is None:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._idle:
            self._users -= 1
            self._idle.notify_all()

    def unload(self) -> None:
        with self._idle:
            if self.model is None:
                return
            self._idle.wait_for(lambda: self._users == 0)
            self.model = None
        self.shelf._unloaded(self)

    # Serve's multiplexing calls this to unload eagerly; it also makes a model dropped some
    # other way (replica shutdown) free its memory.
    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.unload()


class ModelShelf(Generic[ModelT]):
    """The presets one renderer replica holds: at most ``max_models``, least recently used
    unloaded first. ``loader`` builds a model from a preset (blocking); ``warm`` renders once
    with it (blocking), so the replica's first real request does not pay one-off costs."""

    def __init__(self, loader: Callable[[RenderPreset, Path], ModelT],
                 warm: Callable[[ModelT, RenderPreset], Any], models_dir: Path, kind: str,
                 max_models: int):
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        self._loader = loader
        self._warm = warm
        self._models_dir = models_dir
        self.kind = kind
        self.max_models = max_models
        self.warm_preset: str | None = None
        self._resident: dict[str, ServedModel[ModelT]] = {}
        self._loading: set[str] = set()
        self._last_used: dict[str, int] = {}
        self._clock = itertools.count()
        self._event_numbers = itertools.count()
        self._events: deque[tuple[int, str, str]] = deque(maxlen=EVENTS_KEPT)
        self._loads: Counter[str] = Counter()
        self._evictions: Counter[str] = Counter()
        self._events_lock = threading.Lock()  # unloads record from a worker thread
        tags = ("preset", "kind")
        self._load_count = metrics.Counter(
            "renderfarm_model_loads", "Models loaded onto a renderer replica", tag_keys=tags)
        self._load_seconds = metrics.Histogram(
            "renderfarm_model_load_seconds", "Time to load one model onto a renderer replica",
            boundaries=_LOAD_BUCKETS_S, tag_keys=tags)
        self._eviction_count = metrics.Counter(
            "renderfarm_model_evictions", "Models unloaded from a renderer replica to make room",
            tag_keys=tags)
        self._cold_start_seconds = metrics.Histogram(
            "renderfarm_model_cold_start_seconds",
            "Replica start: loading its default model plus one warm-up render",
            boundaries=_LOAD_BUCKETS_S, tag_keys=tags)

        # A plain function (not a bound method), so Serve keeps one LRU per shelf, sized here.
        async def load_preset_model(preset: str) -> ServedModel[ModelT]:
            return await self._load(preset)

        self._multiplexed = serve.multiplexed(max_num_models_per_replica=max_models)(
            load_preset_model)

    async def warm_up(self, preset: str) -> float:
        """Loads ``preset`` and renders once with it; the replica is healthy only after this.
        Returns (and records) the cold-start seconds."""
        started = time.perf_counter()
        async with self.use(preset) as model:
            await asyncio.to_thread(self._warm, model, get_preset(preset))
        seconds = time.perf_counter() - started
        self._cold_start_seconds.observe(seconds, tags=self._tags(preset))
        self.warm_preset = preset
        self.note("warmed", preset)
        log.info("%s replica warm with preset %s after %.1fs", self.kind, preset, seconds)
        return seconds

    @contextlib.asynccontextmanager
    async def use(self, preset: str) -> AsyncIterator[ModelT]:
        """The preset's model, loaded if need be, held (not unloadable) until the block ends."""
        while True:
            # Shielded: a caller that gives up must not cancel a load others wait for (Serve's
            # loader would then keep advertising a model that never arrives).
            loading = asyncio.ensure_future(self._multiplexed(preset))
            loading.add_done_callback(_retrieve_exception)
            served = await asyncio.shield(loading)
            if served.acquire():  # else the LRU unloaded it just now: load it again
                break
        self._last_used[preset] = next(self._clock)
        try:
            yield served.model  # type: ignore[misc]
        finally:
            served.release()

    def note(self, event: str, preset: str) -> None:
        """Records an event (``rendered``, ...) in the replica's ordered log."""
        with self._events_lock:
            self._events.append((next(self._event_numbers), event, preset))

    def state(self) -> dict[str, Any]:
        """What the replica holds (least recently used first), what it is loading, load and
        eviction counts per preset, and the recent events in order."""
        with self._events_lock:
            events = list(self._events)
        loaded = sorted(self._resident, key=lambda name: self._last_used.get(name, -1))
        return {"kind": self.kind, "max_models": self.max_models, "loaded": loaded,
                "loading": sorted(self._loading), "warm_preset": self.warm_preset,
                "loads": dict(self._loads), "evictions": dict(self._evictions),
                "events": events}

    def __bool__(self) -> bool:
        return self.warm_preset is not None

    async def _load(self, preset: str) -> ServedModel[ModelT]:
        spec = get_preset(preset)  # an unknown preset fails here, before any memory is used
        self._loading.add(preset)
        self.note("load_started", preset)
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._loader, spec, self._models_dir)
        finally:
            self._loading.discard(preset)
        seconds = time.perf_counter() - started
        served = ServedModel(self, preset, model)
        self._resident[preset] = served
        self._loads[preset] += 1
        self._load_count.inc(tags=self._tags(preset))
        self._load_seconds.observe(seconds, tags=self._tags(preset))
        self.note("load_finished", preset)
        log.info("loaded %s model of preset %s in %.1fs", self.kind, preset, seconds)
        return served

    def _unloaded(self, served: ServedModel[ModelT]) -> None:
        # Called from Serve's unloading thread, after the model's last user finished.
        preset = served.preset
        if self._resident.get(preset) is served:
            del self._resident[preset]
        gc.collect()
        _empty_cuda_cache()
        self._evictions[preset] += 1
        self._eviction_count.inc(tags=self._tags(preset))
        self.note("evicted", preset)
        log.info("unloaded %s model of preset %s", self.kind, preset)

    def _tags(self, preset: str) -> dict[str, str]:
        return {"preset": preset, "kind": self.kind}


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _retrieve_exception(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
