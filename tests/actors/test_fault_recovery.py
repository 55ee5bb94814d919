"""Faults that are not the job's fault do not fail the job, and work that can never run fails
fast. On the real farm (real Ray, Serve, renderers, ffmpeg, SQLite):

- renders in flight when a job actor dies are adopted by its next incarnation, not redone;
- a compositor replica killed mid-video: the video is made again on its replacement, without
  rendering a clip again; a cancelled compositing call stops its ffmpeg;
- one hung job actor does not hold up the supervisor's resumption of another job;
- renderers that need a GPU no node has fail the job at once (``no_capacity``); where capacity
  may come (an autoscaler), the job says it waits, and that wait has its own limit, apart from
  the render time limit;
- a database that is briefly unreachable is ridden out by the job actor's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from pathlib import Path

import httpx
import psutil
import pytest
import ray
from ray import serve

from actors import steps
from actors.job_actor import ACTOR_NAMESPACE, JobActor, actor_name
from actors.job_store import JobStore
from coordinator.app import create_app
from coordinator.progress import progress
from tests.conftest import SLOW_PRESET, LiveServer, create_client, make_settings, wait_until
from tests.jobs_helpers import (advance_job, job_body, renders_per_scene, start_job, usage_rows,
                                wait_actor_gone, wait_for, wait_for_status)

pytestmark = pytest.mark.ray


@pytest.fixture
def alice(local_farm):
    with local_farm.client("alice") as client:
        yield client


def _statuses(job: dict) -> list[str]:
    return [scene["status"] for scene in job["storyboard"]["scenes"]]


# ---- orphaned renders -------------------------------------------------------------------------

def test_renders_in_flight_when_the_job_actor_dies_are_adopted_not_redone(alice, local_farm):
    seed = 4242
    created = start_job(alice, sceneCount=8, durationSeconds=14, preset=SLOW_PRESET, seed=seed)
    wait_for(lambda j: j["progress"] and j["progress"]["stage"] == "image_generation"
             and j["storyboard"] and "pending" in _statuses(j), alice, created["id"],
             what="images rendering")
    # Ray restarts the actor (as after a crash); the renders it asked for are still running.
    ray.kill(ray.get_actor(actor_name(created["id"]), namespace=ACTOR_NAMESPACE), no_restart=False)

    job = wait_for_status(alice, created["id"], "storyboard_ready", timeout=240)
    images = serve.get_deployment_handle("ImageRenderer", app_name=local_farm.app_name)
    renders = images.recent_renders_by_seed.remote().result(timeout_s=30)
    seeds = [steps.scene_seed(seed, s["id"], 1) for s in job["storyboard"]["scenes"]]
    assert {seed: renders.get(seed) for seed in seeds} == {seed: 1 for seed in seeds}, \
        "a scene image was rendered twice"
    assert all(count == 1 for count in renders_per_scene(local_farm.settings, created["id"],
                                                         "image").values())


# ---- compositing worker crash -----------------------------------------------------------------

def _compositor_ffmpeg(app_name: str) -> list[psutil.Process]:
    """The ffmpeg processes the app's compositor replica runs now. Only this test session's Ray
    processes are looked at (they descend from this process)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            parent = process.parent()
            if ("ffmpeg" in process.name() and parent is not None
                    and f"ServeReplica:{app_name}:Compositor" in " ".join(parent.cmdline())):
                found.append(process)
    return found


def _kill_compositor_replica(app_name: str) -> None:
    """Kills the app's compositor replica's actor (as a crash or a lost node would); Serve
    starts another."""
    prefix = f"SERVE_REPLICA::{app_name}#Compositor#"
    names = [actor for actor in ray.util.list_named_actors(all_namespaces=True)
             if actor["name"].startswith(prefix)]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0]["name"], namespace=names[0]["namespace"]), no_restart=True)


def test_a_killed_compositing_worker_is_run_again_without_rendering_clips_again(alice, local_farm):
    created = start_job(alice, sceneCount=6, durationSeconds=40, preset=SLOW_PRESET,
                        autoApprove=True)
    wait_for(lambda j: j["progress"] and j["progress"]["stage"] == "compositing", alice,
             created["id"], timeout=300, what="compositing")
    # Mid-video: the replica has ffmpeg running for this job (no other job runs now).
    wait_until(lambda: _compositor_ffmpeg(local_farm.app_name), timeout=60, interval=0.02,
               what="the compositor's ffmpeg")
    _kill_compositor_replica(local_farm.app_name)

    job = wait_for_status(alice, created["id"], "completed", timeout=300)
    assert job["videoUrl"] and job["error"] is None
    clips = renders_per_scene(local_farm.settings, created["id"], "clip")
    assert set(clips) == {s["id"] for s in job["storyboard"]["scenes"]}
    assert set(clips.values()) == {1}, "a clip was rendered again"
    kinds = [row["kind"] for row in usage_rows(local_farm.settings, created["id"])]
    assert kinds.count("composite") == 1


def _stored_clip(settings, key: str) -> None:
    """A one-second clip, stored as a job's scene clip would be."""
    import tempfile

    from PIL import Image

    from actors.compositor import encode_frames_to_mp4
    from coordinator.storage import make_object_store

    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "clip.mp4"
        frames = [Image.new("RGB", (64, 64), (index * 10, 80, 160)) for index in range(24)]
        encode_frames_to_mp4(frames, 24, path)
        make_object_store(settings).put_bytes(key, path.read_bytes(), "video/mp4")


def test_a_cancelled_compositing_call_stops_its_ffmpeg(local_farm):
    from actors.composite_task import ClipPlan
    from actors.compositor import CallToActionCard

    key = f"tests/{uuid.uuid4().hex}/clip.mp4"
    _stored_clip(local_farm.settings, key)
    compositor = serve.get_deployment_handle("Compositor", app_name=local_farm.app_name)
    card = CallToActionCard(text="Buy now", background_color="#111111", text_color="#ffffff",
                            duration_s=1.0)
    # Ten minutes of 720p: ffmpeg is still encoding when the call is cancelled.
    long = [ClipPlan(clip_key=key, duration_s=150.0, transition="cut", caption="A long scene")] * 4
    response = compositor.composite.remote(long, card, width=1280, height=720, fps=24)
    wait_until(lambda: _compositor_ffmpeg(local_farm.app_name), timeout=60, interval=0.02,
               what="the compositor's ffmpeg")
    response.cancel()
    wait_until(lambda: not _compositor_ffmpeg(local_farm.app_name), timeout=30,
               what="ffmpeg to stop")
    # The replica is free for the next video (it composites one at a time).
    short = [ClipPlan(clip_key=key, duration_s=1.0, transition="cut", caption="Short")]
    output = compositor.composite.remote(short, card, width=160, height=90,
                                         fps=24).result(timeout_s=120)
    assert output.video_mp4[4:8] == b"ftyp" and output.result.width == 160


# ---- supervisor -------------------------------------------------------------------------------

def test_one_hung_job_actor_does_not_delay_resuming_another_job(alice, local_farm):
    # Job one waits for review (its actor ended itself) ...
    hung = start_job(alice, sceneCount=1, durationSeconds=5)
    wait_for_status(alice, hung["id"], "storyboard_ready", timeout=240)
    wait_actor_gone(hung["id"])  # its name is free only once the ending actor is gone
    # ... and its next actor can never be placed, so every call to it hangs: a real JobActor
    # asking for a resource no node has.
    blocker = JobActor.options(name=actor_name(hung["id"]), namespace=ACTOR_NAMESPACE,
                               lifetime="detached", num_cpus=0,
                               resources={f"never-{uuid.uuid4().hex[:6]}": 1}).remote(
        hung["id"], local_farm.settings, None, None, None)
    try:
        # A regeneration makes job one need its actor: the supervisor pokes it every round.
        scene = alice.get(f"/api/v3/jobs/{hung['id']}").json()["data"]["storyboard"]["scenes"][0]
        response = alice.post(f"/api/v3/jobs/{hung['id']}/scenes/{scene['id']}/regenerate",
                              json={})
        assert response.status_code == 202, response.text

        # Job two loses its actor for good (as after a whole-cluster restart).
        orphan = start_job(alice, sceneCount=4, durationSeconds=8, preset=SLOW_PRESET)
        wait_for(lambda j: j["status"] == "storyboard_processing", alice, orphan["id"],
                 what="processing")
        ray.kill(ray.get_actor(actor_name(orphan["id"]), namespace=ACTOR_NAMESPACE),
                 no_restart=True)
        job = wait_for_status(alice, orphan["id"], "storyboard_ready", timeout=240)
        assert all(s["image_url"] for s in job["storyboard"]["scenes"])
        assert alice.get(f"/api/v3/jobs/{hung['id']}").json()["data"]["status"] == \
            "storyboard_ready"
    finally:
        ray.kill(blocker, no_restart=True)
        alice.post(f"/api/v3/jobs/{hung['id']}/actions", json={"action": "cancel"})


# ---- capacity ---------------------------------------------------------------------------------

@contextlib.contextmanager
def gpu_farm(ray_session, tmp_path, request, **overrides):
    """The service with renderers that each ask for a GPU, on this GPU-less cluster, served
    beside the module's farm under its own route prefix."""
    from ray.serve.api import _run

    from serve_app import build_app

    settings = make_settings(tmp_path, "sqlite-local", request,
                             renderfarm_models_dir=ray_session["models_dir"], **overrides)
    name, prefix = f"gpu-{uuid.uuid4().hex[:6]}", f"/gpu-{uuid.uuid4().hex[:6]}"
    # Not blocking: the renderers never start here, so the app never reports RUNNING.
    # Deleting the app stops a replica that never started only after its graceful shutdown
    # timeout (Serve's default 20 s): 1 s here, for the deployments that wait for a GPU (and the
    # compositor, which waits for CPUs the module's farm holds).
    never_started = {deployment: {"graceful_shutdown_timeout_s": 1.0}
                     for deployment in ("ImageRenderer", "ClipRenderer", "AudioRenderer",
                                        "Compositor")}
    _run(build_app(settings, render_gpus=1, **never_started), name=name, route_prefix=prefix,
         _blocking=False)
    url = f"http://127.0.0.1:{ray_session['port']}{prefix}"
    try:
        wait_until(lambda: _healthy(url), timeout=90, what="the GPU farm's API")
        yield url, settings
    finally:
        serve.delete(name)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _client(url: str, settings, user: str) -> httpx.Client:
    from coordinator.auth import issue_local_token

    return httpx.Client(base_url=url, timeout=60,
                        headers={"Authorization": f"Bearer {issue_local_token(settings, user)}"})


def test_work_no_node_can_ever_hold_fails_fast_with_no_capacity(ray_session,
                                                                tmp_path, request):
    with gpu_farm(ray_session, tmp_path, request) as (url, settings), \
            _client(url, settings, "carol") as carol:
        created = start_job(carol, sceneCount=2, durationSeconds=6, preset="tiny")
        job = wait_for(lambda j: j["status"] in ("failed", "completed", "cancelled"), carol,
                       created["id"], timeout=120, what="the job to fail")
    assert job["status"] == "failed" and job["errorCode"] == "no_capacity"
    assert "GPU" in job["error"] and "RENDERFARM_RENDER_GPUS=0" in job["error"]


def test_waiting_for_coming_capacity_is_reported_and_limited_apart_from_render_time(
        ray_session, tmp_path, request):
    # A render time limit far shorter than the wait: waiting must not count against it.
    with gpu_farm(ray_session, tmp_path, request, renderfarm_autoscaling=True,
                  capacity_wait_seconds=8, render_timeout_seconds=1) as (url, settings), \
            _client(url, settings, "dave") as dave:
        created = start_job(dave, sceneCount=2, durationSeconds=6, preset="tiny")
        waiting = wait_for(lambda j: j["status"] == "failed" or (
            j["progress"] or {}).get("message") == "Waiting for a GPU worker", dave,
            created["id"], timeout=120, what="the job to say it waits for a GPU worker")
        assert waiting["status"] == "storyboard_processing"
        assert waiting["progress"]["stage"] == "image_generation"
        job = wait_for(lambda j: j["status"] == "failed", dave, created["id"], timeout=120,
                       what="the capacity wait to run out")
    assert job["errorCode"] == "capacity_timeout", job["error"]


# ---- a database outage ------------------------------------------------------------------------

def test_a_briefly_unreachable_database_is_ridden_out(tmp_path, request, caplog):
    settings = make_settings(tmp_path, "sqlite-local", request)
    with LiveServer(create_app(settings)) as server, \
            _client(server.url, settings, "erin") as erin:
        client_id = create_client(erin)["id"]
        created = erin.post("/api/v3/jobs", json=job_body(client_id))
        assert created.status_code == 201, created.text
        job_id = created.json()["data"]["id"]
        advance_job(settings, job_id, "storyboard_processing")

        home, away = settings.renderfarm_home, settings.renderfarm_home.with_name("home-away")

        async def write_during_outage() -> None:
            store = JobStore(settings, job_id)  # no pooled connection yet: each try connects
            try:
                os.rename(home, away)  # the database file is gone for a while
                threading.Timer(1.5, os.rename, (away, home)).start()
                await store.set_progress(progress("image_generation", 25, "written late"))
            finally:
                await store.close()

        with caplog.at_level("WARNING", logger="actors.transient"):
            asyncio.run(write_during_outage())
        assert any("database failed (OperationalError" in r.getMessage() for r in caplog.records)
        job = erin.get(f"/api/v3/jobs/{job_id}").json()["data"]
    assert job["progress"]["message"] == "written late" and job["status"] == "storyboard_processing"
