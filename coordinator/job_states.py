"""Job states as data: the enum, the terminal set, the allowed transitions, and one
``transition()`` that checks, persists and refuses. Nothing else changes ``Job.status``."""

from __future__ import annotations

from enum import Enum

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.base import utcnow
from coordinator.db.models import Job
from coordinator.envelope import APIError


class JobStatus(str, Enum):
    PENDING = "pending"
    STORYBOARD_PROCESSING = "storyboard_processing"
    STORYBOARD_READY = "storyboard_ready"
    VIDEO_PROCESSING = "video_processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SceneStatus(str, Enum):
    """Where one scene's artifacts stand (the job's status says where the job stands)."""

    PENDING = "pending"
    IMAGE_READY = "image_ready"
    REGENERATING = "regenerating"
    CLIP_READY = "clip_ready"
    FAILED = "failed"


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
# States in which a job actor is (or should be) doing work.
PROCESSING = frozenset({JobStatus.PENDING, JobStatus.STORYBOARD_PROCESSING,
                        JobStatus.VIDEO_PROCESSING})

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.STORYBOARD_PROCESSING, JobStatus.CANCELLED,
                                  JobStatus.FAILED}),
    # A regeneration runs while the storyboard stays ready, so no state of its own.
    JobStatus.STORYBOARD_PROCESSING: frozenset({JobStatus.STORYBOARD_READY, JobStatus.CANCELLED,
                                                JobStatus.FAILED}),
    JobStatus.STORYBOARD_READY: frozenset({JobStatus.VIDEO_PROCESSING, JobStatus.CANCELLED,
                                           JobStatus.FAILED}),
    JobStatus.VIDEO_PROCESSING: frozenset({JobStatus.COMPLETED, JobStatus.CANCELLED,
                                           JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}
# The owner's ``retry`` reopens a failed job at the step that failed. Only that action may
# take these moves: a failed job is otherwise final (an approval must never revive it).
RETRY: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.FAILED: frozenset({JobStatus.STORYBOARD_PROCESSING, JobStatus.VIDEO_PROCESSING}),
}
# A completed job is revised: the owner's edit, deletion or regeneration of one of its scenes
# reopens it for review (its video still served), and a cancel in review abandons the revision,
# back to completed with that video (a cancel while the revision renders takes the ordinary
# video_processing -> completed move). Only those requests may take these moves.
REVISION: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.COMPLETED: frozenset({JobStatus.STORYBOARD_READY}),
    JobStatus.STORYBOARD_READY: frozenset({JobStatus.COMPLETED}),
}
# What the job's progress says while a revision is under way (its status is the ordinary one;
# ``videoUrl`` still names the previous video).
REVISION_NOTE = "the previous video is served until the new one is ready"
REVISION_REVIEW_MESSAGE = f"Revising the video: edit or regenerate scenes, then approve; {REVISION_NOTE}"
REVISION_RENDER_MESSAGE = f"Revision approved; rendering the changed scenes; {REVISION_NOTE}"
REVISION_CANCELLED_MESSAGE = "Revision cancelled; the previous video is kept"


class IllegalTransition(APIError):
    def __init__(self, current: str, target: JobStatus, action: str | None = None):
        what = action or f"move to {target.value}"
        super().__init__(409, f"Cannot {what}: the job is {current}", "illegal_state")
        self.current = current


def can_transition(current: str, target: JobStatus, *, retry: bool = False,
                   revise: bool = False) -> bool:
    status = JobStatus(current)
    return (target in ALLOWED[status]
            or (retry and target in RETRY.get(status, frozenset()))
            or (revise and target in REVISION.get(status, frozenset())))


async def transition(session: AsyncSession, job: Job, target: JobStatus, *,
                     action: str | None = None, retry: bool = False, revise: bool = False,
                     commit: bool = True, **changes: object) -> Job:
    """Move ``job`` to ``target`` or raise 409. The UPDATE is conditional on the status we
    read, so two racing callers (API and actor) cannot both win; the loser gets the 409.
    ``retry`` also allows the moves of ``RETRY`` (the owner's retry action only), ``revise``
    those of ``REVISION``. Without ``commit`` the caller's transaction (and the row lock it
    holds) goes on; the caller commits."""
    values = {"status": target.value, "updated_at": utcnow(), **changes}
    if target == JobStatus.COMPLETED:
        values.setdefault("completed_at", utcnow())
    for _attempt in range(2):
        current = job.status
        if not can_transition(current, target, retry=retry, revise=revise):
            raise IllegalTransition(current, target, action)
        result = await session.execute(
            update(Job).where(Job.id == job.id, Job.status == current).values(**values)
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            if commit:
                await session.commit()
            await session.refresh(job)
            return job
        # The job moved between our read and our write; judge again from where it is now
        # (a cancel stays legal when processing moved on a step).
        await session.rollback()
        await session.refresh(job)
    raise IllegalTransition(job.status, target, action)
