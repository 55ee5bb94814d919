"""Campaigns over HTTP."""

from __future__ import annotations

from tests.conftest import create_campaign, create_client


def test_crud_and_filter_by_client(alice):
    first, second = create_client(alice, name="One"), create_client(alice, name="Two")
    campaign = create_campaign(alice, first["id"])
    create_campaign(alice, second["id"], name="Other")
    assert campaign["clientId"] == first["id"] and campaign["status"] == "active"

    only_first = alice.get("/api/v3/campaigns", params={"client_id": first["id"]}).json()
    assert [c["id"] for c in only_first["data"]] == [campaign["id"]]
    assert only_first["meta"]["total"] == 1
    assert alice.get("/api/v3/campaigns").json()["meta"]["total"] == 2

    updated = alice.put(f"/api/v3/campaigns/{campaign['id']}", json={"status": "paused", "brief": "B"})
    assert updated.json()["data"]["status"] == "paused" and updated.json()["data"]["brief"] == "B"
    assert updated.json()["data"]["name"] == "Summer launch"

    stats = alice.get(f"/api/v3/campaigns/{campaign['id']}/stats").json()["data"]
    assert stats == {"videoCount": 0, "totalSpend": 0.0, "avgCost": 0.0}

    assert alice.delete(f"/api/v3/campaigns/{campaign['id']}").status_code == 200
    assert alice.get(f"/api/v3/campaigns/{campaign['id']}").status_code == 404
    assert alice.get(f"/api/v3/clients/{first['id']}").status_code == 200  # client stays


def test_client_must_be_yours(alice, bob):
    bobs = create_client(bob)
    response = alice.post("/api/v3/campaigns", json={"clientId": bobs["id"], "name": "x"})
    assert response.status_code == 400 and "clientId" in response.json()["error"]
    response = alice.post("/api/v3/campaigns", json={"clientId": "nope", "name": "x"})
    assert response.status_code == 400
    assert bob.get("/api/v3/campaigns").json()["meta"]["total"] == 0
    assert alice.get("/api/v3/campaigns").json()["meta"]["total"] == 0


def test_bad_input(alice):
    client = create_client(alice)
    campaign = create_campaign(alice, client["id"])
    for response in [
        alice.post("/api/v3/campaigns", json={"name": "no client"}),
        alice.post("/api/v3/campaigns", json={"clientId": client["id"], "name": "x", "status": "bogus"}),
        alice.put(f"/api/v3/campaigns/{campaign['id']}", json={"status": 7}),
        alice.get("/api/v3/campaigns", params={"limit": 1001}),
    ]:
        assert response.status_code == 400, response.text
    assert alice.get(f"/api/v3/campaigns/{campaign['id']}").json()["data"] == campaign


def test_other_users_campaigns_are_invisible(alice, bob):
    campaign = create_campaign(alice, create_client(alice)["id"])
    for method in ("GET", "PUT", "DELETE"):
        response = bob.request(method, f"/api/v3/campaigns/{campaign['id']}",
                               json={"name": "x", "status": "paused", "brief": "hijacked"}
                               if method == "PUT" else None)
        assert response.status_code == 404, method
        assert response.json()["code"] == "campaign_not_found"
    assert bob.get(f"/api/v3/campaigns/{campaign['id']}/stats").status_code == 404
    assert bob.get("/api/v3/campaigns", params={"client_id": campaign["clientId"]}).json()["data"] == []
    # The owner's campaign is exactly as it was: every field, updatedAt too.
    assert alice.get(f"/api/v3/campaigns/{campaign['id']}").json()["data"] == campaign
