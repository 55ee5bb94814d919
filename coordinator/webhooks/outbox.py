"""The transactional outbox: a job's status change that is an event writes one pending
delivery per interested endpoint, committed together with the status or not at all."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.base import new_id, utcnow
from coordinator.db.models import Job, WebhookDelivery, WebhookEndpoint
from coordinator.envelope import iso_now
from coordinator.job_states import JobStatus

EVENT_FOR_STATUS = {
    JobStatus.STORYBOARD_READY: "job.storyboard_ready",
    JobStatus.COMPLETED: "job.completed",
    JobStatus.FAILED: "job.failed",
}
EVENT_TYPES = tuple(EVENT_FOR_STATUS.values())

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


def event_payload(event_type: str, job: Job, target: JobStatus, changes: dict[str, Any]) -> str:
    """The body receivers get: ``{type, timestamp, data}`` (the Standard Webhooks shape), with
    the job's id and outcome; the full job is one ``GET /api/v3/jobs/{id}`` away."""
    data = {"jobId": job.id, "status": target.value, "clientId": job.client_id,
            "campaignId": job.campaign_id, "error": changes.get("error"),
            "errorCode": changes.get("error_code")}
    return json.dumps({"type": event_type, "timestamp": iso_now(), "data": data},
                      separators=(",", ":"))


async def stage_job_event(session: AsyncSession, job: Job, target: JobStatus,
                          changes: dict[str, Any]) -> None:
    """Before a ``transition`` of ``job`` to ``target`` on ``session``: when that move is an
    event, the deliveries for the owner's endpoints that want it are added at the session's
    next commit, which ``transition`` makes only when the status change wins (a refused or
    raced transition rolls back and so writes none)."""
    event_type = EVENT_FOR_STATUS.get(target)
    if event_type is None:
        return
    # By scope (all the owner's jobs, or one client's), unless the endpoint waits to be named;
    # and the endpoint the job itself named, if any.
    by_scope = ~WebhookEndpoint.jobs_only & or_(WebhookEndpoint.client_id.is_(None),
                                                WebhookEndpoint.client_id == job.client_id)
    named = WebhookEndpoint.id == job.webhook_id if job.webhook_id else false()
    endpoints = (await session.scalars(select(WebhookEndpoint).where(
        WebhookEndpoint.owner_id == job.owner_id, or_(by_scope, named),
    ))).all()
    wanted = [endpoint for endpoint in endpoints if event_type in endpoint.events]
    if not wanted:
        return
    body = event_payload(event_type, job, target, changes)
    now = utcnow()
    rows = [WebhookDelivery(id=new_id(), owner_id=job.owner_id, endpoint_id=endpoint.id,
                            job_id=job.id, event=event_type, payload=body, status=PENDING,
                            attempt_count=0, next_attempt_at=now)
            for endpoint in wanted]

    def add_rows(sync_session) -> None:  # noqa: ANN001
        sync_session.add_all(rows)  # flushed by this very commit

    event.listen(session.sync_session, "before_commit", add_rows, once=True)
