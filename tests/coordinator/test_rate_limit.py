"""The per-user rate limit: headers on every response, 429 with Retry-After beyond it, and
one user's traffic never spends another's allowance."""

from __future__ import annotations

import time

SETTINGS_OVERRIDES = {"rate_limit_per_minute": 5}


def test_rate_limit(alice, bob):
    # Windows are aligned to the clock's minutes: start well inside one (these few requests
    # take well under 10 s).
    if time.time() % 60 > 50:
        time.sleep(60 - time.time() % 60)
    remaining = []
    for _ in range(5):
        response = alice.get("/api/v3/clients")
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "5"
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    limited = alice.get("/api/v3/clients")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert bob.get("/api/v3/clients").status_code == 200
