"""The per-user rate limit is one limit for every API replica: two app instances on one
database (as two replicas would be) count a user's requests together, with the same headers
as one replica, and stale windows are deleted."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import create_engine, func, insert, select

from coordinator.app import create_app
from coordinator.db.models import RateLimitWindow
from tests.conftest import LiveServer

LIMIT = 5
PARALLEL = 16
SETTINGS_OVERRIDES = {"rate_limit_per_minute": LIMIT}


def _fresh_window() -> None:
    """Windows are aligned to the clock's minutes: start well inside one, so a test's requests
    all fall in the same window (called right before them: they take well under 10 s)."""
    if time.time() % 60 > 50:
        time.sleep(60 - time.time() % 60)


def _user() -> str:
    return f"rate-{uuid.uuid4().hex[:8]}"


def test_requests_on_two_replicas_count_against_one_limit(api):
    user = _user()
    with LiveServer(create_app(api.settings)) as replica, api.client(user) as http:
        urls = [api.url, replica.url]
        _fresh_window()
        responses = [http.get(urls[i % 2] + "/api/v3/clients") for i in range(LIMIT)]
        assert [r.status_code for r in responses] == [200] * LIMIT
        assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["4", "3", "2", "1", "0"]
        assert {r.headers["x-ratelimit-limit"] for r in responses} == {str(LIMIT)}
        assert len({r.headers["x-ratelimit-reset"] for r in responses}) == 1
        for url in urls:  # each replica alone has seen fewer than LIMIT requests
            limited = http.get(url + "/api/v3/clients")
            assert limited.status_code == 429, limited.text
            assert limited.json()["code"] == "rate_limited"
            assert limited.headers["x-ratelimit-remaining"] == "0"
            assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_parallel_requests_on_two_replicas_let_exactly_the_limit_through(api):
    user = _user()
    start = threading.Barrier(PARALLEL)
    with LiveServer(create_app(api.settings)) as replica:
        urls = [api.url, replica.url]
        _fresh_window()

        def get(index: int) -> int:
            with api.client(user) as http:
                start.wait()
                return http.get(urls[index % 2] + "/api/v3/clients").status_code

        with ThreadPoolExecutor(PARALLEL) as pool:
            statuses = Counter(pool.map(get, range(PARALLEL)))
    assert statuses == {200: LIMIT, 429: PARALLEL - LIMIT}


def test_a_replica_deletes_windows_that_have_ended(api):
    engine = create_engine(api.settings.sync_database_url)
    stale_user, current_user = _user(), _user()
    hour_ago = int(time.time()) // 60 * 60 - 3600
    with engine.begin() as connection:
        connection.execute(insert(RateLimitWindow).values(
            owner_id=stale_user, window_start=hour_ago, count=3))
    try:
        with LiveServer(create_app(api.settings)) as replica, api.client(current_user) as http:
            assert http.get(replica.url + "/api/v3/clients").status_code == 200
        with engine.connect() as connection:
            rows = dict(connection.execute(
                select(RateLimitWindow.owner_id, func.count()).where(
                    RateLimitWindow.owner_id.in_([stale_user, current_user]))
                .group_by(RateLimitWindow.owner_id)).all())
        assert rows == {current_user: 1}
    finally:
        engine.dispose()
