"""Priority on a real image renderer replica (local Ray and Serve, the tiny models at a slow size):
with the pipeline saturated by normal-priority scenes of two users, a third user's high-priority
scenes are rendered before every normal scene that was already waiting."""

from __future__ import annotations

import itertools

import pytest
from ray import serve

from actors.messages import ImageRequest
from models.presets import get_preset
from tests.conftest import SLOW_PRESET, wait_until

pytestmark = pytest.mark.ray

_seeds = itertools.count(7000)


@pytest.fixture(scope="module")
def renderer(ray_session):
    from actors.image_renderer import ImageRenderer
    from actors.placement import make_placement

    # One request per pipeline call, so the admission order is the render order.
    options = {**make_placement("local").deployments["ImageRenderer"], "num_replicas": 1,
               "user_config": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}}
    app = ImageRenderer.options(**options).bind(str(ray_session["models_dir"]),
                                                preload=[SLOW_PRESET])
    handle = serve.run(app, name="priority-renderer", route_prefix=None)
    yield handle
    serve.delete("priority-renderer")


def _send(handle, priority: str, owner: str) -> tuple[int, object]:
    width, height = get_preset(SLOW_PRESET).image_size["1:1"]
    seed = next(_seeds)
    request = ImageRequest(preset=SLOW_PRESET, prompt="a can of lime soda", seed=seed,
                           width=width, height=height, priority=priority, owner=owner)
    return seed, handle.options(multiplexed_model_id=SLOW_PRESET).render.remote(request)


def test_high_priority_scenes_go_before_waiting_normal_ones(renderer):
    normal = [_send(renderer, "normal", owner) for owner in ("ann", "bob") * 3]
    wait_until(lambda: renderer.queue_state.remote().result(timeout_s=30)["waiting"] >= 3,
               timeout=60, what="normal scenes waiting for the pipeline")
    high = [_send(renderer, "high", "cy") for _ in range(2)]
    for _, response in normal + high:
        response.result(timeout_s=120)

    events = renderer.queue_state.remote().result(timeout_s=30)["events"]
    high_seeds = {seed for seed, _ in high}
    admitted = [label for event, label, *_ in events if event == "admitted"]
    for seed in high_seeds:
        joined = events.index(("waiting", seed, "high", "cy"))
        # Normal scenes still waiting when this high one joined the queue.
        waiting_then = {label for event, label, priority, _ in events[:joined]
                        if event == "waiting" and priority == "normal"} - \
                       {label for event, label, *_ in events[:joined] if event == "admitted"}
        assert waiting_then, "the pipeline was not saturated when the high scene arrived"
        assert all(admitted.index(seed) < admitted.index(other) for other in waiting_then)
