"""``advanced.referenceAssetId`` and ``POST /assets/character-reference`` over HTTP, on both
backends, without Ray: what is refused, and that a refusal stores nothing."""

from __future__ import annotations

import json

import pytest

from tests.conftest import create_client
from tests.coordinator.test_assets import png_bytes, stored_keys, upload
from tests.jobs_helpers import database_rows, job_body


def jobs_of(http) -> int:
    response = http.get("/api/v3/jobs")
    assert response.status_code == 200, response.text
    return response.json()["meta"]["total"]


def test_a_job_takes_an_image_asset_of_yours_as_its_reference(alice, api):
    client = create_client(alice)
    asset = upload(alice, png_bytes()).json()["data"]
    response = alice.post("/api/v3/jobs", json=job_body(client["id"], referenceAssetId=asset["id"]))
    assert response.status_code == 201, response.text
    (row,) = database_rows(api.settings, response.json()["data"]["id"])["job"]
    advanced = json.loads(row["advanced"]) if isinstance(row["advanced"], str) else row["advanced"]
    assert advanced["referenceAssetId"] == asset["id"]  # what the job actor reads


def test_another_users_asset_is_refused_like_a_missing_one_and_nothing_is_stored(alice, bob, api):
    theirs = upload(bob, png_bytes()).json()["data"]
    client = create_client(alice)
    keys_before = stored_keys(api)
    answers = [alice.post("/api/v3/jobs", json=job_body(client["id"], referenceAssetId=asset_id))
               for asset_id in (theirs["id"], "no-such-asset")]
    for response in answers:
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["code"] == "unknown_asset" and body["data"] is None
        assert body["error"].startswith("advanced.referenceAssetId: no asset")
        assert "timestamp" in body["meta"]
    # The same answer whether the asset is someone else's or does not exist.
    assert {r.json()["error"].split("'")[0] for r in answers} == {answers[0].json()["error"].split("'")[0]}
    assert jobs_of(alice) == 0 and stored_keys(api) == keys_before


def test_a_reference_must_be_an_image(alice):
    client = create_client(alice)
    document = alice.post("/api/v3/assets", files={"file": ("brief.pdf", b"%PDF-1.4\n%%EOF\n",
                                                            "application/pdf")})
    assert document.status_code == 201, document.text
    response = alice.post("/api/v3/jobs", json=job_body(client["id"],
                                                        referenceAssetId=document.json()["data"]["id"]))
    assert response.status_code == 400 and response.json()["code"] == "validation_error"
    assert "must be an image" in response.json()["error"]
    assert jobs_of(alice) == 0


def test_generating_a_reference_without_renderers_is_a_clear_503_and_stores_nothing(alice, api):
    keys_before = stored_keys(api)
    response = alice.post("/api/v3/assets/character-reference",
                          json={"characterDescription": "Silver metallic humanoid robot"})
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "renderer_unavailable" and body["data"] is None and body["error"]
    assert alice.get("/api/v3/assets").json()["meta"]["total"] == 0
    assert stored_keys(api) == keys_before


@pytest.mark.parametrize("body, problem", [
    ({}, "characterDescription"),
    ({"characterDescription": "   "}, "characterDescription"),
    ({"characterDescription": "x" * 1001}, "characterDescription"),
    ({"characterDescription": "a robot", "character_description": "a robot"}, "character_description"),
    ({"characterDescription": "a robot", "preset": "no-such-preset"}, "unknown preset"),
    ({"characterDescription": "a robot", "clientId": "someone-elses"}, ""),
])
def test_a_bad_reference_request_is_refused_before_rendering(alice, body, problem):
    response = alice.post("/api/v3/assets/character-reference", json=body)
    assert response.status_code in (400, 404), response.text
    assert response.status_code != 503  # refused before any renderer is asked
    assert problem in response.json()["error"]
