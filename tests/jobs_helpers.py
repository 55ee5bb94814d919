"""Helpers for job tests: a brief, polling like the spec's frontend, reading images, the ledger."""

from __future__ import annotations

import io
import time

import httpx
from PIL import Image
from sqlalchemy import create_engine, text

from coordinator.settings import Settings
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
