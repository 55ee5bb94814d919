"""Job progress pushed to any number of clients, two ways over one model:

- ``WS /api/v3/jobs/{job_id}/ws``, a WebSocket;
- ``GET /api/v3/jobs/{job_id}/events``, Server-Sent Events (``text/event-stream``).

Each message is ``{jobId, status, progress, stages, error, errorCode, updatedAt}``
(``progress_message``), sent when the job's row changes; the stream ends after a final status.
The database stays the only source of truth: a connection re-reads the row every
``POLL_INTERVAL_S``, so it works the same with many API replicas and survives actor restarts.
A browser authenticates with the ``token`` cookie; other clients may send
``Authorization: Bearer``. A user holds at most ``max_streams_per_user`` streams open at once
on a replica (``coordinator.stream_slots``): one more is refused (SSE: 429
``too_many_streams``; WebSocket: closed with 1013, "try again later").

An SSE event's ``id`` is the row's ``updatedAt`` in microseconds since the epoch, which every
write to the job moves forward; a reconnecting ``EventSource`` sends it back as
``Last-Event-ID`` and gets only newer states (or 204, which stops it, when the job has ended
since).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, WebSocket, WebSocketDisconnect, status
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from coordinator import eta
from coordinator.db.models import Job
from coordinator.auth import bearer_token
from coordinator.deps import CurrentUser
from coordinator.envelope import APIError, not_found
from coordinator.job_states import TERMINAL, JobStatus
from coordinator.schemas.common import as_utc
from coordinator.schemas.jobs import JobProgress
from coordinator.views import job_stages

router = APIRouter(prefix="/jobs", tags=["jobs"])

POLL_INTERVAL_S = 0.5
LIVE_REFRESH_S = 5.0
# A client refused for too many open streams retries after this many seconds.
STREAMS_RETRY_AFTER_S = 5


MAX_CONNECTION_S = 3600  # a client watching longer reconnects (and is re-authenticated)
# An SSE comment line this often while nothing changes, so proxies keep the stream open.
KEEPALIVE_S = 15.0
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def progress_message(job: Job, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """What both streams send about a job: the same progress model as ``GET /jobs/{id}``,
    with the fields worked out as it is served (``live``: queue position and estimate)."""
    raw = {**(job.progress or {}), **live} if live else job.progress
    progress = (JobProgress.model_validate(raw).model_dump(mode="json", by_alias=True)
                if raw else None)
    return {"jobId": job.id, "status": job.status, "progress": progress,
            "stages": job_stages(job), "error": job.error, "errorCode": job.error_code,
            "updatedAt": as_utc(job.updated_at).isoformat().replace("+00:00", "Z")}


_MICROSECOND = datetime.resolution


def event_id(job: Job) -> int:
    """Orders a job's states: its ``updated_at`` in microseconds since the epoch."""
    return (as_utc(job.updated_at) - _EPOCH) // _MICROSECOND


async def _polls(sessions: async_sessionmaker, job_id: str,
                 stop: asyncio.Future | None = None
                 ) -> AsyncIterator[tuple[Job | None, dict[str, Any] | None]]:
    """The job's row and its live progress fields every ``POLL_INTERVAL_S`` (None once
    deleted), ending after a final status or when ``stop`` is done."""
    live, live_at, live_status = None, None, None
    clock = asyncio.get_running_loop().time
    while stop is None or not stop.done():
        async with sessions() as session:
            job = await session.get(Job, job_id)
            # The estimate reads the whole farm's queue: refreshed when the status moves and
            # every LIVE_REFRESH_S, not on every poll of every stream.
            if job is not None and (job.status != live_status or live_at is None
                                    or clock() - live_at >= LIVE_REFRESH_S):
                live = (await eta.live_progress(session, [job])).get(job_id)
                live_at, live_status = clock(), job.status
        yield job, live
        if job is None or JobStatus(job.status) in TERMINAL:
            return
        if stop is None:
            await asyncio.sleep(POLL_INTERVAL_S)
        else:
            await asyncio.wait([stop], timeout=POLL_INTERVAL_S)


async def _websocket_user(websocket: WebSocket) -> str | None:
    # CORS does not cover WebSockets: a page on another site could open this socket with the
    # user's cookie, so the cookie counts only from an allowed origin.
    origin = websocket.headers.get("origin")
    cookie_allowed = origin is None or origin in websocket.app.state.settings.cors_origins
    try:
        token = bearer_token(websocket.headers, websocket.cookies, cookie_allowed=cookie_allowed)
        return await websocket.app.state.token_verifier.user_id(token) if token else None
    except APIError:
        return None


@router.websocket("/{job_id}/ws")
async def job_progress_stream(websocket: WebSocket, job_id: str) -> None:
    user = await _websocket_user(websocket)
    if user is None:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="Missing or invalid token")
        return
    async with websocket.app.state.sessionmaker() as session:
        owned = await session.scalar(select(Job.id).where(Job.id == job_id, Job.owner_id == user))
    if owned is None:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="Job not found")
        return
    slots = websocket.app.state.stream_slots
    if not slots.take(user):
        # Accepted, then closed: a refused handshake would only tell the client "403".
        await websocket.accept()
        await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER,
                              reason=f"{slots.per_user} progress streams open already")
        return
    try:
        await websocket.accept()
        # Reading is how a closed connection shows: stop polling as soon as the client goes.
        client_gone = asyncio.create_task(_drain(websocket))
        try:
            await asyncio.wait_for(_stream(websocket, job_id, client_gone),
                                   timeout=MAX_CONNECTION_S)
        except asyncio.TimeoutError:
            await websocket.close(code=status.WS_1000_NORMAL_CLOSURE,
                                  reason="Connection time limit")
        except WebSocketDisconnect:
            pass
        finally:
            client_gone.cancel()
    finally:
        slots.give_back(user)


async def _drain(websocket: WebSocket) -> None:
    """Returns when the client disconnects (what it sends, e.g. keep-alives, is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _stream(websocket: WebSocket, job_id: str, client_gone: asyncio.Task) -> None:
    last = None
    async for job, live in _polls(websocket.app.state.sessionmaker, job_id, client_gone):
        if job is None:  # deleted with its client or campaign
            await websocket.close(code=status.WS_1000_NORMAL_CLOSURE, reason="Job deleted")
            return
        message = progress_message(job, live)
        if message != last:
            await websocket.send_json(message)
            last = message
        if JobStatus(job.status) in TERMINAL:
            await websocket.close(code=status.WS_1000_NORMAL_CLOSURE, reason=job.status)
            return


# One event of the stream (OpenAPI 3.1: a text/event-stream schema describes each event).
_SSE_EVENT = {
    "type": "object", "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$",
               "description": "Send it back as `Last-Event-ID` to resume after this event"},
        "event": {"type": "string", "enum": ["progress"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "The WebSocket's message: `{jobId, status, progress, stages, "
                                "error, errorCode, updatedAt}`"}},
}


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={
    200: {"description": "A stream of `progress` events and keep-alive comments; it ends after "
                         "the job's final status",
          "content": {"text/event-stream": {"schema": _SSE_EVENT}}},
    204: {"description": "The job has ended and `Last-Event-ID` already has its final state"}})
async def job_progress_events(job_id: str, request: Request, user: CurrentUser,
                              # ``str``, not ``str | None``: absent is fine, "null" is not.
                              last_event_id: Annotated[str, Header(
                                  pattern=r"^[0-9]{1,20}$",
                                  description="The `id` of the last event received")] = None):
    """Server-Sent Events of the job's progress (the WebSocket's messages), for ``EventSource``.
    Send ``Last-Event-ID`` to resume: only states newer than that event come."""
    after = int(last_event_id) if last_event_id is not None else None
    sessions = request.app.state.sessionmaker
    async with sessions() as session:  # short: the stream must not hold a connection
        job = await session.scalar(select(Job).where(Job.id == job_id, Job.owner_id == user))
    if job is None:
        raise not_found("Job")
    if after is not None and event_id(job) <= after and JobStatus(job.status) in TERMINAL:
        return Response(status_code=204)
    slots = request.app.state.stream_slots
    if not slots.take(user):
        raise APIError(429, f"You have {slots.per_user} progress streams open, the most one "
                       "user may; close one or poll GET /jobs/{id}", "too_many_streams",
                       headers={"Retry-After": str(STREAMS_RETRY_AFTER_S)})
    released = False

    def give_back() -> None:  # once: from the stream's end, or after the response if it never began
        nonlocal released
        if not released:
            released = True
            slots.give_back(user)

    return StreamingResponse(_sse(request, job_id, after, give_back),
                             media_type="text/event-stream", background=BackgroundTask(give_back),
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(request: Request, job_id: str, after: int | None,
               closed: Callable[[], None]) -> AsyncIterator[str]:
    """The events; ``closed`` runs when the stream ends, however it ends."""
    try:
        clock = asyncio.get_running_loop().time
        deadline = clock() + MAX_CONNECTION_S  # then the client reconnects with Last-Event-ID
        quiet_since = clock()
        async for job, live in _polls(request.app.state.sessionmaker, job_id):
            if job is None or clock() > deadline:
                return
            if after is None or event_id(job) > after:
                after = event_id(job)
                quiet_since = clock()
                yield (f"id: {after}\nevent: progress\n"
                       f"data: {json.dumps(progress_message(job, live))}\n\n")
            elif clock() - quiet_since >= KEEPALIVE_S:
                quiet_since = clock()
                yield ": keepalive\n\n"
    finally:
        closed()
