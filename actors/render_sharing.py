"""Each distinct render request is rendered once per replica, however often it is sent.

When a job actor dies, the renders it had asked for keep running on the replicas, and the
actor's next incarnation sends the same requests again (the seed is fixed per job, scene and
version, so a request is the same request). A request equal to one in flight joins it; one
equal to a recently finished render gets that result. The orphaned render is thus adopted,
not thrown away, and the GPU does the work once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable


def request_digest(request: Any) -> str:
    """A digest of every field of a request dataclass (bytes fields by content)."""
    digest = hashlib.sha256(type(request).__name__.encode())
    for field in dataclasses.fields(request):
        value = getattr(request, field.name)
        digest.update(field.name.encode() + b"=")
        digest.update(value if isinstance(value, bytes) else repr(value).encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclasses.dataclass
class _InFlight:
    task: asyncio.Task
    waiters: int = 0


class SharedRenders:
    """Runs ``render`` once per distinct request: in flight, or among the last ``keep``."""

    def __init__(self, keep: int):
        self.keep = keep
        self._in_flight: dict[str, _InFlight] = {}
        self._finished: OrderedDict[str, Any] = OrderedDict()
        # Times each recent request was actually rendered, by its seed (which names a job's
        # scene version): what an operator checks to see re-sent work was adopted.
        self.renders_by_seed: OrderedDict[int, int] = OrderedDict()
        # When each recent seed first reached this replica (wall clock, seconds since the epoch):
        # how a benchmark sees, from the renderer's side, when a job's first request arrived.
        self.arrivals_by_seed: OrderedDict[int, float] = OrderedDict()

    async def run(self, request: Any, render: Callable[[], Awaitable[Any]]) -> Any:
        seed = getattr(request, "seed", None)
        if seed is not None and seed not in self.arrivals_by_seed:
            self.arrivals_by_seed[seed] = time.time()
            while len(self.arrivals_by_seed) > 4 * self.keep:
                self.arrivals_by_seed.popitem(last=False)
        key = request_digest(request)
        if key in self._finished:
            self._finished.move_to_end(key)
            return self._finished[key]
        shared = self._in_flight.get(key)
        if shared is None:
            shared = _InFlight(asyncio.ensure_future(self._render(key, request, render)))
            self._in_flight[key] = shared
        shared.waiters += 1
        try:
            return await asyncio.shield(shared.task)
        finally:
            shared.waiters -= 1
            # Everyone who asked gave up (a cancelled job): stop the work too.
            if shared.waiters == 0 and not shared.task.done():
                shared.task.cancel()

    async def _render(self, key: str, request: Any, render: Callable[[], Awaitable[Any]]) -> Any:
        try:
            seed = getattr(request, "seed", None)
            if seed is not None:
                self.renders_by_seed[seed] = self.renders_by_seed.get(seed, 0) + 1
                self.renders_by_seed.move_to_end(seed)
                while len(self.renders_by_seed) > 4 * self.keep:
                    self.renders_by_seed.popitem(last=False)
            result = await render()
            self._finished[key] = result
            while len(self._finished) > self.keep:
                self._finished.popitem(last=False)
            return result
        finally:
            self._in_flight.pop(key, None)
