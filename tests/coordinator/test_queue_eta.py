"""Job priority, queue position and estimated completion, at the API (no Ray): the job rows are
moved on by the job actor's own database layer (``actors.job_store``), as a real run leaves them.

Estimates are compared between jobs of one listing (worked out at one instant), so no assertion
depends on how long the test takes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest

from actors.job_store import JobStore
from coordinator.job_states import JobStatus
from coordinator.planner import PlannedScene
from models.presets import get_preset
from tests.conftest import create_client
from tests.jobs_helpers import job_body

TINY = get_preset("tiny").estimate  # 0.1 s per image, 0.5 s per clip


@pytest.fixture
def users(api):
    clients = []

    def make(prefix: str):
        owner = f"{prefix}-{uuid.uuid4().hex[:6]}"
        client = api.client(owner)
        clients.append(client)
        return owner, client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def jobs_to_end(api):
    """Jobs cancelled after the test, so later tests see no queue of ours."""
    made: list[tuple] = []
    yield made
    for http, job_id in made:
        http.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "cancel"})


def _create(http, jobs_to_end, priority: str | None = None, **advanced) -> dict:
    body = job_body(create_client(http)["id"], preset="tiny", **advanced)
    if priority:
        body["priority"] = priority
    response = http.post("/api/v3/jobs", json=body)
    assert response.status_code == 201, response.text
    jobs_to_end.append((http, response.json()["data"]["id"]))
    return response.json()["data"]


def _listing(http) -> dict[str, dict]:
    response = http.get("/api/v3/jobs")
    assert response.status_code == 200, response.text
    return {job["id"]: job for job in response.json()["data"]}


def _eta(job: dict) -> datetime:
    return datetime.fromisoformat(job["progress"]["estimatedCompletionAt"])


def _seconds_between(earlier: dict, later: dict) -> float:
    return (_eta(later) - _eta(earlier)).total_seconds()


def _run(coroutine) -> None:
    asyncio.run(coroutine)


async def _record_renders(settings, job_id: str, kind: str, seconds: list[float]) -> None:
    store = JobStore(settings, job_id)
    try:
        for value in seconds:
            await store.record_usage(kind, seconds=value, cost=0.0)
    finally:
        await store.close()


async def _plan_and_render_one(settings, job_id: str, owner: str, *, seconds: float) -> None:
    """The job actor's writes once a 3-scene storyboard is planned and scene 0's image done."""
    store = JobStore(settings, job_id)
    try:
        await store.transition(JobStatus.STORYBOARD_PROCESSING)
        planned = [PlannedScene(description=f"Scene {i}", script="Zing", shot_type="wide",
                                transition="cut", duration_s=2.0, image_prompt=f"a can, shot {i}")
                   for i in range(3)]
        scenes = await store.save_storyboard(owner, planned, planner_cost=0.0)
        assert await store.record_image(scenes[0].id, key=f"jobs/{job_id}/scene-0.png",
                                        version=1, seconds=seconds, cost=0.0)
    finally:
        await store.close()


def test_priority_is_stored_and_shown_and_bad_values_are_refused(api, users, jobs_to_end):
    _, http = users("ann")
    high = _create(http, jobs_to_end, priority="high")
    default = _create(http, jobs_to_end)
    listing = _listing(http)
    assert listing[high["id"]]["priority"] == "high"
    assert listing[default["id"]]["priority"] == "normal"

    client_id = create_client(http)["id"]
    response = http.post("/api/v3/jobs", json=job_body(client_id) | {"priority": "urgent"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] and response.json()["data"] is None
    assert set(_listing(http)) == {high["id"], default["id"]}  # nothing stored


def test_queue_position_counts_jobs_served_first(api, users, jobs_to_end):
    _, ann = users("ann")
    _, bob = users("bob")
    ann_normal = _create(ann, jobs_to_end)
    bob_normal = _create(bob, jobs_to_end)
    bob_high = _create(bob, jobs_to_end, priority="high")

    bobs = _listing(bob)
    assert bobs[bob_high["id"]]["progress"]["queuePosition"] == 0
    # Ann's earlier normal job and Bob's own high one are served before Bob's normal one.
    assert bobs[bob_normal["id"]]["progress"]["queuePosition"] == 2
    assert _listing(ann)[ann_normal["id"]]["progress"]["queuePosition"] == 1
    # Bob's normal job waits for its own 3 images plus the 3 of each job ahead; the high one
    # only for its own (the preset's estimate while nothing is measured).
    assert _seconds_between(bobs[bob_high["id"]], bobs[bob_normal["id"]]) == pytest.approx(
        6 * TINY.image_seconds_per_scene, abs=1e-3)


def test_estimate_uses_measured_seconds_and_tightens_as_scenes_finish(api, users, jobs_to_end):
    # Runs after the test above: until now this farm had measured no tiny renders.
    owner, http = users("cy")
    # This farm measured 2 s per tiny image on average (on a job since cancelled).
    measured = _create(http, jobs_to_end)
    _run(_record_renders(api.settings, measured["id"], "image", [1.5, 2.5]))
    assert http.post(f"/api/v3/jobs/{measured['id']}/actions",
                     json={"action": "cancel"}).status_code == 200

    high = _create(http, jobs_to_end, priority="high")
    normal = _create(http, jobs_to_end)
    listing = _listing(http)
    assert listing[normal["id"]]["progress"]["queuePosition"] == 1
    # The normal job finishes after the high one by its own 3 images, at the measured 2 s
    # each (the preset's estimate, 0.1 s, no longer counts).
    assert _seconds_between(listing[high["id"]], listing[normal["id"]]) == pytest.approx(
        3 * 2.0, abs=1e-3)

    # Its storyboard is planned and one of its 3 images is done, in 1 s: its own pace now
    # counts, for the 2 images left.
    _run(_plan_and_render_one(api.settings, normal["id"], owner, seconds=1.0))
    listing = _listing(http)
    assert listing[normal["id"]]["status"] == "storyboard_processing"
    assert _seconds_between(listing[high["id"]], listing[normal["id"]]) == pytest.approx(
        2 * 1.0, abs=1e-3)


def test_jobs_not_rendering_carry_no_estimate(api, users, jobs_to_end):
    _, http = users("dee")
    job = _create(http, jobs_to_end)
    assert http.post(f"/api/v3/jobs/{job['id']}/actions",
                     json={"action": "cancel"}).status_code == 200
    progress = http.get(f"/api/v3/jobs/{job['id']}").json()["data"]["progress"]
    assert progress["queuePosition"] is None and progress["estimatedCompletionAt"] is None
