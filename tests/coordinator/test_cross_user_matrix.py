"""Another user's ids get exactly what a missing id gets, on every route that takes one.

The matrix is generated from the app's own route table: every HTTP route (and the progress
WebSocket) with an id in its path is called by a second user with the first user's real ids,
and by the same second user with ids that exist nowhere. Both must answer alike (404 and the
same error code; the same refused handshake for the WebSocket), and the first user's data must
be exactly as before. A new route is covered without editing this file; one whose path
parameter or body this file cannot fill makes the test fail until the tables below learn it.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from PIL import Image
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from coordinator.app import create_app
from tests.conftest import create_campaign, create_client
from tests.jobs_helpers import advance_job, job_body

# Path parameter -> which of the owner's rows it names.
ROW_FOR_PARAM = {"client_id": "client", "campaign_id": "campaign", "asset_id": "asset",
                 "job_id": "job", "scene_id": "scene", "webhook_id": "webhook"}

# A body the owner could send, by (method, path template): the intruder sends the same.
BODIES: dict[tuple[str, str], Callable[[dict[str, str]], dict]] = {
    ("PUT", "/api/v3/clients/{client_id}"): lambda ids: {"name": "Taken over"},
    ("PUT", "/api/v3/campaigns/{campaign_id}"): lambda ids: {"name": "Taken over"},
    ("POST", "/api/v3/jobs/{job_id}/actions"): lambda ids: {"action": "cancel"},
    ("PUT", "/api/v3/jobs/{job_id}/scenes/{scene_id}"): lambda ids: {"script": "Taken over"},
    ("POST", "/api/v3/jobs/{job_id}/scenes/{scene_id}/regenerate"): lambda ids: {"feedback": "x"},
    ("PUT", "/api/v3/webhooks/{webhook_id}"): lambda ids: {"description": "Taken over"},
}

# What the owner reads to see that nothing changed (``data`` only: ``meta.timestamp`` moves).
OWNER_VIEWS = ["/api/v3/clients", "/api/v3/clients/{client}", "/api/v3/clients/{client}/stats",
               "/api/v3/campaigns", "/api/v3/campaigns/{campaign}", "/api/v3/assets",
               "/api/v3/assets/{asset}", "/api/v3/jobs", "/api/v3/jobs/{job}",
               "/api/v3/jobs/{job}/scenes", "/api/v3/webhooks", "/api/v3/webhooks/{webhook}",
               "/api/v3/webhooks/{webhook}/deliveries"]

_PATH_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")


@dataclass(frozen=True)
class Endpoint:
    method: str  # "WS" for the WebSocket
    path: str
    has_body: bool

    @property
    def params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    def url(self, ids: dict[str, str]) -> str:
        return _PATH_PARAM.sub(lambda match: ids[match.group(1)], self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def endpoints_with_ids(app) -> Iterator[Endpoint]:  # noqa: ANN001
    """Every route of the app's route table whose path names a row, once per method."""
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path_format
        if not _PATH_PARAM.search(path or ""):
            continue
        if isinstance(route, APIWebSocketRoute):
            yield Endpoint("WS", path, has_body=False)
        elif isinstance(route, APIRoute):
            for method in sorted(route.methods):
                yield Endpoint(method, path, has_body=route.body_field is not None)


@pytest.fixture(scope="module")
def endpoints(api) -> list[Endpoint]:
    found = list(endpoints_with_ids(create_app(api.settings, migrate=False)))
    assert len(found) >= 20, found  # the route table was read, not an empty shell
    return found


@pytest.fixture(scope="module")
def owner(api) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """The first user with a client, campaign, image asset, and a job under review with
    rendered scenes (the state where the most actions are allowed)."""
    with api.client(f"owner-{uuid.uuid4().hex[:6]}") as http:
        client = create_client(http)
        campaign = create_campaign(http, client["id"])
        png = io.BytesIO()
        Image.new("RGB", (8, 8), (250, 10, 10)).save(png, format="PNG")
        asset = http.post("/api/v3/assets", files={"file": ("red.png", png.getvalue(), "image/png")},
                          data={"clientId": client["id"]})
        assert asset.status_code == 201, asset.text
        job = http.post("/api/v3/jobs", json=job_body(client["id"], campaign["id"]))
        assert job.status_code == 201, job.text
        job_id = job.json()["data"]["id"]
        advance_job(api.settings, job_id, "storyboard_ready")
        scenes = http.get(f"/api/v3/jobs/{job_id}/scenes").json()["data"]
        # A public https receiver (an IP, so no DNS) for an event these jobs never reach.
        webhook = http.post("/api/v3/webhooks", json={"url": "https://93.184.215.14/hook",
                                                      "events": ["job.completed"]})
        assert webhook.status_code == 201, webhook.text
        rows = {"client": client["id"], "campaign": campaign["id"],
                "asset": asset.json()["data"]["id"], "job": job_id, "scene": scenes[0]["id"],
                "webhook": webhook.json()["data"]["id"]}
        yield http, rows


def _fill(endpoint: Endpoint, rows: dict[str, str]) -> dict[str, str]:
    unknown = [name for name in endpoint.params if name not in ROW_FOR_PARAM]
    assert not unknown, f"{endpoint}: no row to fill path parameter(s) {unknown}; add to ROW_FOR_PARAM"
    return {name: rows[ROW_FOR_PARAM[name]] for name in endpoint.params}


def _body(endpoint: Endpoint, ids: dict[str, str]) -> dict | None:
    if not endpoint.has_body:
        return None
    make = BODIES.get((endpoint.method, endpoint.path))
    assert make is not None, f"{endpoint} takes a body: add one the owner could send to BODIES"
    return make(ids)


def _answer(api, endpoint: Endpoint, http: httpx.Client, ids: dict[str, str]) -> tuple:  # noqa: ANN001
    """What a request gets, reduced to what must not tell rows apart: status and error code
    (or, for the WebSocket, how the handshake ends)."""
    path = endpoint.url(ids)
    if endpoint.method == "WS":
        url = api.url.replace("http://", "ws://") + path
        try:
            with connect(url, additional_headers={"Authorization": http.headers["Authorization"]},
                         open_timeout=30):
                return ("accepted",)
        except InvalidStatus as refused:
            return ("refused", refused.response.status_code)
    # Streamed, and only a JSON body read: an event stream (GET /jobs/{id}/events) of a job
    # still under review would not end.
    with http.stream(endpoint.method, path, json=_body(endpoint, ids)) as response:
        is_json = response.headers.get("content-type", "").startswith("application/json")
        code = response.json().get("code") if is_json and response.read() else None
    return response.status_code, code


def _owner_view(http: httpx.Client, rows: dict[str, str]) -> dict[str, object]:
    views = {}
    for template in OWNER_VIEWS:
        response = http.get(template.format(**rows))
        assert response.status_code == 200, response.text
        views[template] = response.json()["data"]
    views["asset bytes"] = http.get(f"/api/v3/assets/{rows['asset']}/data").content
    return views


def test_other_users_ids_answer_as_missing_ids_and_change_nothing(api, endpoints, owner):
    owner_http, rows = owner
    before = _owner_view(owner_http, rows)
    missing = {kind: str(uuid.uuid4()) for kind in rows}
    mismatches = []
    with api.client(f"intruder-{uuid.uuid4().hex[:6]}") as intruder:
        for endpoint in endpoints:
            as_theirs = _answer(api, endpoint, intruder, _fill(endpoint, rows))
            as_missing = _answer(api, endpoint, intruder, _fill(endpoint, missing))
            expected_status = 403 if endpoint.method == "WS" else 404
            if as_theirs != as_missing or expected_status not in as_missing:
                mismatches.append(f"{endpoint}: their ids -> {as_theirs}, missing ids -> {as_missing}")
    assert not mismatches, "\n".join(mismatches)
    assert _owner_view(owner_http, rows) == before


def test_the_matrix_reaches_the_rows_for_their_owner(api, endpoints, owner):
    """The same calls as the owner are not 404s: the ids are real, so the matrix above proves
    isolation rather than typos. Only reads, so the owner's rows stay for the matrix."""
    owner_http, rows = owner
    reads = [endpoint for endpoint in endpoints if endpoint.method in ("GET", "HEAD", "WS")]
    answers = {str(endpoint): _answer(api, endpoint, owner_http, _fill(endpoint, rows))
               for endpoint in reads}
    assert not [name for name, answer in answers.items() if 404 in answer or "refused" in answer], answers
