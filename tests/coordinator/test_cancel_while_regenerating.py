"""A job that ends while one of its scenes regenerates does not leave that scene busy, and does
not block deleting its client or campaign (issue 8, item 10).

No Ray here: the job is taken to ``storyboard_ready`` by the job actor's own database layer
(``JobStore``), and a regeneration request only marks the scene (the ``api`` fixture has no
job runner to poke)."""

from __future__ import annotations

import asyncio
import io
import uuid

from PIL import Image

from actors.job_store import JobStore
from coordinator.job_states import JobStatus
from coordinator.planner import PlannedScene
from coordinator.storage import make_object_store
from tests.conftest import create_campaign, create_client
from tests.jobs_helpers import get_job, job_body


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 9), (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _storyboard_ready(settings, job_id: str, owner: str, scene_count: int) -> None:
    """What a job actor writes for a planned and rendered storyboard."""
    store = JobStore(settings, job_id)
    objects = make_object_store(settings)
    try:
        await store.transition(JobStatus.STORYBOARD_PROCESSING)
        planned = [PlannedScene(description=f"Scene {i}", script="Zing", shot_type="wide",
                                transition="cut", duration_s=2.0, image_prompt=f"a can, shot {i}")
                   for i in range(scene_count)]
        for scene in await store.save_storyboard(owner, planned, planner_cost=0.0):
            key = f"jobs/{job_id}/scenes/{scene.id}/image-v1.png"
            objects.put_bytes(key, _png(), "image/png")
            assert await store.record_image(scene.id, key=key, version=1, seconds=0.1, cost=0.0)
        await store.transition(JobStatus.STORYBOARD_READY)
    finally:
        await store.close()


async def _fail(settings, job_id: str) -> None:
    store = JobStore(settings, job_id)
    try:
        await store.fail("The renderer is gone", "render_failed")
    finally:
        await store.close()


def _job_under_review(api, http, owner: str) -> tuple[dict, dict, dict]:
    """A client, a campaign and a storyboard_ready job of theirs whose scene 0 regenerates."""
    client = create_client(http)
    campaign = create_campaign(http, client["id"])
    created = http.post("/api/v3/jobs", json=job_body(client["id"], campaign["id"], sceneCount=2))
    assert created.status_code == 201, created.text
    job_id = created.json()["data"]["id"]
    asyncio.run(_storyboard_ready(api.settings, job_id, owner, scene_count=2))
    regenerate = http.post(f"/api/v3/jobs/{job_id}/actions",
                           json={"action": "regenerate_scene", "payload": {"sceneIdx": 0}})
    assert regenerate.status_code == 200, regenerate.text
    job = get_job(http, job_id)
    assert [s["status"] for s in job["storyboard"]["scenes"]] == ["regenerating", "image_ready"]
    return client, campaign, job


def test_cancel_ends_the_regeneration_and_frees_the_client(api):
    owner = f"regen-cancel-{uuid.uuid4().hex[:8]}"
    with api.client(owner) as http:
        client, campaign, job = _job_under_review(api, http, owner)

        cancel = http.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "cancel"})
        assert cancel.status_code == 200, cancel.text

        after = get_job(http, job["id"])
        assert after["status"] == "cancelled"
        # The regenerating scene is back where it stood: its previous image is still there.
        assert [s["status"] for s in after["storyboard"]["scenes"]] == ["image_ready", "image_ready"]
        assert http.delete(f"/api/v3/campaigns/{campaign['id']}").status_code == 200
        assert http.delete(f"/api/v3/clients/{client['id']}").status_code == 200
        assert http.get(f"/api/v3/jobs/{job['id']}").status_code == 404


def test_a_job_failed_mid_regeneration_does_not_block_deleting_its_client(api):
    """The "jobs in progress" check counts a regenerating scene only of a job under review."""
    owner = f"regen-fail-{uuid.uuid4().hex[:8]}"
    with api.client(owner) as http:
        client, _campaign, job = _job_under_review(api, http, owner)
        asyncio.run(_fail(api.settings, job["id"]))
        assert get_job(http, job["id"])["status"] == "failed"

        response = http.delete(f"/api/v3/clients/{client['id']}")
        assert response.status_code == 200, response.text


def test_a_regeneration_under_review_still_blocks_deleting_its_client(api):
    owner = f"regen-busy-{uuid.uuid4().hex[:8]}"
    with api.client(owner) as http:
        client, _campaign, _job = _job_under_review(api, http, owner)
        response = http.delete(f"/api/v3/clients/{client['id']}")
        assert response.status_code == 409 and response.json()["code"] == "jobs_in_progress"
