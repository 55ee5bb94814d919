"""The OpenAPI document (``GET /openapi.json``), made to say what the API really answers.

FastAPI documents a 422 for every operation, which this API never sends (validation errors are
400), and none of the error statuses it does send. Here each operation's error responses are
derived from the route table: what a route depends on decides what it can answer (a token:
401 and 429; any input: 400; an id in the path: 404; a body: 413). What only a route's own rules
decide (409s, the bytes it serves) is kept in the small tables below, by route name. Every error
wears the envelope; the bearer JWT and the read-only ``token`` cookie are declared as security.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from coordinator.auth import COOKIE_METHODS
from coordinator.deps import CurrentUser
from coordinator.envelope import Meta

SCHEMAS_REF = "#/components/schemas/{model}"
BEARER = "bearerAuth"
COOKIE = "tokenCookie"

SECURITY_SCHEMES = {
    BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
             "description": "A JWT whose `sub` claim is the user (`renderfarm token USER`)."},
    COOKIE: {"type": "apiKey", "in": "cookie", "name": "token",
             "description": "The same JWT as a cookie, for reads only (GET, HEAD and the progress "
                            "WebSocket), so `<img>` and `<video>` work; changes need the header."},
}

ERROR_DESCRIPTIONS = {
    400: "Invalid request: a parameter or the body breaks a rule (`validation_error`, ...)",
    401: "Missing, malformed, invalid or expired token (`unauthorized`)",
    404: "No such resource among yours (`*_not_found`), or its stored file is missing",
    409: "Not allowed in the resource's current state",
    413: "Request body too large (`payload_too_large`)",
    416: "Requested range not satisfiable (`range_not_satisfiable`)",
    429: "Too many requests (`rate_limited`, `too_many_active_jobs` on job creation, "
         "`too_many_streams` on a progress stream)",
    500: "Internal server error (`internal_error`); no details are leaked",
    503: "The database is unreachable (`database_unavailable`)",
}

# 409s come from a route's own state rules, which its signature does not show.
CONFLICTS = {
    "delete_client": "One of the client's jobs is still processing (`jobs_in_progress`)",
    "delete_campaign": "One of the campaign's jobs is still processing (`jobs_in_progress`)",
    "create_job": "The Idempotency-Key was used for a different request (`idempotency_key_reused`)",
    "job_action": "The action is not allowed in the job's state (`illegal_state`, `no_scenes`, "
                  "`scenes_rendering`, `scene_busy`)",
    "job_video": "The job is not completed yet (`video_not_ready`)",
    "job_thumbnail": "The job is not completed yet (`video_not_ready`)",
    "job_video_metadata": "The job is not completed yet (`video_not_ready`)",
    "update_scene": "The storyboard is not under review, or the scene is regenerating",
    "delete_scene": "The storyboard is not under review, or the scene is regenerating",
    "regenerate_scene": "The storyboard is not under review, or the scene is regenerating",
    "scene_image": "The scene's image has not been rendered yet (`image_not_ready`)",
}

# A second success status a route answers besides its declared one.
# Operations that need the render farm itself, not only the database.
NEEDS_RENDERERS = {
    "generate_character_reference": "No image renderer could render it (`renderer_unavailable`, "
                                    "`render_failed`, `render_timeout`); nothing was stored",
}

EXTRA_SUCCESS = {
    "create_job": (200, "The job an earlier request with the same Idempotency-Key created"),
}

# Routes that serve stored bytes (``coordinator.serving``): media type of the body; Range,
# conditional GET and HEAD apply.
BYTE_ROUTES = {
    "asset_data": "*/*",  # the asset's sniffed type
    "job_video": "video/mp4",
    "job_thumbnail": "image/jpeg",
    "scene_image": "image/png",
}

_BYTE_REQUEST_HEADERS = [
    ("Range", "One byte range, e.g. `bytes=0-1023`; several ranges or a malformed one get the "
              "whole body"),
    ("If-None-Match", "An ETag from an earlier response: 304 when it still matches"),
    ("If-Range", "An ETag: the range applies only while it matches, else the whole body"),
]


RULES_FOR_EVERY_OPERATION = (
    "\n\nEvery response, success or error, is the envelope `{data, error, code?, meta}`; errors "
    "carry `error` (for a person) and `code` (for code). Validation errors are 400, never 422. "
    "Text never contains the NUL character (`\\u0000`): such a request is a 400. Authenticated "
    "responses carry `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`."
)


class ErrorEnvelope(BaseModel):
    """The envelope of every error: ``data`` null, ``error`` for a person, ``code`` for code."""

    data: None = None
    error: str
    code: str
    meta: Meta


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) the truthful document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)
            app.openapi_schema = describe_errors_and_security(app, document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe_errors_and_security(app: FastAPI, document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    error_schema = ErrorEnvelope.model_json_schema(ref_template=SCHEMAS_REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorEnvelope"] = error_schema
    components["securitySchemes"] = SECURITY_SCHEMES
    document["info"]["description"] = document["info"].get("description", "") + RULES_FOR_EVERY_OPERATION

    api_routes = list(routes_with_paths(app))
    for path, route in api_routes:
        if not route.include_in_schema:
            continue
        path_item = document["paths"].get(path, {})
        for method in route.methods:
            operation = path_item.get(method.lower())
            if operation is not None:
                _describe_operation(route, method, operation)
    _add_head_operations(api_routes, document)
    return document


def routes_with_paths(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """Every HTTP route of the app with its full path (routers are mounted lazily, so
    ``app.routes`` alone holds the included routers, not their routes)."""
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            yield context.path_format, context.original_route


def _describe_operation(route: APIRoute, method: str, operation: dict[str, Any]) -> None:
    responses = operation["responses"]
    responses.pop("422", None)
    authenticated = _depends_on(route.dependant, _current_user_dependency())
    inputs = _inputs(route.dependant)

    if route.name in EXTRA_SUCCESS:
        status, description = EXTRA_SUCCESS[route.name]
        responses.setdefault(str(status), {"description": description,
                                           "content": responses[str(route.status_code or 200)]["content"]})
    if route.name in BYTE_ROUTES:
        _describe_bytes(route, operation)

    errors: dict[int, str] = {500: ERROR_DESCRIPTIONS[500]}
    if authenticated:
        errors |= {401: ERROR_DESCRIPTIONS[401], 429: ERROR_DESCRIPTIONS[429]}
        operation["security"] = ([{BEARER: []}, {COOKIE: []}] if method in COOKIE_METHODS
                                 else [{BEARER: []}])
    else:
        operation["security"] = []
        errors[503] = ERROR_DESCRIPTIONS[503]
    if any(inputs.values()):
        errors[400] = ERROR_DESCRIPTIONS[400]
    if inputs["path"]:
        errors[404] = ERROR_DESCRIPTIONS[404]
    if inputs["body"]:
        errors[413] = ERROR_DESCRIPTIONS[413]
    if route.name in CONFLICTS:
        errors[409] = CONFLICTS[route.name]
    if route.name in NEEDS_RENDERERS:
        errors[503] = NEEDS_RENDERERS[route.name]
    if route.name in BYTE_ROUTES:
        errors[416] = ERROR_DESCRIPTIONS[416]
    for status, description in sorted(errors.items()):
        responses[str(status)] = _error_response(status, description)
    operation["responses"] = dict(sorted(responses.items()))


def _error_response(status: int, description: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": SCHEMAS_REF.format(model="ErrorEnvelope")}}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": _header("`Bearer`")}
    elif status == 429:
        response["headers"] = {"Retry-After": _header("Seconds until the window resets", "integer")}
    elif status == 416:
        response["headers"] = {"Content-Range": _header("`bytes */SIZE`")}
    return response


def _describe_bytes(route: APIRoute, operation: dict[str, Any]) -> None:
    media_type = BYTE_ROUTES[route.name]
    byte_headers = {"ETag": _header("Changes when the bytes do"),
                    "Accept-Ranges": _header("`bytes`")}
    responses = operation["responses"]
    responses["200"] = {"description": "The bytes", "headers": byte_headers,
                        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}
    responses["206"] = {"description": "The requested byte range",
                        "headers": byte_headers | {"Content-Range": _header("`bytes START-END/SIZE`")},
                        "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}
    responses["304"] = {"description": "Not modified: the If-None-Match ETag still matches",
                        "headers": {"ETag": _header("The current ETag")}}
    operation.setdefault("parameters", []).extend(
        {"name": name, "in": "header", "required": False, "description": description,
         "schema": {"type": "string"}}
        for name, description in _BYTE_REQUEST_HEADERS)


def _add_head_operations(api_routes: list[tuple[str, APIRoute]], document: dict[str, Any]) -> None:
    """HEAD twins of the byte routes are hidden from FastAPI's document but answer: list them,
    as their GET without bodies, so clients (and conformance checks) know they exist."""
    for path, route in api_routes:
        path_item = document["paths"].get(path)
        if "HEAD" not in route.methods or not path_item or "get" not in path_item:
            continue
        head = {key: value for key, value in path_item["get"].items() if key != "responses"}
        head["operationId"] = f"{head.get('operationId', route.name)}_head"
        head["summary"] = f"{head.get('summary', route.name)} (headers only)"
        head["responses"] = {status: {key: value for key, value in response.items() if key != "content"}
                             for status, response in path_item["get"]["responses"].items()}
        path_item["head"] = head


def _header(description: str, type_: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": type_}}


def _current_user_dependency() -> Any:
    return get_args(CurrentUser)[1].dependency


def _depends_on(dependant: Dependant, call: Any) -> bool:
    return any(sub.call is call or _depends_on(sub, call) for sub in dependant.dependencies)


def _inputs(dependant: Dependant) -> dict[str, bool]:
    """Which kinds of client input a route (with its dependencies) reads."""
    found = {"path": bool(dependant.path_params), "body": bool(dependant.body_params),
             "other": bool(dependant.query_params or dependant.header_params
                           or dependant.cookie_params)}
    for sub in dependant.dependencies:
        for kind, present in _inputs(sub).items():
            found[kind] = found[kind] or present
    return found
