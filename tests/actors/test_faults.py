"""Faults on the real farm: a job actor or a renderer replica dies mid-job, and the job still
finishes without rendering finished scenes or clips again (the render ledger has exactly one row
per scene and kind), resumed by the right party: Ray restarting the same job actor, the API's
supervisor creating a new one, or the job actor itself retrying on a replacement replica. Uses
the ``tiny-slow`` preset so renders last long enough to be interrupted."""

from __future__ import annotations

import re

import pytest
import ray

from actors.job_actor import ACTOR_NAMESPACE, actor_name
from tests.conftest import SLOW_PRESET, wait_until
from tests.jobs_helpers import (job_actor_incarnations, job_object_keys, renders_per_scene,
                                start_job, wait_for, wait_for_status)

pytestmark = pytest.mark.ray


@pytest.fixture
def alice(local_farm):
    with local_farm.client("alice") as client:
        yield client


def kill_job_actor(job_id: str) -> None:
    """Kills the actor process; Ray restarts it (max_restarts) as it would after a crash."""
    ray.kill(ray.get_actor(actor_name(job_id), namespace=ACTOR_NAMESPACE), no_restart=False)


def replicas(app_name: str, deployment: str) -> list[dict]:
    """The live replica actors of a Serve deployment (their names are unique per replica)."""
    return [actor for actor in ray.util.list_named_actors(all_namespaces=True)
            if f"{app_name}#{deployment}#" in actor["name"]]


def kill_replicas(app_name: str, deployment: str) -> set[str]:
    """Kills every replica of a Serve deployment; Serve's controller starts new ones."""
    killed = set()
    for actor in replicas(app_name, deployment):
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
        killed.add(actor["name"])
    return killed


def _statuses(job: dict) -> list[str]:
    return [scene["status"] for scene in job["storyboard"]["scenes"]]


def live_job_actor(job_id: str) -> dict:
    """The job actor running the job now (the host registered for it), as the GCS actor
    table has it. Hosts that drove the job before may be alive too, idle or on other jobs."""
    name = actor_name(job_id)
    [driving] = [actor for actor in job_actor_incarnations(job_id)
                 if actor["Name"] == name and actor["State"] == "ALIVE"]
    return driving


def assert_rendered_once(settings, job: dict, kind: str) -> None:
    """Every scene has exactly one ``kind`` row in the render ledger: nothing that finished
    before the fault was rendered again, and nothing was rendered without being recorded."""
    scene_ids = {scene["id"] for scene in job["storyboard"]["scenes"]}
    assert renders_per_scene(settings, job["id"], kind) == dict.fromkeys(scene_ids, 1)


def assert_only_first_versions(settings, job: dict, *artifacts: str) -> None:
    """The stored scene artifacts are version 1 of each scene: one object per scene. A voice
    line's key also names the hash of its text (``voice-v1-<hash>.wav``); it counts as
    ``voice-v1.wav`` here, so a second spoken take would still show as a second object."""
    stored = {re.sub(r"/voice-v1-[0-9a-f]{16}\.wav$", "/voice-v1.wav", key)
              for key in job_object_keys(settings, job["id"]) if "/scenes/" in key}
    expected = {f"jobs/{job['id']}/scenes/{scene['id']}/{artifact}"
                for scene in job["storyboard"]["scenes"] for artifact in artifacts}
    assert stored == expected


def test_job_actor_killed_mid_storyboard(alice, local_farm):
    created = start_job(alice, sceneCount=8, durationSeconds=14, preset=SLOW_PRESET)
    partial = wait_for(lambda j: "image_ready" in _statuses(j) and "pending" in _statuses(j),
                       alice, created["id"], what="some but not all scene images")
    finished = {s["id"]: s["image_url"] for s in partial["storyboard"]["scenes"]
                if s["status"] == "image_ready"}
    killed = live_job_actor(created["id"])
    kill_job_actor(created["id"])

    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    scenes = {s["id"]: s for s in job["storyboard"]["scenes"]}
    assert len(scenes) == 8 and all(s["image_url"] for s in scenes.values())
    assert_rendered_once(local_farm.settings, job, "image")
    assert_only_first_versions(local_farm.settings, job, "image-v1.png")
    for scene_id, url in finished.items():
        assert scenes[scene_id]["image_url"] == url
    # Ray restarted the killed actor, which resumed the job: no other actor was made for it.
    [resumed] = job_actor_incarnations(created["id"])
    assert resumed["ActorID"] == killed["ActorID"] and resumed["NumRestarts"] == 1
    # Having recovered from a crash, the host retires with the job instead of taking more.
    wait_until(lambda: _actor_state(resumed["ActorID"]) == "DEAD", timeout=60,
               what="the restarted host to retire")


def test_image_replica_killed_mid_job(alice, local_farm):
    created = start_job(alice, sceneCount=8, durationSeconds=14, preset=SLOW_PRESET)
    partial = wait_for(lambda j: j["progress"] and j["progress"]["stage"] == "image_generation"
                       and "pending" in _statuses(j), alice, created["id"], what="images rendering")
    finished = {s["id"]: s["image_url"] for s in partial["storyboard"]["scenes"]
                if s["status"] == "image_ready"}
    killed = kill_replicas(local_farm.app_name, "ImageRenderer")
    assert killed
    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    assert all(s["image_url"] for s in job["storyboard"]["scenes"])
    assert_rendered_once(local_farm.settings, job, "image")
    assert_only_first_versions(local_farm.settings, job, "image-v1.png")
    scenes = {s["id"]: s for s in job["storyboard"]["scenes"]}
    assert all(scenes[scene_id]["image_url"] == url for scene_id, url in finished.items())
    # The job actor rode it out itself (retrying on the replica Serve started in their place):
    # it was neither restarted nor replaced.
    [driver] = job_actor_incarnations(created["id"])
    assert driver["NumRestarts"] == 0
    now = {actor["name"] for actor in replicas(local_farm.app_name, "ImageRenderer")}
    assert now and not now & killed


def test_job_actor_killed_during_video_processing(alice, local_farm):
    created = start_job(alice, sceneCount=4, durationSeconds=10, preset=SLOW_PRESET)
    wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    alice.post(f"/api/v3/jobs/{created['id']}/actions", json={"action": "approve"})
    partial = wait_for(lambda j: "clip_ready" in _statuses(j) and "image_ready" in _statuses(j),
                       alice, created["id"], timeout=240, what="some but not all clips")
    assert any(s["status"] == "clip_ready" for s in partial["storyboard"]["scenes"])
    killed = live_job_actor(created["id"])
    kill_job_actor(created["id"])

    job = wait_for_status(alice, created["id"], "completed", timeout=300)
    assert job["videoUrl"]
    assert_rendered_once(local_farm.settings, job, "clip")
    assert_rendered_once(local_farm.settings, job, "image")  # approving re-rendered no image
    assert_only_first_versions(local_farm.settings, job, "image-v1.png", "clip-v1.mp4",
                               "voice-v1.wav")
    # Ray restarted the killed actor (the one the approval started), and it finished the job:
    # no actor was made for the job after it.
    resumed = job_actor_incarnations(created["id"])[-1]
    assert resumed["ActorID"] == killed["ActorID"] and resumed["NumRestarts"] == 1


def test_clip_replica_killed_mid_render(alice, local_farm):
    created = start_job(alice, sceneCount=3, durationSeconds=9, preset=SLOW_PRESET,
                        autoApprove=True)
    wait_for(lambda j: j["status"] == "video_processing" and "image_ready" in _statuses(j),
             alice, created["id"], timeout=240, what="clips rendering")
    killed = kill_replicas(local_farm.app_name, "ClipRenderer")
    assert killed
    job = wait_for_status(alice, created["id"], "completed", timeout=300)
    assert job["videoUrl"] and job["actualCost"] > 0
    assert_rendered_once(local_farm.settings, job, "clip")
    assert_only_first_versions(local_farm.settings, job, "image-v1.png", "clip-v1.mp4",
                               "voice-v1.wav")
    # One job actor drove the whole auto-approved job through the fault, never restarted.
    [driver] = job_actor_incarnations(created["id"])
    assert driver["NumRestarts"] == 0
    now = {actor["name"] for actor in replicas(local_farm.app_name, "ClipRenderer")}
    assert now and not now & killed


def test_orphaned_job_is_resumed_by_the_supervisor(alice, local_farm):
    """An actor that is gone for good (as after a whole-cluster restart) is replaced: the API's
    supervisor finds the job still processing in the database and starts a new actor."""
    created = start_job(alice, sceneCount=6, durationSeconds=10, preset=SLOW_PRESET)
    partial = wait_for(lambda j: "image_ready" in _statuses(j) and "pending" in _statuses(j),
                       alice, created["id"], what="some but not all scene images")
    finished = {s["id"]: s["image_url"] for s in partial["storyboard"]["scenes"]
                if s["status"] == "image_ready"}
    gone = live_job_actor(created["id"])
    ray.kill(ray.get_actor(actor_name(created["id"]), namespace=ACTOR_NAMESPACE), no_restart=True)
    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    assert all(s["image_url"] for s in job["storyboard"]["scenes"])
    assert_rendered_once(local_farm.settings, job, "image")
    assert_only_first_versions(local_farm.settings, job, "image-v1.png")
    scenes = {s["id"]: s for s in job["storyboard"]["scenes"]}
    assert all(scenes[scene_id]["image_url"] == url for scene_id, url in finished.items())
    # Another actor (a warm host, not a restart of the old one) took the job over. This test
    # sent nothing but GETs since, and those hand out no job: the supervisor did.
    old, new = job_actor_incarnations(created["id"])
    assert old["ActorID"] == gone["ActorID"] and old["State"] == "DEAD"
    assert old["NumRestarts"] == 0 and new["NumRestarts"] == 0
    assert new["ActorID"] != old["ActorID"]


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


# ---- warm job hosts and autoApprove without a barrier ----------------------------------------

# Images and clips only: these tests count the scenes' image and clip objects.
NO_SOUND = {"voiceOver": False, "music": "none"}

def _image_rows_written(settings, job_id: str) -> list[float]:
    """When each image row of the job's render ledger was written (epoch seconds)."""
    from datetime import datetime, timezone

    from sqlalchemy import create_engine, text

    engine = create_engine(settings.sync_database_url)
    try:
        with engine.connect() as conn:
            stamps = conn.execute(text("SELECT created_at FROM render_usage WHERE job_id = :job "
                                       "AND kind = 'image'"), {"job": job_id}).scalars().all()
    finally:
        engine.dispose()
    parsed = [stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
              for stamp in stamps]
    return [(stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
            for stamp in parsed]


def _first_arrival(app_name: str, deployment: str, seeds: list[int]) -> float:
    """When the first of ``seeds`` reached the renderer, by the renderer's own record."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=app_name)
    arrivals = handle.recent_arrivals_by_seed.remote().result(timeout_s=30)
    return min(arrivals[seed] for seed in seeds)


def test_auto_approve_clips_start_as_their_images_land_on_a_warm_host(alice, local_farm):
    from actors.steps import scene_seed

    # The pool refills in the background after earlier tests' jobs: start once a host is idle.
    wait_until_a_job_host_is_idle()
    created = start_job(alice, sceneCount=6, durationSeconds=10, preset=SLOW_PRESET,
                        autoApprove=True, seed=777, **NO_SOUND)
    seen: list[tuple[str, str, float]] = []  # (status, stage, percent) as a poller sees them

    def record(job: dict) -> bool:
        progress = job["progress"] or {}
        seen.append((job["status"], progress.get("stage"), progress.get("percent") or 0.0))
        return job["status"] == "completed"

    job = wait_for(record, alice, created["id"], timeout=300, what="completed")
    assert job["videoUrl"]
    assert_rendered_once(local_farm.settings, job, "image")
    assert_rendered_once(local_farm.settings, job, "clip")
    # The first clip request reached the clip renderer before the last image was written: the
    # clips did not wait for every image (6 images render in two batches, one after the other).
    seeds = [scene_seed(777, scene["id"], 1) for scene in job["storyboard"]["scenes"]]
    first_clip = _first_arrival(local_farm.app_name, "ClipRenderer", seeds)
    assert first_clip < max(_image_rows_written(local_farm.settings, created["id"]))
    # A poller still sees the spec's statuses in order, each with its own stages, and the
    # whole job's percent never goes back.
    order = ["pending", "storyboard_processing", "storyboard_ready", "video_processing",
             "completed"]
    assert [order.index(status) for status, _, _ in seen] == \
        sorted(order.index(status) for status, _, _ in seen)
    stages = {"storyboard_processing": {"storyboard_generation", "image_generation"},
              "video_processing": {"clip_rendering", "compositing", "uploading"}}
    assert all(stage in stages[status] for status, stage, _ in seen if status in stages)
    percents = [percent for _, _, percent in seen]
    assert percents == sorted(percents)
    # It ran on a warm host: one started before the job existed, never restarted.
    [host] = job_actor_incarnations(created["id"])
    assert host["Name"].startswith("jobhost-") and host["NumRestarts"] == 0
    assert host["StartTime"] / 1000 < datetime_of(job["createdAt"])


def test_jobs_one_after_another_reuse_the_idle_hosts(alice, local_farm):
    """A host that finished a job (or let it wait for review) goes back to the idle pool and
    takes the next job: once the pool is warm, jobs start no new worker process."""
    def run_job(seed: int) -> set[str]:
        created = start_job(alice, sceneCount=1, durationSeconds=4, seed=seed, **NO_SOUND)
        wait_for_status(alice, created["id"], "storyboard_ready", timeout=120)
        # Once it let the job go for review, no host is registered for it.
        wait_until(lambda: actor_name(created["id"]).startswith("job-"), timeout=30,
                   what="the host to let the job go")
        return {host["ActorID"] for host in job_actor_incarnations(created["id"])}

    warm = local_farm.settings.renderfarm_warm_job_hosts
    run_job(1)  # the pool refills after this one takes a host; then that host comes back
    wait_until(lambda: len(_idle_hosts(local_farm.app_name)) > warm, timeout=120,
               what="the warm hosts plus the one that came back")
    before = _job_hosts()
    drivers = set().union(*(run_job(seed) for seed in (2, 3, 4)))
    assert drivers and all(before.get(host) == "ALIVE" for host in drivers)
    assert _job_hosts() == before  # no host was started, none ended
    # Idle, a host holds no database connection (a burst of jobs leaves many hosts behind).
    for name in _idle_host_names(local_farm.app_name):
        described = ray.get(ray.get_actor(name, namespace=ACTOR_NAMESPACE).describe.remote(),
                            timeout=30)
        assert described["job_id"] is None and described["database_connections"] == 0, described


def test_a_burst_of_jobs_leaves_every_host_it_started_in_the_pool(alice, local_farm):
    """Jobs arriving faster than hosts come free start more hosts (a few at a time); once
    the jobs wait for review, every live host is idle in the pool: none is left running
    without a job and outside the pool, where nothing would ever use it."""
    before = _job_hosts()
    with local_farm.client("burst-1") as one, local_farm.client("burst-2") as two:
        users = [alice, one, two]  # each may have 3 jobs processing
        jobs = [(http, start_job(http, sceneCount=1, durationSeconds=4, seed=seed,
                                 **NO_SOUND)["id"]) for seed in range(2) for http in users]
        for http, job_id in jobs:
            wait_for_status(http, job_id, "storyboard_ready", timeout=240)
    ids = [job_id for _, job_id in jobs]
    started = {host for host, state in _job_hosts().items() if host not in before}
    assert len(started) <= len(ids)

    def all_alive_hosts_idle_in_the_pool() -> bool:
        alive = {name for name, state in _job_host_names().items() if state == "ALIVE"}
        idle = set(_idle_host_names(local_farm.app_name))
        return alive <= idle

    wait_until(all_alive_hosts_idle_in_the_pool, timeout=60, what="every live host idle")


def _idle_host_names(app_name: str) -> list[str]:
    return [raw.decode().rsplit("/", 1)[-1] for raw in _idle_hosts(app_name)]


def _job_host_names() -> dict[str, str]:
    """Every job host the cluster ever had: name → state (the last incarnation's)."""
    from ray._private import state

    return {info["Name"]: info["State"] for info in
            sorted(state.actors().values(), key=lambda info: info["StartTime"])
            if info["Name"].startswith("jobhost-")}


def test_a_late_cancel_for_a_hosts_previous_job_leaves_its_current_job_alone(alice, local_farm):
    """The API looks a job's host up, then cancels: if the host let that job go and took
    another meanwhile, the cancel names the old job and the new one goes on."""
    created = start_job(alice, sceneCount=2, durationSeconds=6, preset=SLOW_PRESET, **NO_SOUND)
    wait_for(lambda j: j["status"] == "storyboard_processing", alice, created["id"],
             what="processing")
    host = ray.get_actor(actor_name(created["id"]), namespace=ACTOR_NAMESPACE)
    ray.get(host.cancel.remote("an-earlier-job"), timeout=30)
    assert ray.get(host.describe.remote(), timeout=30)["job_id"] == created["id"]
    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    assert all(scene["image_url"] for scene in job["storyboard"]["scenes"])


def _job_hosts() -> dict[str, str]:
    """Every job host the cluster ever had: ActorID → state."""
    from ray._private import state

    return {info["ActorID"]: info["State"] for info in state.actors().values()
            if info["Name"].startswith("jobhost-")}


def _idle_hosts(app_name: str) -> list[bytes]:
    """The idle pool of the app's farm, as the registry keeps it."""
    from ray.experimental import internal_kv

    from actors import job_registry

    return internal_kv._internal_kv_list(f"idle/{app_name}/", namespace=job_registry.NAMESPACE)


def _actor_state(actor_id: str) -> str:
    return _job_hosts().get(actor_id, "")


def wait_until_a_job_host_is_idle(timeout_s: float = 120.0) -> None:
    """Waits until some warm job host is alive and has no job (the API keeps a few started)."""
    import time

    from ray._private import state

    from actors import job_registry

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(info["Name"].startswith("jobhost-") and info["State"] == "ALIVE"
               and job_registry.job_of(info["Name"]) is None
               for info in state.actors().values()):
            return
        time.sleep(0.2)
    pytest.fail(f"no idle warm job host within {timeout_s:.0f} s")


def datetime_of(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_auto_approve_job_resumes_when_its_host_is_killed_mid_pipeline(alice, local_farm):
    created = start_job(alice, sceneCount=6, durationSeconds=10, preset=SLOW_PRESET,
                        autoApprove=True, **NO_SOUND)
    # Killed while some clips are done and the job is not yet compositing.
    wait_for(lambda j: "clip_ready" in _statuses(j) and j["status"] in
             ("storyboard_processing", "video_processing")
             and (j["progress"] or {}).get("stage") not in ("compositing", "uploading"),
             alice, created["id"], timeout=240, what="clips rendering")
    killed = live_job_actor(created["id"])
    kill_job_actor(created["id"])

    job = wait_for_status(alice, created["id"], "completed", timeout=300)
    assert job["videoUrl"]
    assert_rendered_once(local_farm.settings, job, "image")
    assert_rendered_once(local_farm.settings, job, "clip")
    assert_only_first_versions(local_farm.settings, job, "image-v1.png", "clip-v1.mp4")
    # Ray restarted the host, which took its job back from the registry and finished it.
    [resumed] = job_actor_incarnations(created["id"])
    assert resumed["ActorID"] == killed["ActorID"] and resumed["NumRestarts"] == 1
