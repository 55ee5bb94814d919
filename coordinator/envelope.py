"""The ``APIResponse`` envelope every response wears, and the handlers that put errors in it.

``{data, error, code?, meta: {timestamp, page?, total?}}``: success fills ``data``, failure fills
``error`` (a sentence a person can act on) and ``code`` (a stable machine-readable word).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_serializer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

T = TypeVar("T")


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Meta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: str = Field(default_factory=iso_now)
    page: int | None = None
    total: int | None = None

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler):  # noqa: ANN001, ANN202
        # `page` and `total` belong to lists only; elsewhere they are left out, not null.
        return {key: value for key, value in handler(self).items() if value is not None}


class Envelope(BaseModel, Generic[T]):
    """The APIResponse envelope. ``page``/``total`` appear on list responses only, ``code``
    on errors only."""

    data: T | None = None
    error: str | None = None
    code: str | None = None
    meta: Meta = Field(default_factory=Meta)

    @model_serializer(mode="wrap")
    def _omit_code_on_success(self, handler):  # noqa: ANN001, ANN202
        body = handler(self)
        if body.get("code") is None:
            body.pop("code", None)
        return body


def ok(data: Any, *, page: int | None = None, total: int | None = None) -> dict[str, Any]:
    """A success envelope (a plain dict, so routes keep FastAPI's response_model checks)."""
    meta: dict[str, Any] = {"timestamp": iso_now()}
    if page is not None:
        meta["page"] = page
    if total is not None:
        meta["total"] = total
    return {"data": data, "error": None, "meta": meta}


class APIError(Exception):
    """An error a client caused (or may retry), rendered as the envelope with ``status``."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


def not_found(what: str) -> APIError:
    return APIError(404, f"{what} not found", f"{what.lower().replace(' ', '_')}_not_found")


def error_response(status: int, message: str, code: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"data": None, "error": message, "code": code, "meta": {"timestamp": iso_now()}}
    return JSONResponse(body, status_code=status, headers=headers)


_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 429: "rate_limited",
}
_STATUS_MESSAGES = {404: "Not found", 405: "Method not allowed", 413: "Request body too large"}


def _describe_validation_error(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc)
        if err.get("type") == "json_invalid":
            parts.append("Request body is not valid JSON")
            continue
        message = err.get("msg", "is invalid")
        parts.append(f"{field}: {message}" if field else message)
    return "Invalid request: " + "; ".join(parts)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers on this request's path. (The router names only the
    methods of the first route whose path matched, though others may share the path.)"""
    allowed = []
    for method in _METHODS:
        probe = {"type": "http", "method": method, "path": request.scope["path"],
                 "root_path": request.scope.get("root_path", ""), "headers": [],
                 "app": request.app}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed


class UnhandledErrors:
    """Answers an unhandled exception with the 500 envelope (no stack trace) from inside the
    middleware stack, so the middleware outside it, CORS above all, still applies; Starlette's
    own last-resort handler sits outside every middleware."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:  # too late for another answer: let the server close the connection
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await error_response(500, "Internal server error", "internal_error")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _describe_validation_error(exc), "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        message = _STATUS_MESSAGES.get(exc.status_code) or detail or "Request failed"
        if exc.status_code in (400, 413) and detail and detail != "Content Too Large":
            message = detail
        code = _STATUS_CODES.get(exc.status_code, "error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(exc.status_code, message, code, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The backstop for errors outside ``UnhandledErrors``. Log the stack for operators;
        # never leak it to the client.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal server error", "internal_error")
