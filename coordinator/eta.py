"""Queue position and estimated completion of jobs that are rendering, worked out from the
database whenever progress is served (so they move as other jobs finish, not only when this job's
actor writes).

- ``queuePosition``: how many other jobs with renders still to do on the same renderer (images
  while the storyboard is made, clips while the video is) the renderers serve before this one:
  those of a higher priority, and those of the same priority submitted earlier. It counts jobs,
  not requests, and leaves out what aging and per-user round robin (``actors.render_queue``)
  may reorder: 0 means nothing is known to be ahead.
- ``estimatedCompletionAt``: now, plus the render time of this job's remaining scenes, plus that
  of the jobs ahead of it, as if on one replica of each renderer (an upper estimate when there
  are more). Seconds per image or clip come from the ``render_usage`` ledger: this job's own
  renders once it has some (so the estimate tightens as its scenes finish), else the average of
  the farm's last ``RECENT_RENDERS`` renders of the preset, else the preset's ``estimate``
  figures. Compositing counts at its measured average for the preset (0 until measured). A job
  making its storyboard without ``autoApprove`` completes this step when the storyboard is ready
  for review, so only its images count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.db.models import Job, RenderUsage, Scene
from coordinator.job_states import JobStatus
from models.presets import UnknownPreset, get_preset

# Measured renders averaged per preset and kind: recent enough to follow the farm's hardware.
RECENT_RENDERS = 50
LEVELS = {"low": 0, "normal": 1, "high": 2}
_IMAGE_STEP = (JobStatus.PENDING.value, JobStatus.STORYBOARD_PROCESSING.value)
_LIVE = (*_IMAGE_STEP, JobStatus.VIDEO_PROCESSING.value)


@dataclass
class _Work:
    """What a live job still has to render."""

    job: Job
    images: int
    clips: int

    @property
    def renderer(self) -> str:
        return "image" if self.job.status in _IMAGE_STEP else "clip"

    def left(self, kind: str) -> int:
        return self.images if kind == "image" else self.clips


async def live_progress(session: AsyncSession, jobs: Iterable[Job],
                        now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """``{job id: {"queuePosition", "estimatedCompletionAt"}}`` for those of ``jobs`` that are
    rendering (pending, making the storyboard, or making the video); others are left out."""
    wanted = [job for job in jobs if job.status in _LIVE]
    if not wanted:
        return {}
    now = now or datetime.now(timezone.utc)
    live = await _live_work(session)
    for job in wanted:  # e.g. a job read before another request changed it
        live.setdefault(job.id, _work_of(job, []))
    presets = {work.job.preset for work in live.values()}
    farm = await _farm_seconds(session, presets)
    own = await _own_seconds(session, [job.id for job in wanted])
    answers = {}
    for job in wanted:
        mine = live[job.id]
        kind = mine.renderer
        ahead = [other for other in live.values()
                 if other.job.id != job.id and other.left(kind) > 0 and _before(other.job, job)]
        seconds = _seconds_left(mine, farm, own.get(job.id, {}))
        seconds += sum(other.left(kind) * _per_render(other.job.preset, kind, farm, {})
                       for other in ahead)
        answers[job.id] = {"queuePosition": len(ahead),
                           "estimatedCompletionAt": now + timedelta(seconds=seconds)}
    return answers


def _before(other: Job, job: Job) -> bool:
    """Whether the renderers serve ``other`` before ``job`` (priority, then submission)."""
    mine, theirs = LEVELS.get(job.priority, 1), LEVELS.get(other.priority, 1)
    return theirs > mine or (theirs == mine and (other.created_at, other.id) < (job.created_at, job.id))


async def _live_work(session: AsyncSession) -> dict[str, _Work]:
    jobs = (await session.scalars(select(Job).where(Job.status.in_(_LIVE)))).all()
    scenes: dict[str, list[Scene]] = {job.id: [] for job in jobs}
    if jobs:
        rows = await session.scalars(select(Scene).where(Scene.job_id.in_(list(scenes))))
        for scene in rows:
            scenes[scene.job_id].append(scene)
    return {job.id: _work_of(job, scenes[job.id]) for job in jobs}


def _work_of(job: Job, scenes: list[Scene]) -> _Work:
    planned = len(scenes) or int((job.advanced or {}).get("sceneCount") or 1)
    clips_left = (sum(1 for s in scenes if s.clip_key is None or s.clip_version != s.version)
                  if scenes else planned)
    if job.status == JobStatus.VIDEO_PROCESSING.value:
        return _Work(job, images=0, clips=clips_left)
    images_left = (sum(1 for s in scenes if s.image_key is None or s.image_version != s.version)
                   if scenes else planned)
    auto = bool((job.advanced or {}).get("autoApprove"))
    return _Work(job, images=images_left, clips=clips_left if auto else 0)


def _seconds_left(work: _Work, farm: dict, own: dict) -> float:
    seconds = (work.images * _per_render(work.job.preset, "image", farm, own)
               + work.clips * _per_render(work.job.preset, "clip", farm, own))
    if work.clips:  # the video gets composited once the clips are done
        seconds += farm.get((work.job.preset, "composite"), 0.0)
    return seconds


def _per_render(preset: str, kind: str, farm: dict, own: dict) -> float:
    if kind in own:
        return own[kind]
    if (preset, kind) in farm:
        return farm[(preset, kind)]
    try:
        estimate = get_preset(preset).estimate
    except UnknownPreset:  # an operator preset removed since: nothing to go by
        return 0.0
    return estimate.image_seconds_per_scene if kind == "image" else estimate.clip_seconds_per_scene


async def _farm_seconds(session: AsyncSession, presets: set[str]) -> dict[tuple[str, str], float]:
    """Average measured seconds of the last renders per (preset, kind)."""
    averages = {}
    for preset in presets:
        for kind in ("image", "clip", "composite"):
            recent = (select(RenderUsage.seconds).join(Job, Job.id == RenderUsage.job_id)
                      .where(Job.preset == preset, RenderUsage.kind == kind,
                             RenderUsage.seconds > 0)
                      .order_by(RenderUsage.id.desc()).limit(RECENT_RENDERS).subquery())
            average = await session.scalar(select(func.avg(recent.c.seconds)))
            if average is not None:
                averages[(preset, kind)] = float(average)
    return averages


async def _own_seconds(session: AsyncSession, job_ids: list[str]) -> dict[str, dict[str, float]]:
    """Each job's own average seconds per image and per clip rendered so far."""
    rows = await session.execute(
        select(RenderUsage.job_id, RenderUsage.kind, func.avg(RenderUsage.seconds))
        .where(RenderUsage.job_id.in_(job_ids), RenderUsage.kind.in_(("image", "clip")),
               RenderUsage.seconds > 0)
        .group_by(RenderUsage.job_id, RenderUsage.kind))
    own: dict[str, dict[str, float]] = {}
    for job_id, kind, average in rows:
        own.setdefault(job_id, {})[kind] = float(average)
    return own
