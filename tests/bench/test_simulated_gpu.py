"""The benchmarks' simulated GPU is wired as the benchmarks assume: its cost model adds up,
``serve_app.build_app`` binds it in place of the real renderers when asked (and only then), and
it is never something a user can pick as a preset. Nothing here takes its output as evidence
that rendering works."""

from __future__ import annotations

import pytest

from bench.simulated_gpu import (PROFILES, DeviceCost, SimulatedClipRenderer,
                                 SimulatedImageRenderer, simulated_renderers)
from models.presets import list_presets
from tests.conftest import create_client


@pytest.fixture
def api_settings(tmp_path):
    from coordinator.settings import Settings

    return Settings(renderfarm_home=tmp_path / "home")


def test_cost_is_a_fixed_part_per_call_plus_a_part_per_item():
    cost = DeviceCost(per_call_s=0.1, per_item_s=0.107)
    assert cost.seconds(1) == pytest.approx(0.207)
    assert cost.seconds(4) == pytest.approx(0.528)
    # Four images one by one hold the device 4 x 0.207 s; batched, 0.528 s.
    assert cost.batch_speedup(4) == pytest.approx(4 * 0.207 / 0.528)
    with pytest.raises(ValueError):
        cost.seconds(0)


def test_published_single_image_figure_is_what_one_sdxl_turbo_image_costs():
    # 207 ms for one 512x512 SDXL-Turbo image on an A100 (cited in bench/simulated_gpu.py).
    assert PROFILES["sdxl-turbo-svd"].image.seconds(1) == pytest.approx(0.207)
    assert PROFILES["sdxl-turbo-svd"].cost("clip").seconds(1) == pytest.approx(40.0)
    with pytest.raises(ValueError):
        PROFILES["sdxl-turbo-svd"].cost("audio")


def _bound_renderers(app) -> dict[str, object]:
    """The deployment classes bound into the Api application, by deployment name."""
    from ray.serve._private.build_app import build_app as flatten

    built = flatten(app, name="bench-check")
    return {deployment.name: deployment.func_or_class for deployment in built.deployments}


def test_build_app_binds_the_simulated_renderers_when_asked(api_settings):
    from serve_app import build_app

    simulated = _bound_renderers(build_app(api_settings, render_gpus=0,
                                           renderers=simulated_renderers()))
    assert simulated["ImageRenderer"] is SimulatedImageRenderer.func_or_class
    assert simulated["ClipRenderer"] is SimulatedClipRenderer.func_or_class
    # Without the argument the real renderers are bound: every farm test runs that path (and
    # importing them here would cost this test torch's import).

    with pytest.raises(ValueError, match="AudioRendererX"):
        build_app(api_settings, render_gpus=0, renderers={"AudioRendererX": object()})


def test_the_simulated_gpu_is_not_a_preset_a_user_can_pick(alice):
    # Its cost profiles stand for shipped presets; it adds no preset of its own.
    assert set(PROFILES) <= set(list_presets())
    listed = alice.get("/api/v3/presets")
    assert listed.status_code == 200
    names = {preset["name"] for preset in listed.json()["data"]["presets"]}
    assert names == set(list_presets())
    assert not any("sim" in name for name in names)

    client_id = create_client(alice)["id"]
    for name in ("simulated-gpu", "SimulatedImageRenderer", "sim"):
        response = alice.post("/api/v3/jobs/dry-run", json={
            "context": {"clientId": client_id},
            "adBasics": {"product": "Lime Fizz", "targetAudience": "runners",
                         "keyMessage": "Zero sugar", "callToAction": "Grab a can"},
            "advanced": {"sceneCount": 3, "durationSeconds": 8, "preset": name}})
        assert response.status_code == 400, response.text
        assert response.json()["data"] is None
