"""Clients over HTTP, on SQLite + local store and PostgreSQL + S3."""

from __future__ import annotations

from tests.conftest import create_campaign, create_client


def test_create_get_list_update_delete(alice):
    created = create_client(alice)
    assert created["name"] == "Acme Drinks"
    assert created["brandGuidelines"]["colors"] == ["#0055ff", "#ffffff"]
    assert created["brandGuidelines"]["tone"] == "playful"
    assert created["createdAt"].endswith("Z") and created["updatedAt"].endswith("Z")

    fetched = alice.get(f"/api/v3/clients/{created['id']}").json()
    assert fetched["data"] == created and fetched["error"] is None
    assert set(fetched) == {"data", "error", "meta"} and set(fetched["meta"]) == {"timestamp"}

    updated = alice.put(f"/api/v3/clients/{created['id']}", json={"description": "New copy"})
    assert updated.status_code == 200
    assert updated.json()["data"]["description"] == "New copy"
    assert updated.json()["data"]["name"] == "Acme Drinks"  # fields not sent are kept

    listing = alice.get("/api/v3/clients").json()
    assert [c["id"] for c in listing["data"]] == [created["id"]]
    assert listing["meta"]["page"] == 1 and listing["meta"]["total"] == 1

    deleted = alice.delete(f"/api/v3/clients/{created['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["data"] == {"message": "Client deleted successfully"}
    assert alice.get(f"/api/v3/clients/{created['id']}").status_code == 404


def test_pagination_meta(alice):
    ids = [create_client(alice, name=f"Client {i}")["id"] for i in range(5)]
    first = alice.get("/api/v3/clients", params={"limit": 2, "offset": 0}).json()
    third = alice.get("/api/v3/clients", params={"limit": 2, "offset": 4}).json()
    assert first["meta"] == {"timestamp": first["meta"]["timestamp"], "page": 1, "total": 5}
    assert third["meta"]["page"] == 3 and len(third["data"]) == 1
    seen = {c["id"] for c in alice.get("/api/v3/clients", params={"limit": 1000}).json()["data"]}
    assert seen == set(ids)


def test_bad_input_is_400_and_changes_nothing(alice):
    client = create_client(alice)
    cases = [
        alice.post("/api/v3/clients", content=b"{not json", headers={"Content-Type": "application/json"}),
        alice.post("/api/v3/clients", json={"description": "no name"}),
        alice.post("/api/v3/clients", json={"name": 42}),
        alice.post("/api/v3/clients", json={"name": "   "}),
        alice.post("/api/v3/clients", json={"name": "x", "brandGuidelines": {"colors": ["red; drop"]}}),
        alice.put(f"/api/v3/clients/{client['id']}", json={"name": ["list"]}),
        alice.get("/api/v3/clients", params={"limit": 5000}),
        alice.get("/api/v3/clients", params={"limit": 0}),
        alice.get("/api/v3/clients", params={"offset": -1}),
        alice.get("/api/v3/clients", params={"limit": "ten"}),
    ]
    for response in cases:
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["data"] is None and body["error"] and body["code"] == "validation_error"
    assert "name" in cases[1].json()["error"]
    assert "limit" in cases[6].json()["error"]
    assert "offset" in cases[8].json()["error"]
    assert alice.get(f"/api/v3/clients/{client['id']}").json()["data"] == client
    assert alice.get("/api/v3/clients").json()["meta"]["total"] == 1


def test_other_users_clients_are_invisible(alice, bob):
    mine = create_client(alice)
    campaign = create_campaign(alice, mine["id"])
    theirs = create_client(bob, name="Bob's client")
    for method, path in [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/stats")]:
        response = bob.request(method, f"/api/v3/clients/{mine['id']}{path}",
                               json={"name": "stolen", "description": "gone",
                                     "brandGuidelines": {"tone": "grim"}} if method == "PUT" else None)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "client_not_found"
    assert [c["id"] for c in bob.get("/api/v3/clients").json()["data"]] == [theirs["id"]]
    # The owner's client is exactly as it was (every field, updatedAt too), and so is what
    # hangs off it (a DELETE that went through would have cascaded).
    assert alice.get(f"/api/v3/clients/{mine['id']}").json()["data"] == mine
    assert alice.get(f"/api/v3/campaigns/{campaign['id']}").json()["data"] == campaign


def test_unknown_id_is_404(alice):
    response = alice.get("/api/v3/clients/does-not-exist")
    assert response.status_code == 404 and response.json()["error"] == "Client not found"


def test_stats_and_cascading_delete(alice):
    client = create_client(alice)
    campaigns = [create_campaign(alice, client["id"], name=f"C{i}") for i in range(2)]
    stats = alice.get(f"/api/v3/clients/{client['id']}/stats").json()["data"]
    assert stats == {"campaignCount": 2, "videoCount": 0, "totalSpend": 0.0}

    assert alice.delete(f"/api/v3/clients/{client['id']}").status_code == 200
    for campaign in campaigns:  # nothing left dangling
        assert alice.get(f"/api/v3/campaigns/{campaign['id']}").status_code == 404
    assert alice.get("/api/v3/campaigns").json()["meta"]["total"] == 0


def test_null_for_a_required_field_is_400(alice):
    client = create_client(alice)
    response = alice.put(f"/api/v3/clients/{client['id']}", json={"name": None})
    assert response.status_code == 400 and "name may not be null" in response.json()["error"]
    cleared = alice.put(f"/api/v3/clients/{client['id']}", json={"description": None})
    assert cleared.status_code == 200 and cleared.json()["data"]["description"] is None
    campaign = alice.post("/api/v3/campaigns", json={"clientId": client["id"], "name": "C"}).json()["data"]
    assert alice.put(f"/api/v3/campaigns/{campaign['id']}", json={"goal": None}).status_code == 400
    assert alice.get(f"/api/v3/clients/{client['id']}").json()["data"]["name"] == "Acme Drinks"
