"""The renderers' admission order (``actors.render_queue``), without Ray: priority first, aging
so low-priority work is not starved, per-user round robin within a priority, arrival last."""

from __future__ import annotations

import asyncio

import pytest

from actors.render_queue import RenderQueue

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ManualClock:
    """Time that moves only when the test says (aging is measured on it)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _admission_order(queue: RenderQueue, requests: list[tuple[str, str, str]],
                           clock: ManualClock | None = None,
                           waits: dict[str, float] | None = None) -> list[str]:
    """Holds the queue's only slot, lines ``requests`` ``(label, priority, owner)`` up behind
    it (advancing ``clock`` by ``waits[label]`` after each joins), then lets them through one
    at a time; returns the labels in the order they got the slot."""
    order: list[str] = []
    holder = asyncio.Event()

    async def hold() -> None:
        async with queue.turn("normal", "holder"):
            await holder.wait()

    async def one(label: str, priority: str, owner: str) -> None:
        async with queue.turn(priority, owner, label=label):
            order.append(label)
            await asyncio.sleep(0)

    blocker = asyncio.create_task(hold())
    await asyncio.sleep(0)
    tasks = []
    for label, priority, owner in requests:
        tasks.append(asyncio.create_task(one(label, priority, owner)))
        await asyncio.sleep(0)  # joins the queue now, in this order
        if clock and waits:
            clock.now += waits.get(label, 0.0)
    assert queue.state()["waiting"] == len(requests)
    holder.set()
    await asyncio.gather(blocker, *tasks)
    return order


async def test_higher_priority_is_admitted_before_earlier_lower_priority():
    order = await _admission_order(RenderQueue(slots=1), [
        ("n1", "normal", "ann"), ("l1", "low", "ann"), ("n2", "normal", "ann"),
        ("h1", "high", "ann"), ("h2", "high", "ann")])
    assert order == ["h1", "h2", "n1", "n2", "l1"]


async def test_users_take_turns_within_a_priority():
    # Ann sends a 12-scene job first; Bob's and Cy's single scenes do not wait for all of it.
    ann = [(f"ann{i}", "normal", "ann") for i in range(12)]
    order = await _admission_order(RenderQueue(slots=1),
                                   ann + [("bob0", "normal", "bob"), ("cy0", "normal", "cy")])
    # Ann arrived first, so her first scene goes first; then each user not yet served.
    assert order == ["ann0", "bob0", "cy0"] + [f"ann{i}" for i in range(1, 12)]


async def test_round_robin_alternates_between_busy_users():
    requests = [(f"a{i}", "normal", "ann") for i in range(3)] + \
               [(f"b{i}", "normal", "bob") for i in range(3)]
    order = await _admission_order(RenderQueue(slots=1), requests)
    owners = [label[0] for label in order]
    assert owners in (["a", "b"] * 3, ["b", "a"] * 3)


async def test_priority_outranks_round_robin():
    # Bob was never served, Ann just was: Ann's high request still goes first.
    order = await _admission_order(RenderQueue(slots=1), [
        ("bob-normal", "normal", "bob"), ("ann-high", "high", "ann")])
    assert order == ["ann-high", "bob-normal"]


async def test_a_waiting_low_request_rises_one_level_per_aging_period():
    clock = ManualClock()
    queue = RenderQueue(slots=1, aging_s=10.0, clock=clock)
    # The low request waits 20 s (two levels: it now ranks as high) before the others arrive;
    # the normal one waits 9 s more, not enough for a level.
    order = await _admission_order(queue, [
        ("old-low", "low", "ann"), ("normal", "normal", "bob"), ("fresh-high", "high", "cy")],
        clock=clock, waits={"old-low": 20.0, "normal": 9.0})
    # Level with the fresh high one, the old low request goes first on round robin/arrival.
    assert order == ["old-low", "fresh-high", "normal"]


async def test_a_low_request_short_of_the_aging_period_still_waits():
    clock = ManualClock()
    queue = RenderQueue(slots=1, aging_s=10.0, clock=clock)
    order = await _admission_order(queue, [("low", "low", "ann"), ("normal", "normal", "bob")],
                                   clock=clock, waits={"low": 9.9})
    assert order == ["normal", "low"]


async def test_a_cancelled_waiter_leaves_the_line_and_frees_nothing_twice():
    queue = RenderQueue(slots=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with queue.turn("normal", "ann"):
            await release.wait()

    async def wait_turn(label: str, admitted: list[str]) -> None:
        async with queue.turn("high", "bob", label=label):
            admitted.append(label)

    admitted: list[str] = []
    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    gone = asyncio.create_task(wait_turn("gone", admitted))
    stays = asyncio.create_task(wait_turn("stays", admitted))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert queue.state()["waiting"] == 1
    release.set()
    await asyncio.gather(holder, stays)
    assert admitted == ["stays"]
    assert queue.state()["busy"] == 0


async def test_slots_admit_that_many_at_once():
    queue = RenderQueue(slots=3)
    inside = 0
    peak = 0

    async def one() -> None:
        nonlocal inside, peak
        async with queue.turn():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(10)))
    assert peak == 3
    assert queue.state()["busy"] == 0 and queue.state()["waiting"] == 0


async def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        RenderQueue(slots=0)
    with pytest.raises(ValueError):
        RenderQueue(aging_s=0)


def test_queue_depth_is_reported_per_group_as_it_changes():
    """What the renderers export as renderfarm_renderer_queue_depth{preset}."""
    depths: list[tuple[str, int]] = []

    async def scenario() -> None:
        queue = RenderQueue(slots=1, on_depth=lambda group, waiting: depths.append((group, waiting)))
        gate = asyncio.Event()

        async def hold(group: str) -> None:
            async with queue.turn(group=group):
                await gate.wait()

        tasks = [asyncio.create_task(hold(group)) for group in ("tiny", "tiny", "sd15")]
        await asyncio.sleep(0)
        # The first took the slot at once: its group's depth is reported as 0 when first
        # seen (the series exists before anything waits), then each wait as it starts.
        assert depths == [("tiny", 0), ("tiny", 1), ("sd15", 0), ("sd15", 1)]
        gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert depths[-2:] in ([("tiny", 0), ("sd15", 0)], [("sd15", 0), ("tiny", 0)])
