"""Per-user request rate limit (fixed one-minute windows), with the ``X-RateLimit-*`` headers
of spec 002 on every authenticated response and 429 + ``Retry-After`` beyond the limit.

Counts live in the database (``rate_limit_windows``), so every API replica shares one limit:
each request is one upsert-increment of its (user, window) row, ``INSERT ... ON CONFLICT DO
UPDATE ... RETURNING`` (PostgreSQL, SQLite >= 3.35), which is atomic on both. Windows are
aligned to the clock (``window_start`` = a multiple of 60 s), so replicas agree on them; each
replica deletes windows older than the current one once per window.
"""

from __future__ import annotations

import time

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from coordinator.db.models import RateLimitWindow
from coordinator.envelope import APIError

WINDOW_S = 60


class RateLimiter:
    def __init__(self, limit_per_minute: int, engine: AsyncEngine):
        self.limit = limit_per_minute
        self._engine = engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert
        self._pruned_before = 0  # this replica deleted the windows older than this one

    async def hit(self, user: str, now: float | None = None) -> dict[str, str]:
        """Counts one request; returns the headers to send, or raises 429."""
        now = time.time() if now is None else now
        window_start = int(now) // WINDOW_S * WINDOW_S
        reset = window_start + WINDOW_S
        insert = self._insert(RateLimitWindow).values(owner_id=user, window_start=window_start,
                                                      count=1)
        # Past the limit the row is left alone and no row comes back: the count stays the
        # number of requests let through.
        upsert = insert.on_conflict_do_update(
            index_elements=[RateLimitWindow.owner_id, RateLimitWindow.window_start],
            set_={"count": RateLimitWindow.count + 1},
            where=RateLimitWindow.count < self.limit,
        ).returning(RateLimitWindow.count)
        async with self._engine.begin() as connection:
            count = (await connection.execute(upsert)).scalar_one_or_none()
            if self._pruned_before < window_start:
                await connection.execute(delete(RateLimitWindow).where(
                    RateLimitWindow.window_start < window_start))
                self._pruned_before = window_start
        if count is None:
            retry_after = max(1, reset - int(now))
            raise APIError(429, f"Rate limit of {self.limit} requests per minute exceeded; "
                           f"retry in {retry_after} s", "rate_limited",
                           headers={**self._headers(0, reset), "Retry-After": str(retry_after)})
        return self._headers(self.limit - count, reset)

    def _headers(self, remaining: int, reset: int) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset": str(reset)}
