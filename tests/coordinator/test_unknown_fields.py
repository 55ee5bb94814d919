"""A request body field the API does not know is a 400 naming it, at any depth, and nothing is
stored: a typo (``priorty``) or a field of another API must never pass silently."""

from __future__ import annotations

import pytest

from tests.conftest import create_campaign, create_client
from tests.jobs_helpers import advance_job, database_rows, job_body, start_job


def refused(response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation_error" and field in body["error"]
    assert "Extra inputs are not permitted" in body["error"]


@pytest.mark.parametrize("where", ["top", "context", "adBasics", "creative", "direction"])
def test_job_bodies_refuse_unknown_fields(alice, where):
    client = create_client(alice)
    body = job_body(client["id"])
    target = {"top": body, "context": body["context"], "adBasics": body["adBasics"],
              "creative": body["creative"], "direction": body["creative"]["direction"]}[where]
    target["priorty"] = "high"
    for path in ("/api/v3/jobs", "/api/v3/jobs/dry-run"):
        refused(alice.post(path, json=body), "priorty")
    assert alice.get("/api/v3/jobs").json()["meta"]["total"] == 0


def test_client_and_campaign_bodies_refuse_unknown_fields(alice):
    refused(alice.post("/api/v3/clients", json={"name": "Acme", "website": "acme.test"}), "website")
    refused(alice.post("/api/v3/clients", json={"name": "Acme", "brandGuidelines": {"colours": []}}),
            "colours")
    assert alice.get("/api/v3/clients").json()["meta"]["total"] == 0
    client = create_client(alice)
    refused(alice.put(f"/api/v3/clients/{client['id']}", json={"nmae": "Typo"}), "nmae")
    assert alice.get(f"/api/v3/clients/{client['id']}").json()["data"] == client
    refused(alice.post("/api/v3/campaigns", json={"clientId": client["id"], "name": "Summer",
                                                  "budget": 100}), "budget")
    campaign = create_campaign(alice, client["id"])
    refused(alice.put(f"/api/v3/campaigns/{campaign['id']}", json={"budget": 100}), "budget")
    assert alice.get(f"/api/v3/campaigns/{campaign['id']}").json()["data"] == campaign


def test_job_action_and_scene_bodies_refuse_unknown_fields(alice, api):
    job_id = start_job(alice)["id"]
    advance_job(api.settings, job_id, "storyboard_ready")
    before = database_rows(api.settings, job_id)
    scene_id = before["scenes"][0]["id"]
    refused(alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "cancel", "force": True}),
            "force")
    refused(alice.post(f"/api/v3/jobs/{job_id}/actions",
                       json={"action": "regenerate_scene", "payload": {"sceneIdx": 0, "style": "x"}}),
            "payload.style")
    refused(alice.put(f"/api/v3/jobs/{job_id}/scenes/{scene_id}", json={"scirpt": "Typo"}), "scirpt")
    refused(alice.post(f"/api/v3/jobs/{job_id}/scenes/{scene_id}/regenerate",
                       json={"feedback": "brighter", "seed": 3}), "seed")
    assert database_rows(api.settings, job_id) == before


def test_webhook_bodies_refuse_unknown_fields(alice):
    hook = {"url": "https://93.184.215.14/hook", "events": ["job.completed"]}
    refused(alice.post("/api/v3/webhooks", json=hook | {"secret": "mine"}), "secret")
    assert alice.get("/api/v3/webhooks").json()["data"] == []
    created = alice.post("/api/v3/webhooks", json=hook)
    assert created.status_code == 201, created.text
    webhook_id = created.json()["data"]["id"]
    refused(alice.put(f"/api/v3/webhooks/{webhook_id}", json={"evnets": ["job.failed"]}), "evnets")
