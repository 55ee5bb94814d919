"""The owner's ``retry`` action (an extension of the spec's job actions): a failed job goes back
to the processing state of the step that failed, with its error cleared and every finished
image and clip kept; from any other state it is a 409 that changes nothing. Jobs are put into
each state through the job actor's own database writes, without Ray."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from actors.job_store import JobStore
from coordinator.job_states import JobStatus
from tests.conftest import create_client
from tests.jobs_helpers import advance_job, database_rows, job_body, job_object_keys

RETRY = {"action": "retry"}


def new_job(http: httpx.Client, settings, status: str) -> str:
    client_id = create_client(http)["id"]
    created = http.post("/api/v3/jobs", json=job_body(client_id))
    assert created.status_code == 201, created.text
    job_id = created.json()["data"]["id"]
    advance_job(settings, job_id, status)
    return job_id


def fail_during_storyboard(settings, job_id: str) -> None:
    """A storyboard left half rendered (one scene image of three), then failed."""
    advance_job(settings, job_id, "storyboard_processing")

    async def fail() -> None:
        store = JobStore(settings, job_id)
        try:
            await store.fail("Rendering the image of scene 1 failed: out of memory",
                             "render_failed")
        finally:
            await store.close()

    asyncio.run(fail())


def retry(http: httpx.Client, job_id: str) -> httpx.Response:
    return http.post(f"/api/v3/jobs/{job_id}/actions", json=RETRY)


def test_retry_after_approval_resumes_the_video_keeping_every_image(alice, api):
    job_id = new_job(alice, api.settings, "failed")  # failed while rendering clips
    before = database_rows(api.settings, job_id)
    failed = alice.get(f"/api/v3/jobs/{job_id}").json()["data"]
    assert failed["status"] == "failed" and failed["errorCode"] == "render_failed"

    response = retry(alice, job_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"]["status"] == "video_processing" and body["error"] is None

    job = alice.get(f"/api/v3/jobs/{job_id}").json()["data"]
    assert job["status"] == "video_processing"
    assert job["error"] is None and job["errorCode"] is None
    assert job["progress"]["stage"] == "clip_rendering"
    assert [s["image_url"] for s in job["storyboard"]["scenes"]] == \
        [s["image_url"] for s in failed["storyboard"]["scenes"]]
    after = database_rows(api.settings, job_id)
    assert after["scenes"] == before["scenes"] and after["usage"] == before["usage"]
    assert after["job"][0]["approved_at"] == before["job"][0]["approved_at"]


def test_retry_before_approval_resumes_the_storyboard(alice, api):
    job_id = new_job(alice, api.settings, "pending")
    fail_during_storyboard(api.settings, job_id)
    before = database_rows(api.settings, job_id)
    objects = job_object_keys(api.settings, job_id)
    assert sum(1 for s in before["scenes"] if s["image_key"]) == 1

    response = retry(alice, job_id)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "storyboard_processing"
    after = database_rows(api.settings, job_id)
    assert after["job"][0]["status"] == "storyboard_processing"
    assert after["job"][0]["error"] is None and after["job"][0]["error_code"] is None
    assert after["scenes"] == before["scenes"]  # the finished image stays; the actor skips it
    assert job_object_keys(api.settings, job_id) == objects


@pytest.mark.parametrize("status", [s.value for s in JobStatus if s != JobStatus.FAILED])
def test_retry_is_refused_unless_failed(alice, api, status):
    job_id = new_job(alice, api.settings, status)
    before = database_rows(api.settings, job_id)
    response = retry(alice, job_id)
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "illegal_state" and body["data"] is None and status in body["error"]
    assert database_rows(api.settings, job_id) == before


def test_a_retried_job_cannot_be_retried_again_and_approve_never_revives_a_failed_job(alice, api):
    job_id = new_job(alice, api.settings, "failed")
    approve = alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "approve"})
    assert approve.status_code == 409 and approve.json()["code"] == "illegal_state"
    assert retry(alice, job_id).status_code == 200
    again = retry(alice, job_id)
    assert again.status_code == 409 and "video_processing" in again.json()["error"]


def test_only_the_owner_can_retry(alice, bob, api):
    job_id = new_job(alice, api.settings, "failed")
    before = database_rows(api.settings, job_id)
    response = retry(bob, job_id)
    assert response.status_code == 404
    assert database_rows(api.settings, job_id) == before


def test_unknown_action_is_still_a_400(alice, api):
    job_id = new_job(alice, api.settings, "failed")
    response = alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "resurrect"})
    assert response.status_code == 400 and response.json()["code"] == "validation_error"
