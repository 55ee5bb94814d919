"""Request body size limits, enforced while the body streams in.

A declared ``Content-Length`` over the limit is answered 413 before any byte is read; an
undeclared (chunked) body is counted as it arrives and cut off at the limit. Uploads get their
own, larger limit. (Starlette's own limiter answers in plain text; ours keeps the envelope.)
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator.envelope import error_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, default_limit: int,
                 route_limits: dict[tuple[str, str], int]):
        self.app = app
        self.default_limit = default_limit
        self.route_limits = route_limits

    def _limit_for(self, scope: Scope) -> int:
        path = scope["path"].rstrip("/") or "/"
        return self.route_limits.get((scope["method"], path), self.default_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPException from body parsing; the handler renders it.
                    raise HTTPException(413, _message(limit))
            return message

        await self.app(scope, limited_receive, send)


def _message(limit: int) -> str:
    if limit >= 1024 * 1024:
        return f"Request body too large: the limit is {limit // (1024 * 1024)} MB"
    return f"Request body too large: the limit is {limit // 1024} KB"


def _too_large(limit: int):  # noqa: ANN202
    return error_response(413, _message(limit), "payload_too_large", {"Connection": "close"})
