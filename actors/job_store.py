"""The job actor's view of the database: the source of truth it reads on every step and writes
before anyone is told. Every write that records finished work is guarded by the job's status,
so results landing after a cancel do not change a cancelled job. Each call rides out a short
database outage (``actors.transient``). Every call is one transaction, so a failure before
its commit leaves nothing a retry would repeat (a connection lost during the commit itself is
the one edge: a ledger row could then be written twice)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from coordinator.db.base import utcnow
from actors.steps import JobEnded, StepFailed
from actors.transient import retried
from coordinator.db.models import Asset, Job, RenderUsage, Scene
from coordinator.db.session import make_engine, make_sessionmaker
from coordinator.job_states import TERMINAL, IllegalTransition, JobStatus, SceneStatus, transition
from coordinator.planner import PlannedScene
from coordinator.settings import Settings
from coordinator.stages import fold
from coordinator.webhooks.outbox import stage_job_event

_TERMINAL_VALUES = [status.value for status in TERMINAL]


def job_engine(settings: Settings) -> AsyncEngine:
    """The database engine of a job actor. Scenes render concurrently, but their writes are
    short: a small pool suffices, and keeps many concurrent jobs within PostgreSQL's connection
    limit."""
    return make_engine(settings, pool_size=2)


class JobStore:
    def __init__(self, settings: Settings, job_id: str, engine: AsyncEngine | None = None):
        """On ``engine`` (a job host's, shared by the jobs it drives one after another), or on
        an engine of its own that ``close`` disposes."""
        self.job_id = job_id
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else job_engine(settings)
        self.sessions = make_sessionmaker(self.engine)

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()

    @retried("database")
    async def job(self) -> Job | None:
        async with self.sessions() as session:
            return await session.get(Job, self.job_id)

    @retried("database")
    async def scenes(self) -> list[Scene]:
        async with self.sessions() as session:
            rows = await session.scalars(select(Scene).where(Scene.job_id == self.job_id)
                                         .order_by(Scene.scene_idx))
            return list(rows.all())

    @retried("database")
    async def asset_key(self, asset_id: str, owner: str, what: str = "product image") -> str:
        """Where an asset the job refers to (its product image, its music) is stored."""
        async with self.sessions() as session:
            key = await session.scalar(select(Asset.storage_key).where(
                Asset.id == asset_id, Asset.owner_id == owner))
        if key is None:
            raise StepFailed(f"The {what} asset was deleted; upload it again and retry",
                             "asset_missing")
        return key

    async def _job_is_live(self, session: AsyncSession) -> bool:
        status = await session.scalar(select(Job.status).where(Job.id == self.job_id))
        return status is not None and status not in _TERMINAL_VALUES

    @retried("database")
    async def transition(self, target: JobStatus, **changes: Any) -> Job:
        """Moves the job through ``coordinator.job_states`` (409-style refusal on a race)."""
        async with self.sessions() as session:
            job = await session.get(Job, self.job_id)
            await stage_job_event(session, job, target, changes)  # webhook outbox, same commit
            return await transition(session, job, target, **changes, stages=fold(
                job.stages, at=utcnow(), status=target.value, progress=changes.get("progress"),
                error=changes.get("error"), approved_at=changes.get("approved_at") or job.approved_at))

    @retried("database")
    async def set_progress(self, progress: dict[str, Any]) -> None:
        """Records ``progress`` and folds it into the stage timeline in the same write. Raises
        ``JobEnded`` when the job ended meanwhile (a cancel): the work stops there."""
        async with self.sessions() as session:
            for _attempt in range(3):
                job = await session.get(Job, self.job_id, populate_existing=True)
                if job is None or job.status in _TERMINAL_VALUES:
                    break
                now = utcnow()
                stages = fold(job.stages, at=now, progress=progress, approved_at=job.approved_at)
                # Conditional on the status read, so the timeline is folded from the row it
                # replaces (the API may approve or cancel in between; then fold again).
                result = await session.execute(update(Job).where(
                    Job.id == self.job_id, Job.status == job.status).values(
                    progress=progress, stages=stages, updated_at=now)
                    .execution_options(synchronize_session=False))
                await session.commit()
                if result.rowcount == 1:
                    return
        raise JobEnded(self.job_id)

    @retried("database")
    async def fail(self, message: str, code: str) -> None:
        """Ends the job as ``failed`` unless it already ended (e.g. was cancelled)."""
        async with self.sessions() as session:
            job = await session.get(Job, self.job_id)
            if job is None or JobStatus(job.status) in TERMINAL:
                return
            await stage_job_event(session, job, JobStatus.FAILED,
                                  {"error": message, "error_code": code})
            try:
                await transition(session, job, JobStatus.FAILED, error=message, error_code=code,
                                 progress={**(job.progress or {}), "message": message},
                                 stages=fold(job.stages, at=utcnow(), status=JobStatus.FAILED.value,
                                             error=message, approved_at=job.approved_at))
            except IllegalTransition:
                pass  # a cancel won the race; its state stands

    @retried("database")
    async def save_storyboard(self, owner: str, planned: list[PlannedScene], *,
                              planner_cost: float) -> list[Scene]:
        """Writes the planned scenes once (a resumed actor finds them and skips planning)."""
        async with self.sessions() as session:
            existing = await session.scalar(
                select(func.count()).select_from(Scene).where(Scene.job_id == self.job_id))
            if not existing and await self._job_is_live(session):
                for index, scene in enumerate(planned):
                    session.add(Scene(
                        owner_id=owner, job_id=self.job_id, scene_idx=index,
                        description=scene.description, script=scene.script,
                        shot_type=scene.shot_type.value, transition=scene.transition.value,
                        duration_s=scene.duration_s, image_prompt=scene.image_prompt))
                session.add(RenderUsage(job_id=self.job_id, kind="planner", cost=planner_cost))
                await session.commit()
        return await self.scenes()

    @retried("database")
    async def record_image(self, scene_id: str, *, key: str, version: int, seconds: float,
                           cost: float, text: dict[str, Any] | None = None) -> bool:
        """Stores a rendered image (and, for a regeneration, the re-planned text and the new
        version). Returns False when the job ended meanwhile and nothing was written."""
        async with self.sessions() as session:
            if not await self._job_is_live(session):
                return False
            await session.execute(update(Scene).where(Scene.id == scene_id).values(
                image_key=key, image_version=version, version=version, status=SceneStatus.IMAGE_READY.value,
                regenerate_feedback=None, error=None, updated_at=utcnow(), **(text or {})))
            session.add(RenderUsage(job_id=self.job_id, scene_id=scene_id, kind="image",
                                    seconds=seconds, cost=cost))
            await session.execute(update(Job).where(Job.id == self.job_id).values(updated_at=utcnow()))
            await session.commit()
            return True

    @retried("database")
    async def record_clip(self, scene_id: str, *, key: str, version: int, seconds: float,
                          cost: float) -> bool:
        async with self.sessions() as session:
            if not await self._job_is_live(session):
                return False
            await session.execute(update(Scene).where(Scene.id == scene_id).values(
                clip_key=key, clip_version=version, status=SceneStatus.CLIP_READY.value, updated_at=utcnow()))
            session.add(RenderUsage(job_id=self.job_id, scene_id=scene_id, kind="clip",
                                    seconds=seconds, cost=cost))
            await session.commit()
            return True

    @retried("database")
    async def record_voice(self, scene_id: str, *, key: str, version: int, text_hash: str,
                           duration_s: float, seconds: float, cost: float) -> bool:
        """Stores a scene's spoken line and what it was spoken from, with its ledger row."""
        async with self.sessions() as session:
            if not await self._job_is_live(session):
                return False
            await session.execute(update(Scene).where(Scene.id == scene_id).values(
                voice_key=key, voice_version=version, voice_text_hash=text_hash,
                voice_duration_s=duration_s, updated_at=utcnow()))
            session.add(RenderUsage(job_id=self.job_id, scene_id=scene_id, kind="voice",
                                    seconds=seconds, cost=cost))
            await session.commit()
            return True

    @retried("database")
    async def record_music(self, key: str, *, seconds: float, cost: float) -> bool:
        """Stores the job's music bed (a ledger row only when a model made it)."""
        async with self.sessions() as session:
            if not await self._job_is_live(session):
                return False
            await session.execute(update(Job).where(Job.id == self.job_id).values(
                music_key=key, updated_at=utcnow()))
            if seconds or cost:
                session.add(RenderUsage(job_id=self.job_id, kind="music", seconds=seconds,
                                        cost=cost))
            await session.commit()
            return True

    @retried("database")
    async def record_usage(self, kind: str, *, seconds: float, cost: float) -> None:
        async with self.sessions() as session:
            session.add(RenderUsage(job_id=self.job_id, kind=kind, seconds=seconds, cost=cost))
            await session.commit()

    @retried("database")
    async def mark_scene_failed(self, scene_id: str, message: str) -> None:
        async with self.sessions() as session:
            await session.execute(update(Scene).where(Scene.id == scene_id).values(
                status=SceneStatus.FAILED.value, error=message, regenerate_feedback=None, updated_at=utcnow()))
            await session.commit()

    @retried("database")
    async def actual_cost(self) -> float:
        async with self.sessions() as session:
            total = await session.scalar(select(func.coalesce(func.sum(RenderUsage.cost), 0.0))
                                         .where(RenderUsage.job_id == self.job_id))
            return round(float(total or 0.0), 6)

    @retried("database")
    async def usage_count(self, kind: str, scene_id: str | None = None) -> int:
        async with self.sessions() as session:
            query = select(func.count()).select_from(RenderUsage).where(
                RenderUsage.job_id == self.job_id, RenderUsage.kind == kind)
            if scene_id:
                query = query.where(RenderUsage.scene_id == scene_id)
            return int(await session.scalar(query) or 0)
