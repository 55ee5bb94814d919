"""Model-aware serving on a real local Ray and Serve, with the tiny pipelines:

- requests for two presets spread over two replicas land each on the replica holding its model
  (the caller names the preset as Serve's multiplexed model id, as the job actor does);
- a replica over its model budget unloads the least recently used preset;
- loading a preset does not hold up the batches of a preset already loaded.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import yaml
from ray import serve

from actors.messages import ImageRequest
from models.presets import get_preset
from tests.conftest import SLOW_PRESET, wait_until

pytestmark = pytest.mark.ray

TWIN_PRESET = "tiny-twin"
_seeds = itertools.count(1000)


@pytest.fixture(scope="module")
def presets(ray_session) -> list[str]:
    """``tiny``, ``tiny-slow`` (conftest) and a third tiny-based preset, written where the
    replicas read operator presets."""
    directory = Path(os.environ["RENDERFARM_PRESETS_PATH"].split(os.pathsep)[0])
    twin = get_preset("tiny").model_dump(mode="json")
    twin.update(name=TWIN_PRESET, description="The tiny models under another preset name.")
    (directory / f"{TWIN_PRESET}.yaml").write_text(yaml.safe_dump(twin, sort_keys=False))
    return ["tiny", SLOW_PRESET, TWIN_PRESET]


def _deploy(ray_session, name: str, *, replicas: int, max_models: int):
    from actors.image_renderer import ImageRenderer
    from actors.placement import make_placement

    options = {**make_placement("local").deployments["ImageRenderer"], "num_replicas": replicas}
    app = ImageRenderer.options(**options).bind(str(ray_session["models_dir"]),
                                                max_models=max_models)
    return serve.run(app, name=name, route_prefix=None)


def _request(preset: str) -> ImageRequest:
    width, height = get_preset(preset).image_size["1:1"]
    return ImageRequest(preset=preset, prompt="a can of lime soda", seed=next(_seeds),
                        width=width, height=height, negative_prompt=None)


def _render(handle, preset: str):
    """A render sent the way the job actor sends it: the preset is the multiplexed model id."""
    return handle.options(multiplexed_model_id=preset).render.remote(_request(preset))


def _replica_states(handle, replicas: int) -> dict[str, dict]:
    """Every replica's ``model_state``, by replica (asked until each has answered)."""
    states: dict[str, dict] = {}

    def all_answered() -> bool:
        state = handle.model_state.remote().result(timeout_s=60)
        states[state["replica"]] = state
        return len(states) == replicas

    wait_until(all_answered, timeout=120, interval=0, what="every replica's model state")
    return states


def _events(state: dict, kind: str) -> list[tuple[int, str]]:
    return [(number, preset) for number, event, preset in state["events"] if event == kind]


def test_requests_land_on_the_replica_holding_their_preset(ray_session, presets):
    handle = _deploy(ray_session, "model-routing", replicas=2, max_models=1)
    try:
        assert [state["loaded"] for state in _replica_states(handle, 2).values()] == \
            [["tiny"], ["tiny"]], "each replica starts warm with the default preset"
        # One replica swaps its model for tiny-slow; from then on each preset has one home.
        _render(handle, SLOW_PRESET).result(timeout_s=300)
        for _ in range(3):
            responses = [_render(handle, preset) for preset in ("tiny", SLOW_PRESET) * 2]
            for response in responses:
                response.result(timeout_s=300)

        states = _replica_states(handle, 2)
        by_preset = {state["loaded"][0]: state for state in states.values()}
        assert sorted(by_preset) == ["tiny", SLOW_PRESET]
        slow, tiny = by_preset[SLOW_PRESET], by_preset["tiny"]
        # Nothing was loaded again: every later request went where its model already was.
        assert slow["loads"] == {"tiny": 1, SLOW_PRESET: 1} and slow["evictions"] == {"tiny": 1}
        assert tiny["loads"] == {"tiny": 1} and tiny["evictions"] == {}
        assert {preset for _, preset in _events(slow, "rendered")} == {SLOW_PRESET}
        assert {preset for _, preset in _events(tiny, "rendered")} == {"tiny"}
    finally:
        serve.delete("model-routing")


@pytest.fixture(scope="module")
def budget_of_two(ray_session, presets):
    """One replica that holds at most two presets."""
    handle = _deploy(ray_session, "model-budget", replicas=1, max_models=2)
    yield handle
    serve.delete("model-budget")


def test_a_replica_over_its_budget_unloads_the_least_recently_used_preset(budget_of_two):
    handle = budget_of_two
    _render(handle, SLOW_PRESET).result(timeout_s=300)  # holds tiny (warm-up) and tiny-slow
    _render(handle, "tiny").result(timeout_s=300)  # tiny-slow is now the least recently used
    _render(handle, TWIN_PRESET).result(timeout_s=300)

    state = handle.model_state.remote().result(timeout_s=60)
    assert state["evictions"] == {SLOW_PRESET: 1}
    assert state["loaded"] == ["tiny", TWIN_PRESET]
    assert state["warm_preset"] == "tiny"


def test_loading_a_preset_does_not_hold_up_batches_of_a_loaded_one(budget_of_two):
    handle = budget_of_two
    _render(handle, "tiny").result(timeout_s=300)
    overlaps = []
    # tiny stays loaded; the other slot alternates, so each attempt loads a preset afresh.
    for preset in [SLOW_PRESET, TWIN_PRESET] * 3:
        before = handle.model_state.remote().result(timeout_s=60)
        assert preset not in before["loaded"]
        loading = _render(handle, preset)
        seen = wait_until(lambda: _loading_or_loaded(handle, preset), timeout=120, interval=0,
                          what=f"{preset} loading")
        if seen != "loading":
            loading.result(timeout_s=300)
            continue  # the load was over before a request could be sent during it
        _render(handle, "tiny").result(timeout_s=300)
        loading.result(timeout_s=300)
        state = handle.model_state.remote().result(timeout_s=60)
        new = [(n, event, name) for n, event, name in state["events"]
               if n > (before["events"][-1][0] if before["events"] else -1)]
        started = next(n for n, event, name in new if event == "load_started" and name == preset)
        finished = next(n for n, event, name in new if event == "load_finished" and name == preset)
        tiny_renders = [n for n, event, name in new if event == "render_started" and name == "tiny"]
        overlaps.append(any(started < n < finished for n in tiny_renders))
        if overlaps[-1]:
            break
    assert any(overlaps), f"no tiny batch started while another preset loaded ({overlaps})"


def _loading_or_loaded(handle, preset: str) -> str | None:
    state = handle.model_state.remote().result(timeout_s=60)
    if preset in state["loading"]:
        return "loading"
    return "loaded" if preset in state["loaded"] else None
