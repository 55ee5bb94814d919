"""Hostile input at the HTTP layer: huge offsets and ranges, NUL characters, chunked bodies over
the limit, CORS on error answers, ``Allow`` on 405, campaigns moved to another client, and
``Idempotency-Key`` reuse across users. Each answer is a clear 4xx that changes nothing."""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import pytest

from coordinator.app import create_app
from coordinator.auth import issue_local_token
from coordinator.deps import MAX_OFFSET
from tests.conftest import LiveServer, create_campaign, create_client, make_settings
from tests.coordinator.test_assets import png_bytes, upload
from tests.jobs_helpers import job_body

LISTS = ("/api/v3/clients", "/api/v3/campaigns", "/api/v3/assets", "/api/v3/jobs")
ORIGIN = "http://localhost:3000"  # one of the default CORS_ORIGINS


def _refused(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["data"] is None and body["code"] == code and body["error"], body
    return body


def _total(http: httpx.Client, path: str) -> int:
    return http.get(path).json()["meta"]["total"]


# ---- pagination -------------------------------------------------------------------------------

def test_offset_beyond_its_bound_is_400_on_every_list(alice):
    create_client(alice)
    for path in LISTS:
        for offset in (MAX_OFFSET + 1, 2**63):  # 2**63 overflowed both databases (500)
            body = _refused(alice.get(path, params={"offset": offset}), 400, "validation_error")
            assert "offset" in body["error"]
        at_bound = alice.get(path, params={"offset": MAX_OFFSET})
        assert at_bound.status_code == 200 and at_bound.json()["data"] == []


# ---- NUL characters ---------------------------------------------------------------------------

def _multipart_with_filename(filename: bytes, content: bytes) -> tuple[bytes, str]:
    """A multipart body written by hand: HTTP clients escape odd filenames, an attacker won't."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
            + b"Content-Type: image/png\r\n\r\n" + content + f"\r\n--{boundary}--\r\n".encode())
    return body, f"multipart/form-data; boundary={boundary}"


def test_nul_in_any_text_is_refused_on_both_databases(alice):
    client = create_client(alice)
    campaign = create_campaign(alice, client["id"])
    brief = job_body(client["id"])
    brief["adBasics"]["keyMessage"] = "Zero\x00sugar"
    raw_upload, raw_type = _multipart_with_filename(b"a\x00b.png", png_bytes())
    cases = {
        "json field": alice.post("/api/v3/clients", json={"name": "a\x00b"}),
        "nested json": alice.post("/api/v3/clients",
                                  json={"name": "ok", "brandGuidelines": {"fonts": ["Ar\x00ial"]}}),
        "json key": alice.post("/api/v3/clients", json={"name": "ok", "x\x00": 1}),
        "campaign brief": alice.post("/api/v3/campaigns", json={
            "clientId": client["id"], "name": "Summer", "brief": "lime\x00fizz"}),
        "campaign update": alice.put(f"/api/v3/campaigns/{campaign['id']}", json={"goal": "\x00"}),
        "job brief": alice.post("/api/v3/jobs", json=brief),
        "path param": alice.get("/api/v3/clients/a%00b"),
        "path param on a write": alice.put("/api/v3/clients/a%00b", json={"name": "ok"}),
        "query param": alice.get("/api/v3/jobs", params={"client_id": "a\x00b"}),
        "multipart field": upload(alice, png_bytes(), name="a\x00b"),
        # The NUL is an escape inside the tags JSON, so only the decoded text shows it.
        "json escape in a multipart field": upload(alice, png_bytes(), tags='["a\\u0000b"]'),
        "multipart filename": alice.post("/api/v3/assets", content=raw_upload,
                                         headers={"Content-Type": raw_type}),
    }
    for label, response in cases.items():
        body = _refused(response, 400, "validation_error")
        assert "NUL" in body["error"], (label, body)

    assert _total(alice, "/api/v3/clients") == 1
    assert _total(alice, "/api/v3/campaigns") == 1
    assert alice.get(f"/api/v3/campaigns/{campaign['id']}").json()["data"] == campaign
    assert _total(alice, "/api/v3/assets") == 0
    assert _total(alice, "/api/v3/jobs") == 0


# ---- body size --------------------------------------------------------------------------------

def _chunked_json(size: int):
    """A JSON body of about ``size`` bytes sent without Content-Length (Transfer-Encoding: chunked)."""
    yield b'{"name": "x", "description": "'
    sent = 0
    while sent < size:
        chunk = min(64 * 1024, size - sent)
        yield b"y" * chunk
        sent += chunk
    yield b'"}'


def test_chunked_body_over_the_limit_is_413(alice, api):
    limit = api.settings.max_json_body_kb * 1024
    response = alice.post("/api/v3/clients", content=_chunked_json(limit + 10),
                          headers={"Content-Type": "application/json", "Origin": ORIGIN})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    _refused(response, 413, "payload_too_large")
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert _total(alice, "/api/v3/clients") == 0
    # Under the limit, the same chunked request is fine.
    small = alice.post("/api/v3/clients", content=_chunked_json(1000),
                       headers={"Content-Type": "application/json"})
    assert small.status_code == 201, small.text


# ---- HTTP Range -------------------------------------------------------------------------------

def test_range_with_huge_numbers_does_not_crash(alice):
    content = png_bytes()
    size = len(content)
    asset = upload(alice, content).json()["data"]
    huge = "9" * 5000

    to_the_end = alice.get(asset["url"], headers={"Range": f"bytes=0-{huge}"})
    assert to_the_end.status_code == 206 and to_the_end.content == content
    assert to_the_end.headers["content-range"] == f"bytes 0-{size - 1}/{size}"

    suffix = alice.get(asset["url"], headers={"Range": f"bytes=-{huge}"})
    assert suffix.status_code == 206 and suffix.content == content

    leading_zeros = alice.get(asset["url"], headers={"Range": f"bytes={'0' * 5000}1-2"})
    assert leading_zeros.status_code == 206 and leading_zeros.content == content[1:3]

    past_the_end = alice.get(asset["url"], headers={"Range": f"bytes={huge}-"})
    _refused(past_the_end, 416, "range_not_satisfiable")
    assert past_the_end.headers["content-range"] == f"bytes */{size}"


# ---- CORS on errors ---------------------------------------------------------------------------

def test_error_answers_carry_cors_headers(api, alice):
    big = "x" * (api.settings.max_json_body_kb * 1024 + 10)
    with api.client(user=None) as anonymous:
        answers = {
            413: alice.post("/api/v3/clients", json={"name": "x", "description": big},
                            headers={"Origin": ORIGIN}),
            400: alice.post("/api/v3/clients", json={"name": ""}, headers={"Origin": ORIGIN}),
            401: anonymous.get("/api/v3/clients", headers={"Origin": ORIGIN}),
            404: alice.get("/api/v3/clients/missing", headers={"Origin": ORIGIN}),
            405: alice.patch("/api/v3/clients", headers={"Origin": ORIGIN}),
        }
    for status, response in answers.items():
        assert response.status_code == status, response.text
        assert response.headers.get("access-control-allow-origin") == ORIGIN, status
        assert response.headers.get("access-control-allow-credentials") == "true", status
    foreign = alice.get("/api/v3/clients/missing", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in foreign.headers


@pytest.fixture
def strict_api(tmp_path, request):
    """A SQLite API of its own with a rate limit of two requests a minute."""
    settings = make_settings(tmp_path, "sqlite-local", request, rate_limit_per_minute=2)
    with LiveServer(create_app(settings)) as server:
        yield server.url, settings


def test_429_and_500_carry_cors_headers(strict_api):
    url, settings = strict_api

    def as_user(user: str) -> httpx.Client:
        token = issue_local_token(settings, user)
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}",
                                                   "Origin": ORIGIN})

    with as_user("eager") as eager:
        statuses = [eager.get("/api/v3/clients").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = eager.get("/api/v3/clients")
        _refused(limited, 429, "rate_limited")
        assert limited.headers["access-control-allow-origin"] == ORIGIN

    # A broken database is our fault: 500, no details, and still readable by the page.
    with sqlite3.connect(settings.renderfarm_home / "renderfarm.db") as db:
        db.execute("DROP TABLE campaigns")
    with as_user("unlucky") as unlucky:
        broken = unlucky.get("/api/v3/campaigns")
        body = _refused(broken, 500, "internal_error")
        assert "campaigns" not in body["error"]
        assert broken.headers["access-control-allow-origin"] == ORIGIN


# ---- 405 --------------------------------------------------------------------------------------

def _allow(response: httpx.Response) -> set[str]:
    assert response.status_code == 405, response.text
    assert response.json()["code"] == "method_not_allowed"
    return {method.strip() for method in response.headers["allow"].split(",")}


def test_405_lists_every_method_of_the_path(alice):
    client = create_client(alice)
    assert _allow(alice.patch(f"/api/v3/clients/{client['id']}")) == {"GET", "PUT", "DELETE"}
    assert _allow(alice.patch("/api/v3/clients")) == {"GET", "POST"}
    assert _allow(alice.put("/api/v3/assets/some-id/data")) == {"GET", "HEAD"}
    assert _allow(alice.patch("/api/v3/jobs/some-id/scenes/some-scene")) == {"GET", "PUT", "DELETE"}


# ---- campaigns stay with their client -----------------------------------------------------------

def test_campaign_cannot_move_to_another_client(alice, bob):
    home = create_client(alice)
    other = create_client(alice, name="Other brand")
    bobs = create_client(bob, name="Bob's secret brand")
    campaign = create_campaign(alice, home["id"])
    path = f"/api/v3/campaigns/{campaign['id']}"

    answers = {target: alice.put(path, json={"clientId": target, "name": "Moved"})
               for target in (other["id"], bobs["id"], "no-such-client")}
    messages = set()
    for response in answers.values():
        body = _refused(response, 400, "campaign_client_immutable")
        assert "clientId" in body["error"]
        messages.add(body["error"])
    # Bob's client id is answered exactly like an id that does not exist.
    assert len(messages) == 1
    assert alice.get(path).json()["data"] == campaign

    same = alice.put(path, json={"clientId": home["id"], "name": "Renamed"})
    assert same.status_code == 200, same.text
    assert same.json()["data"]["clientId"] == home["id"]
    assert same.json()["data"]["name"] == "Renamed"


# ---- Idempotency-Key --------------------------------------------------------------------------

def test_idempotency_key_belongs_to_its_user(alice, bob):
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    alices_client, bobs_client = create_client(alice), create_client(bob)
    first = alice.post("/api/v3/jobs", json=job_body(alices_client["id"]), headers=key)
    assert first.status_code == 201, first.text
    alices_job = first.json()["data"]

    # Bob replays Alice's exact request with her key: he must not be handed her job.
    replay = bob.post("/api/v3/jobs", json=job_body(alices_client["id"]), headers=key)
    _refused(replay, 400, "unknown_client")

    # The same key on Bob's own brief makes Bob's own job, and retries find his, not hers.
    mine = bob.post("/api/v3/jobs", json=job_body(bobs_client["id"]), headers=key)
    assert mine.status_code == 201, mine.text
    bobs_job = mine.json()["data"]
    assert bobs_job["id"] != alices_job["id"]
    retried = bob.post("/api/v3/jobs", json=job_body(bobs_client["id"]), headers=key)
    assert retried.status_code == 200 and retried.json()["data"]["id"] == bobs_job["id"]
    again = alice.post("/api/v3/jobs", json=job_body(alices_client["id"]), headers=key)
    assert again.status_code == 200 and again.json()["data"]["id"] == alices_job["id"]

    assert [job["id"] for job in bob.get("/api/v3/jobs").json()["data"]] == [bobs_job["id"]]
    assert [job["id"] for job in alice.get("/api/v3/jobs").json()["data"]] == [alices_job["id"]]
