"""How many progress streams (WebSocket, Server-Sent Events) one user may hold open at once on
an API replica. Each open stream re-reads its job's row every half second for up to an hour, so
without a bound one client could keep the database busy for everyone; polling is bounded by
the rate limit instead."""

from __future__ import annotations

from collections import Counter


class StreamSlots:
    def __init__(self, per_user: int):
        self.per_user = per_user
        self._open: Counter[str] = Counter()

    def take(self, user: str) -> bool:
        """Takes one of the user's slots; False when all are in use (the caller refuses)."""
        if self._open[user] >= self.per_user:
            return False
        self._open[user] += 1
        return True

    def give_back(self, user: str) -> None:
        self._open[user] -= 1
        if self._open[user] <= 0:
            del self._open[user]

    def open_streams(self, user: str) -> int:
        return self._open[user]
