"""The job state machine from every state: each action (approve, cancel, regenerate_scene) and
each scene route (edit, delete, regenerate) either makes its allowed change or answers 409
``illegal_state`` and leaves every stored thing as it was. Jobs are put into each state through
the job actor's own database writes (``tests.jobs_helpers.advance_job``), without Ray."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from actors.job_store import JobStore
from coordinator.job_states import ALLOWED, TERMINAL, IllegalTransition, JobStatus
from tests.conftest import create_client
from tests.jobs_helpers import advance_job, database_rows, job_body, job_object_keys

S = JobStatus

# The contract written out by hand, so a change to coordinator.job_states has to change it too.
TRANSITIONS = {
    S.PENDING: {S.STORYBOARD_PROCESSING, S.CANCELLED, S.FAILED},
    S.STORYBOARD_PROCESSING: {S.STORYBOARD_READY, S.CANCELLED, S.FAILED},
    S.STORYBOARD_READY: {S.VIDEO_PROCESSING, S.CANCELLED, S.FAILED},
    S.VIDEO_PROCESSING: {S.COMPLETED, S.CANCELLED, S.FAILED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}

# What a person may ask of a job in each state; every other request is a 409.
REVIEW = {"regenerate_scene", "edit_scene", "delete_scene", "regenerate_scene_route"}
ALLOWED_REQUESTS = {
    S.PENDING: {"cancel"},
    S.STORYBOARD_PROCESSING: {"cancel"},
    S.STORYBOARD_READY: {"approve", "cancel"} | REVIEW,
    S.VIDEO_PROCESSING: {"cancel"},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}

NEW_SCRIPT = "A brand new line for the first scene"


def send(http: httpx.Client, name: str, job_id: str, scene_id: str | None) -> httpx.Response:
    base = f"/api/v3/jobs/{job_id}"
    scene = f"{base}/scenes/{scene_id}"
    if name in ("approve", "cancel"):
        return http.post(f"{base}/actions", json={"action": name})
    if name == "regenerate_scene":
        return http.post(f"{base}/actions", json={"action": "regenerate_scene",
                                                  "payload": {"sceneIdx": 0, "feedback": "warmer"}})
    if name == "edit_scene":
        return http.put(scene, json={"script": NEW_SCRIPT})
    if name == "delete_scene":
        return http.delete(scene)
    assert name == "regenerate_scene_route"
    return http.post(f"{scene}/regenerate", json={"feedback": "warmer"})


REQUESTS = ["approve", "cancel", "regenerate_scene", "edit_scene", "delete_scene",
            "regenerate_scene_route"]
SUCCESS_CODE = {"approve": 200, "cancel": 200, "regenerate_scene": 200, "edit_scene": 200,
                "delete_scene": 200, "regenerate_scene_route": 202}


def job_in(http: httpx.Client, settings, client_id: str, status: JobStatus) -> str:
    created = http.post("/api/v3/jobs", json=job_body(client_id))
    assert created.status_code == 201, created.text
    job_id = created.json()["data"]["id"]
    advance_job(settings, job_id, status.value)
    return job_id


def snapshot(http: httpx.Client, settings, job_id: str) -> dict:
    """What the owner sees and what is stored: rows (``updated_at`` included), ledger, objects."""
    view = http.get(f"/api/v3/jobs/{job_id}").json()["data"]
    for field in ("videoUrl", "thumbnailUrl"):  # a presigned URL is signed anew on every read
        if view[field]:
            view[field] = urlsplit(view[field])._replace(query="").geturl()
    if view["progress"]:  # "now plus the work left": it moves with the clock, not the job
        view["progress"].pop("estimatedCompletionAt", None)
    return {"view": view, "rows": database_rows(settings, job_id),
            "objects": job_object_keys(settings, job_id)}


def check_allowed_effect(name: str, status: JobStatus, before: dict, after: dict,
                         data: dict) -> None:
    job_before, job_after = before["rows"]["job"][0], after["rows"]["job"][0]
    scenes_before, scenes_after = before["rows"]["scenes"], after["rows"]["scenes"]
    if name in ("approve", "cancel"):
        target = S.VIDEO_PROCESSING if name == "approve" else S.CANCELLED
        assert data["status"] == job_after["status"] == after["view"]["status"] == target.value
        assert scenes_after == scenes_before
        if name == "approve":
            assert job_after["approved_at"] is not None and job_before["approved_at"] is None
        return
    assert job_after["status"] == status.value
    first_before, first_after = scenes_before[0], scenes_after[0] if scenes_after else None
    if name == "delete_scene":
        assert [s["id"] for s in scenes_after] == [s["id"] for s in scenes_before[1:]]
        assert [s["scene_idx"] for s in scenes_after] == list(range(len(scenes_after)))
        assert first_before["image_key"] not in after["objects"]
        assert after["objects"] == before["objects"] - {first_before["image_key"]}
        return
    assert first_after["id"] == first_before["id"]
    assert scenes_after[1:] == scenes_before[1:]
    if name == "edit_scene":
        assert data["script"] == first_after["script"] == NEW_SCRIPT
    else:
        assert first_after["status"] == "regenerating"
        assert first_after["regenerate_feedback"] == "warmer"
        assert first_after["image_key"] == first_before["image_key"]  # the new one comes later


def test_job_states_table_is_the_contract():
    assert set(ALLOWED) == set(JobStatus) == set(TRANSITIONS) == set(ALLOWED_REQUESTS)
    for status in JobStatus:
        assert ALLOWED[status] == TRANSITIONS[status], status
        assert (status in TERMINAL) == (not ALLOWED[status]), status
        # The actions that move a job are exactly its allowed transitions.
        assert ("approve" in ALLOWED_REQUESTS[status]) == (S.VIDEO_PROCESSING in ALLOWED[status])
        assert ("cancel" in ALLOWED_REQUESTS[status]) == (S.CANCELLED in ALLOWED[status])


@pytest.mark.parametrize("current", list(JobStatus), ids=lambda s: s.value)
def test_transition_refuses_every_move_not_in_the_table(api, current):
    """``transition()`` on a real row, from each state to every state it may not reach: a 409
    ``illegal_state`` and the row untouched."""
    with api.client(f"owner-{uuid.uuid4().hex[:8]}") as owner:
        job_id = job_in(owner, api.settings, create_client(owner)["id"], current)
    before = database_rows(api.settings, job_id)

    async def attempt(target: JobStatus) -> IllegalTransition:
        store = JobStore(api.settings, job_id)
        try:
            with pytest.raises(IllegalTransition) as refused:
                await store.transition(target)
            return refused.value
        finally:
            await store.close()

    for target in set(JobStatus) - TRANSITIONS[current]:
        refused = asyncio.run(attempt(target))
        assert (refused.status, refused.code, refused.current) == (409, "illegal_state",
                                                                   current.value)
        assert database_rows(api.settings, job_id) == before, (current, target)


@pytest.mark.parametrize("status", list(JobStatus), ids=lambda s: s.value)
def test_every_request_in_every_state(alice, api, status):
    client_id = create_client(alice)["id"]
    allowed = ALLOWED_REQUESTS[status]

    job_id = job_in(alice, api.settings, client_id, status)
    before = snapshot(alice, api.settings, job_id)
    assert before["view"]["status"] == status.value
    scenes = before["view"]["storyboard"]["scenes"]
    # A pending job has no storyboard yet, so there is no scene to address.
    assert bool(scenes) == (status != S.PENDING)
    scene_id = scenes[0]["id"] if scenes else None
    for name in REQUESTS:
        if name in allowed or (scene_id is None and name in REVIEW - {"regenerate_scene"}):
            continue
        response = send(alice, name, job_id, scene_id)
        assert response.status_code == 409, (status, name, response.text)
        body = response.json()
        assert body["code"] == "illegal_state" and body["data"] is None, (status, name, body)
        assert status.value in body["error"], (status, name, body)
        assert snapshot(alice, api.settings, job_id) == before, (status, name)

    for name in sorted(allowed):  # each on a job of its own: it changes the job
        job_id = job_in(alice, api.settings, client_id, status)
        before = snapshot(alice, api.settings, job_id)
        scene_id = before["view"]["storyboard"]["scenes"][0]["id"] if name in REVIEW else None
        response = send(alice, name, job_id, scene_id)
        assert response.status_code == SUCCESS_CODE[name], (status, name, response.text)
        after = snapshot(alice, api.settings, job_id)
        check_allowed_effect(name, status, before, after, response.json()["data"])

