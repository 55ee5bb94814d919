"""Faults on the real farm: a job actor or a renderer replica dies mid-job, and the job still
finishes without rendering finished scenes or clips again. Uses the ``tiny-slow`` preset so
renders last long enough to be interrupted."""

from __future__ import annotations

import pytest
import ray

from actors.job_actor import ACTOR_NAMESPACE, actor_name
from tests.conftest import SLOW_PRESET
from tests.jobs_helpers import renders_per_scene, start_job, wait_for, wait_for_status

pytestmark = pytest.mark.ray


@pytest.fixture
def alice(local_farm):
    with local_farm.client("alice") as client:
        yield client


def kill_job_actor(job_id: str) -> None:
    """Kills the actor process; Ray restarts it (max_restarts) as it would after a crash."""
    ray.kill(ray.get_actor(actor_name(job_id), namespace=ACTOR_NAMESPACE), no_restart=False)


def kill_replicas(app_name: str, deployment: str) -> int:
    """Kills every replica of a Serve deployment; Serve's controller starts new ones."""
    killed = 0
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"{app_name}#{deployment}#" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            killed += 1
    return killed


def _statuses(job: dict) -> list[str]:
    return [scene["status"] for scene in job["storyboard"]["scenes"]]


def test_job_actor_killed_mid_storyboard(alice, local_farm):
    created = start_job(alice, sceneCount=8, durationSeconds=14, preset=SLOW_PRESET)
    partial = wait_for(lambda j: "image_ready" in _statuses(j) and "pending" in _statuses(j),
                       alice, created["id"], what="some but not all scene images")
    finished = {s["id"]: s["image_url"] for s in partial["storyboard"]["scenes"]
                if s["status"] == "image_ready"}
    kill_job_actor(created["id"])

    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    scenes = {s["id"]: s for s in job["storyboard"]["scenes"]}
    assert len(scenes) == 8 and all(s["image_url"] for s in scenes.values())
    counts = renders_per_scene(local_farm.settings, created["id"], "image")
    for scene_id, url in finished.items():
        assert counts[scene_id] == 1, "a finished scene was rendered again"
        assert scenes[scene_id]["image_url"] == url


def test_image_replica_killed_mid_job(alice, local_farm):
    created = start_job(alice, sceneCount=8, durationSeconds=14, preset=SLOW_PRESET)
    wait_for(lambda j: j["progress"] and j["progress"]["stage"] == "image_generation"
             and "pending" in _statuses(j), alice, created["id"], what="images rendering")
    assert kill_replicas(local_farm.app_name, "ImageRenderer") >= 1
    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    assert all(s["image_url"] for s in job["storyboard"]["scenes"])


def test_job_actor_killed_during_video_processing(alice, local_farm):
    created = start_job(alice, sceneCount=4, durationSeconds=10, preset=SLOW_PRESET)
    wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    alice.post(f"/api/v3/jobs/{created['id']}/actions", json={"action": "approve"})
    partial = wait_for(lambda j: "clip_ready" in _statuses(j) and "image_ready" in _statuses(j),
                       alice, created["id"], timeout=240, what="some but not all clips")
    finished = [s["id"] for s in partial["storyboard"]["scenes"] if s["status"] == "clip_ready"]
    kill_job_actor(created["id"])

    job = wait_for_status(alice, created["id"], "completed", timeout=300)
    assert job["videoUrl"]
    counts = renders_per_scene(local_farm.settings, created["id"], "clip")
    for scene_id in finished:
        assert counts[scene_id] == 1, "a finished clip was rendered again"
    assert set(counts) == {s["id"] for s in job["storyboard"]["scenes"]}


def test_clip_replica_killed_mid_render(alice, local_farm):
    created = start_job(alice, sceneCount=3, durationSeconds=9, preset=SLOW_PRESET,
                        autoApprove=True)
    wait_for(lambda j: j["status"] == "video_processing" and "image_ready" in _statuses(j),
             alice, created["id"], timeout=240, what="clips rendering")
    assert kill_replicas(local_farm.app_name, "ClipRenderer") >= 1
    job = wait_for_status(alice, created["id"], "completed", timeout=300)
    assert job["videoUrl"] and job["actualCost"] > 0


def test_orphaned_job_is_resumed_by_the_supervisor(alice, local_farm):
    """An actor that is gone for good (as after a whole-cluster restart) is replaced: the API's
    supervisor finds the job still processing in the database and starts a new actor."""
    created = start_job(alice, sceneCount=6, durationSeconds=10, preset=SLOW_PRESET)
    wait_for(lambda j: j["status"] == "storyboard_processing", alice, created["id"],
             what="processing")
    ray.kill(ray.get_actor(actor_name(created["id"]), namespace=ACTOR_NAMESPACE), no_restart=True)
    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    assert all(s["image_url"] for s in job["storyboard"]["scenes"])


def test_review_actions_wait_for_a_running_regeneration(alice, local_farm):
    """While a scene regenerates, a second regeneration, an edit, a delete and the approval
    are refused with 409, and nothing changes."""
    created = start_job(alice, sceneCount=2, durationSeconds=6, preset=SLOW_PRESET)
    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    scene = job["storyboard"]["scenes"][0]
    base = f"/api/v3/jobs/{job['id']}/scenes/{scene['id']}"
    assert alice.post(f"{base}/regenerate", json={"feedback": "warmer light"}).status_code == 202
    refused = [alice.post(f"{base}/regenerate", json={}), alice.put(base, json={"script": "x"}),
               alice.delete(base),
               alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "approve"})]
    assert [r.status_code for r in refused] == [409, 409, 409, 409]
    assert {r.json()["code"] for r in refused} == {"scene_busy", "scenes_rendering"}
    done = wait_for(lambda j: j["storyboard"]["scenes"][0]["status"] == "image_ready",
                    alice, job["id"], timeout=240, what="the regeneration")
    assert done["storyboard"]["scenes"][0]["version"] == 2
    assert done["storyboard"]["scenes"][0]["script"] == scene["script"]
