"""The OpenAI planner path on the real farm, against an OpenAI-compatible server on loopback:
a good answer becomes the storyboard; a malformed or refused one becomes a clear failed job;
a cancel while the model is still thinking ends the job cancelled and nothing lands later."""

from __future__ import annotations

import pytest

from tests.fake_openai import FakeOpenAI
from tests.jobs_helpers import get_job, start_job, wait_actor_gone, wait_for_status

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def fake_llm():
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def farm_overrides(fake_llm):
    return {"ai_api_key": "sk-test-key", "ai_model": "test-model",
            "ai_base_url": fake_llm.base_url(), "ai_timeout_seconds": 5.0}


@pytest.fixture
def alice(local_farm):
    with local_farm.client("alice") as client:
        yield client


def test_llm_storyboard(alice, fake_llm, local_farm):
    fake_llm.default_scenario = "ok"
    before = len(fake_llm.requests)
    job = wait_for_status(alice, start_job(alice, sceneCount=3, durationSeconds=14)["id"],
                          "storyboard_ready")
    scenes = job["storyboard"]["scenes"]
    assert [s["description"] for s in scenes][0].startswith("Scene 0: Acme Sparkling Water")
    assert sum(s["duration"] for s in scenes) == pytest.approx(12.0, abs=0.05)  # 14 s minus the CTA card
    assert all(s["image_url"] for s in scenes)
    request = fake_llm.requests[before]
    assert request["headers"]["authorization"] == "Bearer sk-test-key"
    assert request["body"]["model"] == "test-model"
    assert "Lime Fizz" in str(request["body"]["messages"])
    assert job["estimatedCost"] > 0


@pytest.mark.parametrize(("scenario", "code"), [("not-json", "planner_invalid_output"),
                                                ("missing-field", "planner_invalid_output"),
                                                ("refusal", "planner_refused"),
                                                ("unauthorized", "planner_unavailable")])
def test_bad_llm_answers_fail_the_job_clearly(alice, fake_llm, scenario, code):
    fake_llm.default_scenario = scenario
    job = wait_for_status(alice, start_job(alice)["id"], "failed")
    assert job["errorCode"] == code
    assert job["error"] and len(job["error"]) < 500
    assert job["storyboard"]["scenes"] == []
    if scenario == "unauthorized":
        assert "AI_API_KEY" in job["error"]


def test_cancel_while_the_storyboard_is_being_written(alice, fake_llm):
    fake_llm.default_scenario = "slow"
    job = wait_for_status(alice, start_job(alice)["id"], "storyboard_processing")
    # Not reviewable yet: approving or regenerating is refused and changes nothing.
    for body in ({"action": "approve"}, {"action": "regenerate_scene", "payload": {"sceneIdx": 0}}):
        assert alice.post(f"/api/v3/jobs/{job['id']}/actions", json=body).status_code == 409
    assert get_job(alice, job["id"])["status"] == "storyboard_processing"

    cancelled = alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "cancel"})
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"

    wait_actor_gone(job["id"])
    final = get_job(alice, job["id"])
    assert final["status"] == "cancelled" and final["storyboard"]["scenes"] == []
    fake_llm.default_scenario = "ok"
