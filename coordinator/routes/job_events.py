"""``WS /api/v3/jobs/{job_id}/ws``: job progress pushed to any number of clients.

Each message is ``{jobId, status, progress, error, errorCode, updatedAt}``, sent when the job's
row changes; the socket closes after a final status. The database stays the only source of
truth: a connection re-reads the row every ``POLL_INTERVAL_S``, so it works the same with many
API replicas and survives actor restarts. A browser authenticates with the ``token`` cookie;
other clients may send ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from sqlalchemy import select

from coordinator.db.models import Job
from coordinator.auth import bearer_token
from coordinator.envelope import APIError
from coordinator.job_states import TERMINAL, JobStatus
from coordinator.schemas.common import as_utc

router = APIRouter(prefix="/jobs", tags=["jobs"])

POLL_INTERVAL_S = 0.5


MAX_CONNECTION_S = 3600  # a client watching longer reconnects (and is re-authenticated)


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
    await websocket.accept()
    # Reading is how a closed connection shows: stop polling as soon as the client goes.
    client_gone = asyncio.create_task(_drain(websocket))
    try:
        await asyncio.wait_for(_stream(websocket, job_id, client_gone), timeout=MAX_CONNECTION_S)
    except asyncio.TimeoutError:
        await websocket.close(code=status.WS_1000_NORMAL_CLOSURE, reason="Connection time limit")
    except WebSocketDisconnect:
        pass
    finally:
        client_gone.cancel()


async def _drain(websocket: WebSocket) -> None:
    """Returns when the client disconnects (what it sends, e.g. keep-alives, is ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _stream(websocket: WebSocket, job_id: str, client_gone: asyncio.Task) -> None:
    sessions = websocket.app.state.sessionmaker
    last = None
    while not client_gone.done():
        async with sessions() as session:
            job = await session.get(Job, job_id)
        if job is None:  # deleted with its client or campaign
            await websocket.close(code=status.WS_1000_NORMAL_CLOSURE, reason="Job deleted")
            return
        message = {"jobId": job.id, "status": job.status, "progress": job.progress,
                   "error": job.error, "errorCode": job.error_code,
                   "updatedAt": as_utc(job.updated_at).isoformat().replace("+00:00", "Z")}
        if message != last:
            await websocket.send_json(message)
            last = message
        if JobStatus(job.status) in TERMINAL:
            await websocket.close(code=status.WS_1000_NORMAL_CLOSURE, reason=job.status)
            return
        await asyncio.wait([client_gone], timeout=POLL_INTERVAL_S)
