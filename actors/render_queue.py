"""The order in which a renderer replica admits waiting requests to its pipeline.

A replica takes up to ``max_ongoing_requests`` requests at once, but its pipeline renders only a
few at a time (one batch of images, one clip). Without a gate, the waiting ones go in arrival
order: a user who sends twelve scenes first holds everyone else up, and a high-priority job
waits behind all of them. ``RenderQueue`` hands out the pipeline's ``slots`` in this order:

1. effective priority, highest first: the job's level (low 0, normal 1, high 2) plus one level
   for every ``aging_s`` seconds the request has waited here. Aging is the starvation bound: a
   request that has waited ``k * aging_s`` seconds ranks above every request arriving after it
   whose level is less than ``k`` above its own (a low request waits at most about
   ``2 * aging_s`` before it ranks level with fresh high-priority work);
2. among equals, the owner served least recently first (round robin across users), so one
   user's many scenes do not starve another user's single one;
3. then arrival order.

The queue is plain asyncio and knows nothing of Ray: the renderers wrap their pipeline call in
``async with queue.turn(priority, owner):``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Hashable

PRIORITY_LEVELS = {"low": 0, "normal": 1, "high": 2}
DEFAULT_PRIORITY = "normal"
# One level gained per this many seconds of waiting (see the module docstring for the bound).
DEFAULT_AGING_S = 30.0
# Admissions kept for ``state``: enough to see the order of the last few dozen renders.
EVENTS_KEPT = 256


@dataclass(eq=False)
class _Waiter:
    level: int
    priority: str
    owner: str
    arrival: int
    since: float
    label: Hashable
    granted: asyncio.Future = field(repr=False)
    group: str = ""


class RenderQueue:
    """At most ``slots`` holders at once; the rest wait and are admitted in priority order."""

    def __init__(self, slots: int = 1, aging_s: float = DEFAULT_AGING_S,
                 clock: Callable[[], float] = time.monotonic,
                 on_depth: Callable[[str, int], None] | None = None):
        """``on_depth(group, waiting)`` is told how many requests of a group (a preset) wait,
        whenever that changes: the renderers export it as a queue-depth metric."""
        self._check(slots, aging_s)
        self.slots = slots
        self.aging_s = aging_s
        self._clock = clock
        self._on_depth = on_depth
        self._groups_seen: set[str] = set()
        self._busy = 0
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()
        self._turns = itertools.count()
        # The turn number at which each owner was last admitted (round robin's memory).
        self._last_served: dict[str, int] = {}
        self._events: deque[tuple[str, Hashable, str, str]] = deque(maxlen=EVENTS_KEPT)

    def configure(self, *, slots: int | None = None, aging_s: float | None = None) -> None:
        """New limits take effect at once (more slots admit waiting requests now)."""
        self._check(slots or self.slots, aging_s or self.aging_s)
        self.slots = slots or self.slots
        self.aging_s = aging_s or self.aging_s
        self._admit()

    @contextlib.asynccontextmanager
    async def turn(self, priority: str = DEFAULT_PRIORITY, owner: str = "",
                   label: Hashable = None, group: str = "") -> AsyncIterator[None]:
        """Waits for a slot, holds it for the block. ``label`` names the request in ``state``;
        ``group`` is what the queue depth is counted by."""
        await self._acquire(PRIORITY_LEVELS.get(priority, PRIORITY_LEVELS[DEFAULT_PRIORITY]),
                            owner, label, priority, group)
        try:
            yield
        finally:
            self._busy -= 1
            self._admit()

    def effective_level(self, waiter: _Waiter, now: float) -> int:
        return waiter.level + int((now - waiter.since) // self.aging_s)

    def state(self) -> dict[str, Any]:
        """Slots, how many hold one and wait for one, and recent ``waiting``/``admitted``
        events in order, each ``(event, label, priority, owner)``."""
        return {"slots": self.slots, "busy": self._busy, "waiting": len(self._waiting),
                "aging_s": self.aging_s, "events": list(self._events)}

    async def _acquire(self, level: int, owner: str, label: Hashable, priority: str,
                       group: str = "") -> None:
        if group not in self._groups_seen:  # the depth of every group served is reported,
            self._groups_seen.add(group)  # 0 included (a replica taking one request at a time
            self._depth_changed(group)    # has nothing waiting, and says so)
        if self._busy < self.slots and not self._waiting:
            self._events.append(("admitted", label, priority, owner))
            self._take(owner)
            return
        waiter = _Waiter(level=level, priority=priority, owner=owner, arrival=next(self._arrivals),
                         since=self._clock(), label=label, group=group,
                         granted=asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        self._depth_changed(group)
        self._events.append(("waiting", label, priority, owner))
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                # Admitted just as the caller gave up: hand the slot on.
                self._busy -= 1
                self._admit()
            else:
                self._waiting.remove(waiter)
                self._depth_changed(waiter.group)
            raise

    def _admit(self) -> None:
        while self._busy < self.slots and self._waiting:
            now = self._clock()
            chosen = min(self._waiting, key=lambda w: (-self.effective_level(w, now),
                                                       self._last_served.get(w.owner, -1),
                                                       w.arrival))
            self._waiting.remove(chosen)
            self._depth_changed(chosen.group)
            self._events.append(("admitted", chosen.label, chosen.priority, chosen.owner))
            self._take(chosen.owner)
            chosen.granted.set_result(None)

    def _take(self, owner: str) -> None:
        self._busy += 1
        self._last_served[owner] = next(self._turns)
        if len(self._last_served) > 4 * EVENTS_KEPT:
            # Forget owners long idle (the oldest turns); they rank as new, which is fair.
            for stale in sorted(self._last_served, key=self._last_served.get)[:EVENTS_KEPT]:
                del self._last_served[stale]

    def _depth_changed(self, group: str) -> None:
        if self._on_depth is not None:
            self._on_depth(group, sum(1 for waiter in self._waiting if waiter.group == group))

    @staticmethod
    def _check(slots: int, aging_s: float) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        if aging_s <= 0:
            raise ValueError(f"aging_s must be positive, got {aging_s}")
