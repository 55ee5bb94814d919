"""The jobs HTTP surface without rendering: validation, idempotency, quotes, ownership and the
state machine's refusals. (Rendering flows run on Ray in tests/actors/.)"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import create_campaign, create_client
from tests.jobs_helpers import job_body


def test_create_get_list(alice):
    client = create_client(alice)
    campaign = create_campaign(alice, client["id"])
    response = alice.post("/api/v3/jobs", json=job_body(client["id"], campaign["id"]))
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert set(created) == {"id", "status", "createdAt", "updatedAt"}
    assert created["status"] == "pending"

    job = alice.get(f"/api/v3/jobs/{created['id']}").json()["data"]
    assert job["status"] == "pending" and job["clientId"] == client["id"]
    assert job["campaignId"] == campaign["id"] and job["storyboard"] == {"scenes": []}
    assert job["estimatedCost"] > 0 and job["actualCost"] is None and job["videoUrl"] is None
    assert job["preset"] == "tiny" and job["aspectRatio"] == "16:9"
    assert job["progress"]["stage"] == "queued"

    other_client = create_client(alice, name="Other")
    alice.post("/api/v3/jobs", json=job_body(other_client["id"]))
    listing = alice.get("/api/v3/jobs", params={"client_id": client["id"]}).json()
    assert [j["id"] for j in listing["data"]] == [created["id"]] and listing["meta"]["total"] == 1
    assert alice.get("/api/v3/jobs", params={"campaign_id": campaign["id"]}).json()["meta"]["total"] == 1
    assert alice.get("/api/v3/jobs", params={"status": "pending"}).json()["meta"]["total"] == 2
    assert alice.get("/api/v3/jobs", params={"status": "completed"}).json()["meta"]["total"] == 0
    assert alice.get("/api/v3/jobs", params={"status": "bogus"}).status_code == 400


def test_dry_run_quote(alice, api):
    client = create_client(alice)
    day_before = datetime.now(timezone.utc).date().isoformat()
    response = alice.post("/api/v3/jobs/dry-run", json=job_body(client["id"], sceneCount=4))
    day_after = datetime.now(timezone.utc).date().isoformat()
    assert response.status_code == 200, response.text
    quote = response.json()["data"]
    assert quote["currency"] == "USD"
    assert set(quote["breakdown"]) == {"storyboard_generation", "image_generation", "video_rendering"}
    assert quote["estimatedCost"] == pytest.approx(sum(quote["breakdown"].values()), abs=1e-5)
    assert quote["breakdown"]["storyboard_generation"] == 0  # the offline planner is free
    # The end of the UTC day the quote was made (the request may straddle midnight).
    assert quote["validUntil"] in {f"{day}T23:59:59.000Z" for day in (day_before, day_after)}
    # Twice the scenes, twice the rendering.
    bigger = alice.post("/api/v3/jobs/dry-run", json=job_body(client["id"], sceneCount=8, durationSeconds=20)).json()["data"]
    assert bigger["breakdown"]["image_generation"] == pytest.approx(2 * quote["breakdown"]["image_generation"])
    assert alice.get("/api/v3/jobs").json()["meta"]["total"] == 0  # nothing stored
    # The job stores the same estimate.
    job = alice.post("/api/v3/jobs", json=job_body(client["id"], sceneCount=4)).json()["data"]
    assert alice.get(f"/api/v3/jobs/{job['id']}").json()["data"]["estimatedCost"] == quote["estimatedCost"]


def test_idempotency_key_makes_one_job(alice):
    client = create_client(alice)
    body = job_body(client["id"])
    first = alice.post("/api/v3/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    again = alice.post("/api/v3/jobs", json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["data"]["id"] == again.json()["data"]["id"]
    other = alice.post("/api/v3/jobs", json=body, headers={"Idempotency-Key": "order-43"})
    assert other.json()["data"]["id"] != first.json()["data"]["id"]
    changed = job_body(client["id"], sceneCount=2, durationSeconds=6)
    reused = alice.post("/api/v3/jobs", json=changed, headers={"Idempotency-Key": "order-42"})
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    assert alice.get("/api/v3/jobs").json()["meta"]["total"] == 2


def test_invalid_bodies_are_400(alice):
    client = create_client(alice)
    bad_advanced = [
        {"sceneCount": 0}, {"sceneCount": 13}, {"sceneCount": "three"},
        {"durationSeconds": 1}, {"durationSeconds": 500}, {"sceneCount": 10, "durationSeconds": 5},
        {"aspectRatio": "4:3"}, {"preset": "no-such-preset"}, {"seed": -1},
        {"productImageAssetId": "missing"}, {"unknownKnob": True},
    ]
    for advanced in bad_advanced:
        response = alice.post("/api/v3/jobs", json=job_body(client["id"], **advanced))
        assert response.status_code == 400, (advanced, response.text)
        assert response.json()["error"], advanced
    assert "valid presets" in alice.post("/api/v3/jobs", json=job_body(
        client["id"], preset="no-such-preset")).json()["error"]
    missing = job_body(client["id"])
    del missing["adBasics"]["product"]
    assert "product" in alice.post("/api/v3/jobs", json=missing).json()["error"]
    assert alice.post("/api/v3/jobs", json=job_body("not-my-client")).status_code == 400
    assert alice.post("/api/v3/jobs", content=b"[", headers={"content-type": "application/json"}).status_code == 400
    assert alice.get("/api/v3/jobs").json()["meta"]["total"] == 0


def test_illegal_transitions_are_409_and_change_nothing(alice):
    job = alice.post("/api/v3/jobs", json=job_body(create_client(alice)["id"])).json()["data"]
    url = f"/api/v3/jobs/{job['id']}"
    for body in ({"action": "approve"}, {"action": "regenerate_scene", "payload": {"sceneIdx": 0}}):
        response = alice.post(f"{url}/actions", json=body)
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "illegal_state"
    assert alice.get(f"{url}/video").status_code == 409
    assert alice.get(f"{url}/thumbnail").json()["code"] == "video_not_ready"
    assert alice.get(url).json()["data"]["status"] == "pending"

    assert alice.post(f"{url}/actions", json={"action": "cancel"}).status_code == 200
    assert alice.get(url).json()["data"]["status"] == "cancelled"
    again = alice.post(f"{url}/actions", json={"action": "cancel"})
    assert again.status_code == 409 and "cancelled" in again.json()["error"]
    assert alice.post(f"{url}/actions", json={"action": "explode"}).status_code == 400


def test_active_job_limit_is_429(alice, api):
    client = create_client(alice)
    for _ in range(api.settings.max_active_jobs_per_user):
        assert alice.post("/api/v3/jobs", json=job_body(client["id"])).status_code == 201
    response = alice.post("/api/v3/jobs", json=job_body(client["id"]))
    assert response.status_code == 429 and response.json()["code"] == "too_many_active_jobs"
    assert alice.get("/api/v3/jobs").json()["meta"]["total"] == api.settings.max_active_jobs_per_user


def test_other_users_jobs_are_invisible(alice, bob):
    job = alice.post("/api/v3/jobs", json=job_body(create_client(alice)["id"])).json()["data"]
    base = f"/api/v3/jobs/{job['id']}"
    probes = [("GET", base), ("GET", f"{base}/scenes"), ("GET", f"{base}/scenes/x"),
              ("PUT", f"{base}/scenes/x"), ("DELETE", f"{base}/scenes/x"),
              ("POST", f"{base}/scenes/x/regenerate"), ("GET", f"{base}/video"),
              ("GET", f"{base}/thumbnail"), ("POST", f"{base}/actions")]
    for method, path in probes:
        body = {"action": "cancel"} if path.endswith("actions") else ({} if method in ("PUT", "POST") else None)
        response = bob.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert bob.get("/api/v3/jobs").json()["data"] == []
    assert alice.get(base).json()["data"]["status"] == "pending"  # bob's cancel did nothing
