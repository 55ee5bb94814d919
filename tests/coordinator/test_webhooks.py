"""Webhooks: job events reach the owner's endpoint signed as Standard Webhooks say (checked
with the reference ``standardwebhooks`` library), failed deliveries are retried with backoff
and every attempt is visible to the owner, private URLs are refused, endpoints are private to
their owner, and rotating the secret changes the signature.

The receiver is a real HTTP server on loopback, allowed by ``WEBHOOK_ALLOW_NETWORKS``; events
come from the job actor's own writes (``advance_job``), sent by the API's sender loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from coordinator.envelope import APIError
from coordinator.webhooks.target import resolve_target
from tests.conftest import create_client, wait_until
from tests.jobs_helpers import advance_job, job_body

RETRY_BASE_SECONDS = 0.05
MAX_ATTEMPTS = 4
SETTINGS_OVERRIDES = {"webhook_allow_networks": ["127.0.0.0/8"],
                      "webhook_retry_base_seconds": RETRY_BASE_SECONDS,
                      "webhook_max_attempts": MAX_ATTEMPTS, "webhook_poll_seconds": 0.05,
                      "webhook_timeout_seconds": 5.0}


class Receiver:
    """A loopback HTTP server that records every request and answers each path with the
    statuses it is given, in turn (200 once they run out)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: dict[str, list[int]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                queued = receiver.statuses.get(self.path, [])
                status = queued.pop(0) if queued else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def received(self, path: str) -> list[dict]:
        return [request for request in self.requests if request["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def create_webhook(http, url: str, **fields) -> dict:  # noqa: ANN001
    response = http.post("/api/v3/webhooks", json={"url": url} | fields)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def start_job(http, client_id: str) -> str:  # noqa: ANN001
    response = http.post("/api/v3/jobs", json=job_body(client_id))
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


def deliveries(http, webhook_id: str) -> list[dict]:  # noqa: ANN001
    response = http.get(f"/api/v3/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def verify(secret: str, request: dict) -> dict:
    return Webhook(secret).verify(request["body"], request["headers"])


def test_a_job_event_arrives_signed_and_a_replay_is_refused(api, alice, receiver):
    client = create_client(alice)
    other_client = create_client(alice, name="Other brand")
    hook = create_webhook(alice, receiver.url("/signed"), clientId=client["id"],
                          events=["job.completed"])
    assert hook["secret"].startswith("whsec_")
    create_webhook(alice, receiver.url("/other-client"), clientId=other_client["id"])
    job_id = start_job(alice, client["id"])

    advance_job(api.settings, job_id, "completed")  # passes storyboard_ready on the way
    request = wait_until(lambda: receiver.received("/signed"), what="the webhook")[0]
    payload = verify(hook["secret"], request)
    assert payload["type"] == "job.completed"
    assert payload["data"]["jobId"] == job_id and payload["data"]["status"] == "completed"
    assert json.loads(request["body"]) == payload
    record = wait_until(lambda: [d for d in deliveries(alice, hook["id"])
                                 if d["status"] == "succeeded"], what="the recorded delivery")
    assert [(d["id"], d["event"], d["jobId"]) for d in record] == [
        (request["headers"]["webhook-id"], "job.completed", job_id)]
    assert [(a["attempt"], a["statusCode"], a["error"]) for a in record[0]["attempts"]] == [
        (1, 200, None)]
    # Only the event it asked for, and nothing for the other client's endpoint.
    assert len(receiver.received("/signed")) == 1
    assert receiver.received("/other-client") == []

    # A replay later on carries the old timestamp, refused; a fresh one breaks the signature.
    signed_at = int(request["headers"]["webhook-timestamp"])
    for timestamp, reason in ((signed_at - 600, "too old"), (int(time.time()) + 1, "signature")):
        replay = request | {"headers": request["headers"] | {"webhook-timestamp": str(timestamp)}}
        with pytest.raises(WebhookVerificationError, match=reason):
            verify(hook["secret"], replay)
    with pytest.raises(WebhookVerificationError):
        verify(hook["secret"], request | {"body": request["body"].replace("completed", "failed")})


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_is_visible(api, alice,
                                                                                 receiver):
    receiver.statuses["/flaky"] = [500, 500, 200]
    receiver.statuses["/down"] = [503] * MAX_ATTEMPTS
    client = create_client(alice)
    flaky = create_webhook(alice, receiver.url("/flaky"), events=["job.failed"])
    down = create_webhook(alice, receiver.url("/down"), events=["job.failed"])
    job_id = start_job(alice, client["id"])

    advance_job(api.settings, job_id, "failed")
    done = {"succeeded", "failed"}
    [delivered] = wait_until(lambda: [d for d in deliveries(alice, flaky["id"])
                                      if d["status"] in done], what="the flaky delivery")
    assert delivered["status"] == "succeeded" and delivered["attemptCount"] == 3
    attempts = delivered["attempts"]
    assert [(a["attempt"], a["statusCode"]) for a in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert [bool(a["error"]) for a in attempts] == [True, True, False]
    assert "500" in attempts[0]["error"]
    # Each retry waited at least its backoff: base, then twice the base.
    for n in (1, 2):
        waited = (datetime.fromisoformat(attempts[n]["startedAt"])
                  - datetime.fromisoformat(attempts[n - 1]["finishedAt"])).total_seconds()
        assert waited >= RETRY_BASE_SECONDS * 2 ** (n - 1)
    # Every attempt is the same message (one webhook-id), each validly signed.
    sent = receiver.received("/flaky")
    assert len(sent) == 3 and {r["headers"]["webhook-id"] for r in sent} == {delivered["id"]}
    for request in sent:
        assert verify(flaky["secret"], request)["data"]["jobId"] == job_id

    # A receiver that never recovers: the bounded number of attempts, then given up.
    [given_up] = wait_until(lambda: [d for d in deliveries(alice, down["id"])
                                     if d["status"] in done], what="the failed delivery")
    assert given_up["status"] == "failed" and given_up["nextAttemptAt"] is None
    assert [a["statusCode"] for a in given_up["attempts"]] == [503] * MAX_ATTEMPTS
    assert len(receiver.received("/down")) == MAX_ATTEMPTS


@pytest.mark.parametrize("url, code", [
    ("http://10.0.0.5/hook", "url_not_allowed"),
    ("https://192.168.1.10/hook", "url_not_allowed"),
    ("http://169.254.169.254/latest/meta-data", "url_not_allowed"),  # cloud metadata
    ("http://[::1]:8080/hook", "url_not_allowed"),  # loopback, but not in the trusted networks
    ("http://[::ffff:10.0.0.1]/hook", "url_not_allowed"),
    ("http://0.0.0.0:8080/hook", "url_not_allowed"),
    ("http://93.184.215.14/hook", "url_scheme_not_allowed"),  # public, but not https
    ("ftp://93.184.215.14/hook", "url_scheme_not_allowed"),
    ("https://user:pw@93.184.215.14/hook", "url_not_allowed"),
    ("https://no-such-host.invalid/hook", "url_invalid"),
])
def test_a_private_or_unsafe_url_is_refused_and_nothing_is_stored(alice, url, code):
    response = alice.post("/api/v3/webhooks", json={"url": url})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert alice.get("/api/v3/webhooks").json()["data"] == []


def test_loopback_is_refused_without_the_trusted_network_setting():
    async def check() -> str:
        try:
            await resolve_target("http://127.0.0.1:8080/hook", allow_networks=[])
        except APIError as refused:
            return refused.code
        return "accepted"

    assert asyncio.run(check()) == "url_not_allowed"


def test_another_user_can_neither_see_nor_change_an_endpoint(alice, bob, receiver):
    hook = create_webhook(alice, receiver.url("/private"))
    before = alice.get(f"/api/v3/webhooks/{hook['id']}").json()["data"]
    attempts = [("GET", ""), ("GET", "/deliveries"), ("POST", "/rotate-secret"),
                ("PUT", ""), ("DELETE", "")]
    for method, tail in attempts:
        body = {"url": receiver.url("/stolen")} if method == "PUT" else None
        response = bob.request(method, f"/api/v3/webhooks/{hook['id']}{tail}", json=body)
        assert (response.status_code, response.json()["code"]) == (404, "webhook_not_found"), \
            f"{method} {tail}"
    assert bob.get("/api/v3/webhooks").json()["data"] == []
    assert alice.get(f"/api/v3/webhooks/{hook['id']}").json()["data"] == before
    assert before["secret"] is None  # shown only at creation and rotation


def test_rotating_the_secret_changes_the_signature(api, alice, receiver):
    client = create_client(alice)
    hook = create_webhook(alice, receiver.url("/rotated"), events=["job.storyboard_ready"])
    rotated = alice.post(f"/api/v3/webhooks/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]
    assert new["secret"].startswith("whsec_") and new["secret"] != hook["secret"]
    assert new["previousSecretExpiresAt"] is not None  # the old one signs during the grace period

    job_id = start_job(alice, client["id"])
    advance_job(api.settings, job_id, "storyboard_ready")
    request = wait_until(lambda: receiver.received("/rotated"), what="the webhook")[0]
    assert verify(new["secret"], request)["type"] == "job.storyboard_ready"
    # Signed with both during the grace period, so receivers still on the old secret verify too.
    signatures = request["headers"]["webhook-signature"].split(" ")
    assert len(signatures) == 2
    new_only = request | {"headers": request["headers"] | {"webhook-signature": signatures[0]}}
    assert verify(new["secret"], new_only)
    with pytest.raises(WebhookVerificationError):
        verify(hook["secret"], new_only)  # the new signature is not the old secret's
    assert verify(hook["secret"], request)


def test_a_job_names_its_own_endpoint(api, alice, bob, receiver):
    """An endpoint registered `jobsOnly` hears only from the jobs that name it (`webhookId`),
    whatever their client; a job cannot name another user's endpoint."""
    client = create_client(alice)
    named = create_webhook(alice, receiver.url("/named"), jobsOnly=True,
                           events=["job.completed"])
    assert named["jobsOnly"] is True
    quiet_job = start_job(alice, client["id"])  # names no endpoint
    response = alice.post("/api/v3/jobs", json=job_body(client["id"]) | {"webhookId": named["id"]})
    assert response.status_code == 201, response.text
    loud_job = response.json()["data"]["id"]
    assert alice.get(f"/api/v3/jobs/{loud_job}").json()["data"]["webhookId"] == named["id"]

    advance_job(api.settings, quiet_job, "completed")
    advance_job(api.settings, loud_job, "completed")
    request = wait_until(lambda: receiver.received("/named"), what="the named job's event")[0]
    assert verify(named["secret"], request)["data"]["jobId"] == loud_job
    finished = wait_until(lambda: [d for d in deliveries(alice, named["id"])
                                   if d["status"] == "succeeded"], what="the delivery record")
    assert [d["jobId"] for d in finished] == [loud_job]  # nothing for the job that named none

    bobs_client = create_client(bob)
    refused = bob.post("/api/v3/jobs", json=job_body(bobs_client["id"]) | {"webhookId": named["id"]})
    assert refused.status_code == 400 and refused.json()["code"] == "unknown_webhook"
    assert bob.get("/api/v3/jobs").json()["meta"]["total"] == 0
