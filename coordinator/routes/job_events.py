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
from coordinator.envelope import APIError
from coordinator.job_states import TERMINAL, JobStatus
from coordinator.schemas.common import as_utc

router = APIRouter(prefix="/jobs", tags=["jobs"])

POLL_INTERVAL_S = 0.5


async def _websocket_user(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else websocket.cookies.get("token")
    if not token:
        return None
    try:
        return await websocket.app.state.token_verifier.user_id(token)
    except APIError:
        return None


@router.websocket("/{job_id}/ws")
async def job_progress_stream(websocket: WebSocket, job_id: str) -> None:
    user = await _websocket_user(websocket)
    if user is None:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="Missing or invalid token")
        return
    sessions = websocket.app.state.sessionmaker
    async with sessions() as session:
        owned = await session.scalar(select(Job.id).where(Job.id == job_id, Job.owner_id == user))
    if owned is None:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="Job not found")
        return
    await websocket.accept()
    last = None
    try:
        while True:
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
            await asyncio.sleep(POLL_INTERVAL_S)
    except WebSocketDisconnect:
        return
