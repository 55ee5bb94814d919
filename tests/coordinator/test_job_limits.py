"""The active-job limit holds under concurrency: many simultaneous ``POST /jobs`` by one user,
on one API replica or spread over two replicas sharing the database, create exactly the
limit's worth of jobs (issue 8, item 3)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from coordinator.app import create_app
from tests.conftest import LiveServer, create_client
from tests.jobs_helpers import job_body

LIMIT = 3
PARALLEL = 20
SETTINGS_OVERRIDES = {"max_active_jobs_per_user": LIMIT}


def _post_all_at_once(urls: list[str], api, user: str, body: dict) -> Counter:
    """``PARALLEL`` creations released together by a barrier, spread round-robin over ``urls``;
    returns how many got each status code."""
    start = threading.Barrier(PARALLEL)

    def post(index: int):
        with api.client(user) as http:
            start.wait()
            response = http.post(urls[index % len(urls)] + "/api/v3/jobs", json=body)
        if response.status_code != 201:
            assert response.json()["code"] == "too_many_active_jobs", response.text
        return response.status_code

    with ThreadPoolExecutor(PARALLEL) as pool:
        return Counter(pool.map(post, range(PARALLEL)))


def _new_user_with_client(api) -> tuple[str, dict]:
    user = f"limit-{uuid.uuid4().hex[:8]}"
    with api.client(user) as http:
        return user, job_body(create_client(http)["id"])


def _job_count(api, user: str) -> int:
    with api.client(user) as http:
        return http.get("/api/v3/jobs").json()["meta"]["total"]


def test_parallel_creations_stop_at_the_limit(api):
    user, body = _new_user_with_client(api)
    statuses = _post_all_at_once([api.url], api, user, body)
    assert statuses == {201: LIMIT, 429: PARALLEL - LIMIT}
    assert _job_count(api, user) == LIMIT


def test_two_api_replicas_share_the_limit(api):
    """A second app instance on the same database, as another replica would be."""
    user, body = _new_user_with_client(api)
    with LiveServer(create_app(api.settings)) as replica:
        statuses = _post_all_at_once([api.url, replica.url], api, user, body)
    assert statuses == {201: LIMIT, 429: PARALLEL - LIMIT}
    assert _job_count(api, user) == LIMIT


def test_cancelling_frees_a_place_under_the_limit(api):
    user, body = _new_user_with_client(api)
    with api.client(user) as http:
        jobs = [http.post("/api/v3/jobs", json=body) for _ in range(LIMIT)]
        assert [r.status_code for r in jobs] == [201] * LIMIT
        assert http.post("/api/v3/jobs", json=body).status_code == 429
        cancel = http.post(f"/api/v3/jobs/{jobs[0].json()['data']['id']}/actions",
                           json={"action": "cancel"})
        assert cancel.status_code == 200, cancel.text
        assert http.post("/api/v3/jobs", json=body).status_code == 201


def test_parallel_retries_with_one_idempotency_key_make_one_job(api):
    """Retries that queue behind their first attempt get that job, not a 429."""
    user, body = _new_user_with_client(api)
    start = threading.Barrier(PARALLEL)

    def post(_):
        with api.client(user, headers={"Idempotency-Key": "one-ad"}) as http:
            start.wait()
            return http.post("/api/v3/jobs", json=body)

    with ThreadPoolExecutor(PARALLEL) as pool:
        responses = list(pool.map(post, range(PARALLEL)))
    assert Counter(r.status_code for r in responses) == {201: 1, 200: PARALLEL - 1}
    assert len({r.json()["data"]["id"] for r in responses}) == 1
    assert _job_count(api, user) == 1
