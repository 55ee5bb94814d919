"""Request body size limits, enforced while the body streams in.

A declared ``Content-Length`` over the limit is answered 413 before any byte is read; an
undeclared (chunked) body is counted as it arrives and cut off at the limit, and the app's own
answer to the cut-off body is replaced by the same 413. Uploads get their own, larger limit.
(Starlette's own limiter answers in plain text; ours keeps the envelope.)
"""

from __future__ import annotations

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
        # A length too long to be a number we would accept is over the limit, without int().
        if declared is not None and declared.isdigit() and (len(declared) > 18
                                                            or int(declared) > limit):
            await _too_large(limit)(scope, receive, send)
            return

        received = 0
        cut_off = False  # the body went over the limit while streaming in
        app_started = False  # the app began its own answer before that

        async def limited_receive() -> Message:
            nonlocal received, cut_off
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut_off = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if cut_off and not app_started:
                # Whatever the app makes of a cut-off body (FastAPI calls it a parse error,
                # a 400) is replaced by our 413 below.
                return
            app_started = app_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not cut_off or app_started:
                raise
        if cut_off and not app_started:
            await _too_large(limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised into the app by ``receive`` when a streaming body passes the limit."""


def _message(limit: int) -> str:
    if limit >= 1024 * 1024:
        return f"Request body too large: the limit is {limit // (1024 * 1024)} MB"
    return f"Request body too large: the limit is {limit // 1024} KB"


def _too_large(limit: int):  # noqa: ANN202
    return error_response(413, _message(limit), "payload_too_large", {"Connection": "close"})
