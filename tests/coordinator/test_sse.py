"""``GET /jobs/{id}/events``: Server-Sent Events read with httpx streaming while the job actor's
own writes (``JobStore``, through ``advance_job``) and the API's actions change the row."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from coordinator.routes import job_events
from tests.jobs_helpers import advance_job, get_job, start_job


def sse_items(lines: Iterator[str]) -> Iterator[dict]:
    """Parses an event stream into events ``{id, event, data}`` and comments ``{comment}``."""
    event: dict = {}
    for line in lines:
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif not line:
            if event:
                yield event
            event = {}
        else:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")
    if event:
        yield event


def events(lines: Iterator[str]) -> Iterator[dict]:
    for item in sse_items(lines):
        if "comment" not in item:
            assert item["event"] == "progress"
            yield {"id": int(item["id"]), **json.loads(item["data"])}


def url(job_id: str) -> str:
    return f"/api/v3/jobs/{job_id}/events"


def test_the_stream_follows_the_job_and_ends_after_its_final_status(alice, api):
    job_id = start_job(alice)["id"]
    with alice.stream("GET", url(job_id)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response.iter_lines())
        first = next(stream)
        assert first["jobId"] == job_id and first["status"] == "pending"

        advance_job(api.settings, job_id, "storyboard_ready")
        seen = [first]
        while seen[-1]["status"] != "storyboard_ready":
            seen.append(next(stream))
        # The same model as polling: progress and stages as GET /jobs/{id} shows them.
        polled = get_job(alice, job_id)
        assert seen[-1]["stages"] == polled["stages"]
        assert all(seen[-1]["progress"][key] == polled["progress"][key]
                   for key in ("stage", "percent", "message", "currentStep", "totalSteps"))
        assert seen[-1]["updatedAt"] == polled["updatedAt"]

        assert alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "cancel"}).status_code == 200
        seen.extend(stream)  # ends by itself after the final status
    assert seen[-1]["status"] == "cancelled"
    assert [stage["status"] for stage in seen[-1]["stages"]][2:] == ["skipped"] * 4
    ids = [event["id"] for event in seen]
    assert ids == sorted(set(ids))


def test_streams_carry_the_queue_position_and_estimate_polling_shows(alice):
    """One progress model: the live fields GET /jobs/{id} works out come on the stream too."""
    job_id = start_job(alice)["id"]  # pending: its renders are all still to do
    with alice.stream("GET", url(job_id)) as response:
        first = next(events(response.iter_lines()))
    polled = get_job(alice, job_id)["progress"]
    assert polled["estimatedCompletionAt"] is not None
    assert first["progress"]["queuePosition"] == polled["queuePosition"]
    assert first["progress"]["estimatedCompletionAt"] is not None
    alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "cancel"})


def test_a_reconnecting_client_gets_only_newer_states(alice, api):
    job_id = start_job(alice)["id"]
    advance_job(api.settings, job_id, "storyboard_ready")
    with alice.stream("GET", url(job_id)) as response:
        ready = next(events(response.iter_lines()))
    assert ready["status"] == "storyboard_ready"

    headers = {"Last-Event-ID": str(ready["id"])}
    with alice.stream("GET", url(job_id), headers=headers) as response:
        assert response.status_code == 200
        stream = events(response.iter_lines())
        # Nothing is repeated: the first event is the cancel made after connecting.
        assert alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "cancel"}).status_code == 200
        resumed = list(stream)
    assert [event["status"] for event in resumed] == ["cancelled"]
    assert resumed[0]["id"] > ready["id"]

    # Resuming after the final state: 204, which tells an EventSource to stop reconnecting.
    done = alice.get(url(job_id), headers={"Last-Event-ID": str(resumed[0]["id"])})
    assert done.status_code == 204 and done.content == b""
    # An older id replays the final state, then the stream ends.
    with alice.stream("GET", url(job_id), headers=headers) as response:
        assert [event["status"] for event in events(response.iter_lines())] == ["cancelled"]


def test_keepalive_comments_while_nothing_changes(alice, monkeypatch):
    monkeypatch.setattr(job_events, "KEEPALIVE_S", 0.0)  # the API runs in this process
    job_id = start_job(alice)["id"]
    with alice.stream("GET", url(job_id)) as response:
        items = sse_items(response.iter_lines())
        assert "id" in next(items)
        assert next(items) == {"comment": "keepalive"}


def test_who_may_read_the_stream(bob, api):
    owner = f"carol-{uuid.uuid4().hex[:6]}"
    with api.client(owner) as carol:
        job_id = start_job(carol)["id"]
    advance_job(api.settings, job_id, "cancelled")  # a final state: the stream ends at once
    # A browser's EventSource cannot send headers: the token cookie authenticates the GET.
    with api.client(None, cookies={"token": api.token(owner)}) as browser:
        with browser.stream("GET", url(job_id)) as response:
            assert response.status_code == 200
            assert [e["status"] for e in events(response.iter_lines())] == ["cancelled"]
    with api.client(None) as anonymous:
        refused = anonymous.get(url(job_id))
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    other = bob.get(url(job_id))
    assert other.status_code == 404 and other.json()["code"] == "job_not_found"


@pytest.mark.parametrize("value", ["yesterday", "-1", "1" * 40])
def test_a_malformed_last_event_id_is_a_400(alice, value):
    job_id = start_job(alice)["id"]
    response = alice.get(url(job_id), headers={"Last-Event-ID": value})
    assert response.status_code == 400 and response.json()["code"] == "validation_error"


def test_a_user_holds_at_most_the_limit_of_open_streams(alice, bob, api):
    """Every open stream re-reads its job twice a second: one user cannot open them without
    bound. The stream past the limit gets a 429 (SSE) or a 1013 close (WebSocket); another
    user is not affected; closing a stream frees its slot."""
    from contextlib import ExitStack

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    limit = api.settings.max_streams_per_user  # the default: these tests set none
    job_id = start_job(alice)["id"]  # pending: its streams stay open
    with ExitStack() as open_streams:
        for _ in range(limit):
            response = open_streams.enter_context(alice.stream("GET", url(job_id)))
            assert response.status_code == 200
        refused = alice.get(url(job_id))
        assert refused.status_code == 429 and refused.json()["code"] == "too_many_streams"
        assert int(refused.headers["Retry-After"]) > 0
        socket_url = api.url.replace("http://", "ws://") + f"/api/v3/jobs/{job_id}/ws"
        with connect(socket_url, additional_headers={"Authorization": alice.headers["Authorization"]},
                     open_timeout=30) as socket:
            with pytest.raises(ConnectionClosed) as closed:
                socket.recv(timeout=30)
        assert closed.value.rcvd.code == 1013
        # Bob's own stream opens.
        bob_job = start_job(bob)["id"]
        with bob.stream("GET", url(bob_job)) as response:
            assert response.status_code == 200
    # All closed: the slots are free again once the server has seen the disconnects.
    assert _opens_within(alice, url(job_id), 30)


def _opens_within(http, path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        with http.stream("GET", path) as response:
            if response.status_code == 200:
                return True
            assert response.status_code == 429
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
