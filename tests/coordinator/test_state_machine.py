"""The job state machine from every state: each action (approve, cancel, regenerate_scene) and
each scene route (edit, delete, regenerate) either makes its allowed change or answers 409
``illegal_state`` and leaves every stored thing as it was. A change to a completed job's scenes
reopens it for review as a revision, its video still served; cancelling the revision brings it
back to completed with that video. Jobs are put into each state through the job actor's own
database writes (``tests.jobs_helpers.advance_job``), without Ray."""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from actors.job_store import JobStore
from coordinator.job_states import (ALLOWED, REVISION, REVISION_CANCELLED_MESSAGE,
                                     REVISION_NOTE, REVISION_REVIEW_MESSAGE, TERMINAL,
                                     IllegalTransition, JobStatus)
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
# The moves only a revision makes: a scene change reopens a completed job, a cancel under
# review abandons the revision (while it renders, cancel takes video_processing -> completed).
REVISION_MOVES = {S.COMPLETED: {S.STORYBOARD_READY}, S.STORYBOARD_READY: {S.COMPLETED}}

# What a person may ask of a job in each state; every other request is a 409.
REVIEW = {"regenerate_scene", "edit_scene", "delete_scene", "regenerate_scene_route"}
ALLOWED_REQUESTS = {
    S.PENDING: {"cancel"},
    S.STORYBOARD_PROCESSING: {"cancel"},
    S.STORYBOARD_READY: {"approve", "cancel"} | REVIEW,
    S.VIDEO_PROCESSING: {"cancel"},
    S.COMPLETED: REVIEW,  # starts a revision
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
    if status == S.COMPLETED:
        check_revision_opened(before, after, name)
    else:
        assert job_after["status"] == status.value
    first_before, first_after = scenes_before[0], scenes_after[0] if scenes_after else None
    if name == "delete_scene":
        assert [s["id"] for s in scenes_after] == [s["id"] for s in scenes_before[1:]]
        assert [s["scene_idx"] for s in scenes_after] == list(range(len(scenes_after)))
        deleted = {first_before["image_key"], first_before["clip_key"]} - {None}
        assert not deleted & after["objects"]
        assert after["objects"] == before["objects"] - deleted
        return
    assert first_after["id"] == first_before["id"]
    assert scenes_after[1:] == scenes_before[1:]
    if name == "edit_scene":
        assert data["script"] == first_after["script"] == NEW_SCRIPT
    else:
        assert first_after["status"] == "regenerating"
        assert first_after["regenerate_feedback"] == "warmer"
        assert first_after["image_key"] == first_before["image_key"]  # the new one comes later


def check_revision_opened(before: dict, after: dict, name: str) -> None:
    """A completed job reopened for review: the next revision, the delivered video (row, object,
    URL) untouched, and the progress saying a revision is under way."""
    job_before, job_after = before["rows"]["job"][0], after["rows"]["job"][0]
    assert job_after["status"] == after["view"]["status"] == S.STORYBOARD_READY.value
    assert (job_before["revision"], job_after["revision"]) == (0, 1)
    for column in ("video_key", "thumbnail_key", "completed_at", "video_duration_s"):
        assert job_after[column] == job_before[column], column
    assert job_after["approved_at"] is None  # the revision waits for its own approval
    assert job_before["video_key"] in after["objects"]
    assert after["view"]["videoUrl"] == before["view"]["videoUrl"] is not None
    assert REVISION_NOTE in after["view"]["progress"]["message"]
    if name.startswith("regenerate"):
        assert after["view"]["progress"]["stage"] == "regenerating_scene"
    else:
        assert after["view"]["progress"]["message"] == REVISION_REVIEW_MESSAGE
    # Review runs again and what follows it is to do again; the storyboard and images stand.
    stages = [(stage["name"], stage["status"]) for stage in after["view"]["stages"]]
    assert stages[:2] == [(stage["name"], stage["status"]) for stage in before["view"]["stages"][:2]]
    assert stages[2:] == [("review", "running"), ("clips", "pending"), ("compositing", "pending"),
                          ("upload", "pending")]


def test_job_states_table_is_the_contract():
    assert set(ALLOWED) == set(JobStatus) == set(TRANSITIONS) == set(ALLOWED_REQUESTS)
    assert {status: set(moves) for status, moves in REVISION.items()} == REVISION_MOVES
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



@pytest.mark.parametrize("approved", [False, True], ids=["in_review", "rendering"])
def test_cancelling_a_revision_keeps_the_previous_video(alice, api, approved):
    """A revision abandoned under review or while it renders: the job is completed again with
    the video, thumbnail, duration and delivery time it had, still downloadable; the scene keeps
    its edit. Another user cannot start a revision (404, nothing changed)."""
    job_id = job_in(alice, api.settings, create_client(alice)["id"], S.COMPLETED)
    delivered = snapshot(alice, api.settings, job_id)
    video = alice.get(f"/api/v3/jobs/{job_id}/video")
    metadata = alice.get(f"/api/v3/jobs/{job_id}/metadata").json()["data"]
    assert video.status_code == 200 and metadata["jobId"] == job_id
    scene_id = delivered["view"]["storyboard"]["scenes"][0]["id"]

    with api.client(f"other-{uuid.uuid4().hex[:8]}") as other:
        for name in sorted(REVIEW):
            response = send(other, name, job_id, scene_id)
            assert response.status_code == 404, (name, response.text)
    assert snapshot(alice, api.settings, job_id) == delivered

    assert send(alice, "edit_scene", job_id, scene_id).status_code == 200
    if approved:
        approve = send(alice, "approve", job_id, None)
        assert approve.status_code == 200 and approve.json()["data"]["status"] == "video_processing"
    during = alice.get(f"/api/v3/jobs/{job_id}/video")
    assert during.status_code == 200 and during.content == video.content
    assert alice.get(f"/api/v3/jobs/{job_id}/metadata").json()["data"] == metadata

    cancelled = send(alice, "cancel", job_id, None)
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "completed"
    after = snapshot(alice, api.settings, job_id)
    job_before, job_after = delivered["rows"]["job"][0], after["rows"]["job"][0]
    assert job_after["status"] == after["view"]["status"] == "completed"
    for column in ("video_key", "thumbnail_key", "completed_at", "video_duration_s"):
        assert job_after[column] == job_before[column], column
    assert after["view"]["videoUrl"] == delivered["view"]["videoUrl"]
    assert after["view"]["progress"]["message"] == REVISION_CANCELLED_MESSAGE
    assert after["objects"] == delivered["objects"]
    assert after["rows"]["scenes"][0]["script"] == NEW_SCRIPT
    assert alice.get(f"/api/v3/jobs/{job_id}/video").content == video.content
    # Abandoned, not pending: approving again or cancelling again is refused.
    for name in ("approve", "cancel"):
        response = send(alice, name, job_id, None)
        assert response.status_code == 409 and response.json()["code"] == "illegal_state"


def test_an_edit_that_changes_nothing_leaves_a_completed_job_completed(alice, api):
    """An empty PUT, or one repeating the scene's own values, is not a revision: the job keeps
    its status, revision and rows. A real change still starts one."""
    job_id = job_in(alice, api.settings, create_client(alice)["id"], S.COMPLETED)
    delivered = snapshot(alice, api.settings, job_id)
    scene = delivered["view"]["storyboard"]["scenes"][0]
    url = f"/api/v3/jobs/{job_id}/scenes/{scene['id']}"
    same = {"script": scene["script"], "duration": scene["duration"],
            "transition": scene["transition"]}
    for body in ({}, same):
        response = alice.put(url, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["data"]["script"] == scene["script"]
        assert snapshot(alice, api.settings, job_id) == delivered, body
    changed = alice.put(url, json={"script": scene["script"] + " Now with lime."})
    assert changed.status_code == 200
    reopened = alice.get(f"/api/v3/jobs/{job_id}").json()["data"]
    assert reopened["status"] == "storyboard_ready"
    assert database_rows(api.settings, job_id)["job"][0]["revision"] == \
        delivered["rows"]["job"][0]["revision"] + 1
