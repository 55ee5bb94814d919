"""Per-user request rate limit (a fixed one-minute window), with the ``X-RateLimit-*`` headers
of spec 002 on every authenticated response and 429 + ``Retry-After`` beyond the limit.

Counts are kept per API replica, in memory: with N replicas a user gets at most N times the
limit, which is the usual trade for not putting a shared store on every request's path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from coordinator.envelope import APIError

WINDOW_S = 60
_MAX_TRACKED_USERS = 100_000


@dataclass
class _Window:
    started: float
    count: int


class RateLimiter:
    def __init__(self, limit_per_minute: int):
        self.limit = limit_per_minute
        self._windows: dict[str, _Window] = {}

    def hit(self, user: str, now: float | None = None) -> dict[str, str]:
        """Counts one request; returns the headers to send, or raises 429."""
        now = time.time() if now is None else now
        window = self._windows.get(user)
        if window is None or now - window.started >= WINDOW_S:
            if len(self._windows) >= _MAX_TRACKED_USERS:
                self._forget_expired(now)
            window = self._windows[user] = _Window(started=now, count=0)
        reset = int(window.started + WINDOW_S)
        if window.count >= self.limit:
            retry_after = max(1, reset - int(now))
            raise APIError(429, f"Rate limit of {self.limit} requests per minute exceeded; "
                           f"retry in {retry_after} s", "rate_limited",
                           headers={**self._headers(0, reset), "Retry-After": str(retry_after)})
        window.count += 1
        return self._headers(self.limit - window.count, reset)

    def _headers(self, remaining: int, reset: int) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(reset)}

    def _forget_expired(self, now: float) -> None:
        self._windows = {user: w for user, w in self._windows.items() if now - w.started < WINDOW_S}
