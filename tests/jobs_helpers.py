"""Helpers for job tests: a brief, polling like the spec's frontend, reading images, the ledger,
putting a job into any state without Ray, and which job actor incarnations ran a job."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import create_engine, text

from actors import steps
from actors.compositor import render_caption_image
from actors.job_store import JobStore
from coordinator.db.base import utcnow
from coordinator.db.models import Job
from coordinator.job_states import JobStatus
from coordinator.planner import plan_storyboard
from coordinator.settings import Settings
from coordinator.storage import ObjectStore, make_object_store
from tests.conftest import create_client

TERMINAL = {"completed", "failed", "cancelled"}


def job_body(client_id: str, campaign_id: str | None = None, **advanced) -> dict:
    body = {
        "context": {"clientId": client_id},
        "adBasics": {"product": "Lime Fizz sparkling water", "targetAudience": "young runners",
                     "keyMessage": "Zero sugar, all zing", "callToAction": "Grab a can today"},
        "creative": {"direction": {"style": "bright summer photography"}},
        "advanced": {"sceneCount": 3, "durationSeconds": 8} | advanced,
    }
    if campaign_id:
        body["context"]["campaignId"] = campaign_id
    return body


def start_job(http: httpx.Client, **advanced) -> dict:
    client = create_client(http)
    response = http.post("/api/v3/jobs", json=job_body(client["id"], **advanced))
    assert response.status_code == 201, response.text
    return response.json()["data"]


def get_job(http: httpx.Client, job_id: str) -> dict:
    response = http.get(f"/api/v3/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_for_status(http: httpx.Client, job_id: str, statuses: set[str] | str,
                    timeout: float = 180.0, interval: float = 0.1) -> dict:
    """Polls GET /jobs/{id} until the status is one of ``statuses``; fails fast on a
    terminal status that was not asked for."""
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)
    deadline = time.monotonic() + timeout
    job = get_job(http, job_id)
    while job["status"] not in wanted:
        if job["status"] in TERMINAL:
            raise AssertionError(f"job ended {job['status']}: {job.get('error')} ({job.get('errorCode')})")
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {job['status']} after {timeout}s: {job['progress']}")
        time.sleep(interval)
        job = get_job(http, job_id)
    return job


def wait_for(predicate, http: httpx.Client, job_id: str, timeout: float = 120.0,
             what: str = "condition") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(http, job_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; job: {job['status']} {job['progress']}")
        time.sleep(0.05)


def fetch_image(http: httpx.Client, url: str) -> tuple[bytes, Image.Image]:
    response = http.get(url)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return response.content, image


def caption_match(frame_luma: np.ndarray, text: str, workdir: Path) -> float:
    """The share of the solid text pixels of the compositor's caption for ``text`` (white,
    drawn over a translucent dark box) that are bright in ``frame_luma``: near 1 when that very
    caption is in the frame, whatever the clip beneath it shows."""
    height, width = frame_luma.shape
    where = render_caption_image(text, width, height, workdir / "caption.png")
    assert where is not None
    caption = np.asarray(Image.open(workdir / "caption.png").convert("RGBA"))
    x, y = where
    region = frame_luma[y:y + caption.shape[0], x:x + caption.shape[1]]
    solid = caption[..., 3] >= 230  # the box alone is 150
    assert solid.any(), "the caption draws nothing solid"
    return float((region[solid] > 160).mean())


def usage_rows(settings: Settings, job_id: str) -> list[dict]:
    """The render ledger of a job, read straight from the database."""
    engine = create_engine(settings.sync_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT kind, scene_id, seconds, cost FROM render_usage "
                                     "WHERE job_id = :job ORDER BY id"), {"job": job_id})
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def renders_per_scene(settings: Settings, job_id: str, kind: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in usage_rows(settings, job_id):
        if row["kind"] == kind:
            counts[row["scene_id"]] = counts.get(row["scene_id"], 0) + 1
    return counts


def database_rows(settings: Settings, job_id: str) -> dict[str, Any]:
    """Everything stored about a job, read straight from the database: its row, its scenes'
    rows and its ledger (to show a refused request changed nothing, ``updated_at`` included)."""
    engine = create_engine(settings.sync_database_url)
    try:
        with engine.connect() as conn:
            def rows(sql: str) -> list[dict]:
                return [dict(row._mapping) for row in conn.execute(text(sql), {"job": job_id})]

            return {"job": rows("SELECT * FROM jobs WHERE id = :job"),
                    "scenes": rows("SELECT * FROM scenes WHERE job_id = :job ORDER BY scene_idx"),
                    "usage": rows("SELECT * FROM render_usage WHERE job_id = :job ORDER BY id")}
    finally:
        engine.dispose()


def job_object_keys(settings: Settings, job_id: str) -> set[str]:
    """The stored objects under the job's prefix, listed from the object store itself."""
    prefix = f"jobs/{job_id}/"
    if settings.s3_bucket:
        store = make_object_store(settings)
        listing = store.client.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
        return {item["Key"] for item in listing.get("Contents", [])}
    root = settings.objects_dir
    return {str(p.relative_to(root)) for p in (root / prefix).rglob("*") if p.is_file()}


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _advance(settings: Settings, job_id: str, target: JobStatus) -> None:
    objects = make_object_store(settings)
    store = JobStore(settings, job_id)
    try:
        job = await store.job()
        assert job is not None and job.status == JobStatus.PENDING.value, "start from a new job"
        if target == JobStatus.CANCELLED:  # cancelled under review, with its scenes
            await _write_up_to(store, objects, settings, job, JobStatus.STORYBOARD_READY)
            await store.transition(JobStatus.CANCELLED)
        elif target == JobStatus.FAILED:  # failed while rendering the video
            await _write_up_to(store, objects, settings, job, JobStatus.VIDEO_PROCESSING)
            await store.fail("Rendering the clip of scene 0 failed: out of memory", "render_failed")
        else:
            await _write_up_to(store, objects, settings, job, target)
    finally:
        await store.close()


async def _write_up_to(store: JobStore, objects: ObjectStore, settings: Settings, job: Job,
                       target: JobStatus) -> None:
    """The job actor's own writes, in its order, up to ``target``. A storyboard still
    processing has its scenes and the first scene's image only."""
    if target == JobStatus.PENDING:
        return
    await store.transition(JobStatus.STORYBOARD_PROCESSING)
    plan = await plan_storyboard(steps.planning_brief(job), settings)
    scenes = await store.save_storyboard(job.owner_id, plan.storyboard.scenes, planner_cost=0.0)
    rendered = scenes[:1] if target == JobStatus.STORYBOARD_PROCESSING else scenes
    for scene in rendered:
        key = steps.scene_image_key(job.id, scene.id, scene.version)
        objects.put_bytes(key, _png(), "image/png")
        assert await store.record_image(scene.id, key=key, version=scene.version, seconds=0.1,
                                        cost=0.001)
    if target == JobStatus.STORYBOARD_PROCESSING:
        return
    await store.transition(JobStatus.STORYBOARD_READY)
    if target == JobStatus.STORYBOARD_READY:
        return
    await store.transition(JobStatus.VIDEO_PROCESSING, approved_at=utcnow())
    if target == JobStatus.VIDEO_PROCESSING:
        return
    for scene in scenes:
        key = steps.scene_clip_key(job.id, scene.id, scene.version)
        objects.put_bytes(key, b"clip bytes", "video/mp4")
        assert await store.record_clip(scene.id, key=key, version=scene.version, seconds=0.5,
                                       cost=0.002)
    video, thumbnail = steps.video_key(job.id), steps.thumbnail_key(job.id)
    objects.put_bytes(video, b"video bytes", "video/mp4")
    objects.put_bytes(thumbnail, b"\xff\xd8\xff thumbnail", "image/jpeg")
    await store.transition(JobStatus.COMPLETED, video_key=video, thumbnail_key=thumbnail,
                           video_duration_s=8.0, actual_cost=await store.actual_cost())


def advance_job(settings: Settings, job_id: str, status: str) -> None:
    """Puts a new (pending) job into ``status`` without Ray, through the job actor's own
    database writes (``actors.job_store``) and the offline planner, so the rows look exactly as
    a real run leaves them. ``failed`` fails during video processing; ``cancelled`` is
    cancelled under review; both keep their scenes."""
    asyncio.run(_advance(settings, job_id, JobStatus(status)))


def job_actor_incarnations(job_id: str) -> list[dict]:
    """Every Ray actor that has driven the job (the warm hosts it was handed to, in that order,
    then any actor created for the job alone), from the GCS actor table (dead ones included):
    ``ActorID``, ``State``, ``NumRestarts`` (restarts by Ray after a crash), ``Pid`` (the
    latest process), ``StartTime`` and ``EndTime`` (ms). The table is a Ray developer API; the
    state API would need the dashboard, which tests do not start."""
    from ray._private import state

    from actors import job_registry
    from actors.job_actor import legacy_actor_name

    order = [*job_registry.hosts_of(job_id), legacy_actor_name(job_id)]
    named = [info for info in state.actors().values() if info["Name"] in order]
    return sorted(named, key=lambda info: (order.index(info["Name"]), info["StartTime"]))


def actor_alive(job_id: str) -> bool:
    import ray

    from actors.job_actor import ACTOR_NAMESPACE, actor_name

    try:
        ray.get_actor(actor_name(job_id), namespace=ACTOR_NAMESPACE)
    except ValueError:
        return False
    return True


def wait_actor_gone(job_id: str, timeout: float = 60.0) -> None:
    """The job actor ends itself when nothing is left to do (or after a cancel)."""
    deadline = time.monotonic() + timeout
    while actor_alive(job_id):
        if time.monotonic() > deadline:
            raise AssertionError(f"actor of job {job_id} still alive after {timeout}s")
        time.sleep(0.1)
