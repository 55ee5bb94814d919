"""Jobs and their scenes, as the API sees them: create (with idempotency and a quote), read,
and the person's actions (approve, cancel, regenerate, edit, delete). The rendering itself is
the job actor's; these functions change rows and then tell the actor."""

from __future__ import annotations

import hashlib
import random
from enum import Enum
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import pricing
from coordinator.audio_options import resolve_audio
from coordinator.crud.assets import check_stored_image
from coordinator.crud.campaigns import require_own_campaign, require_own_client
from coordinator.crud.common import fetch_page
from coordinator.db.base import utcnow
from coordinator.db.models import Asset, Job, JobCreationLock, Scene, WebhookEndpoint
from coordinator.deps import Page
from coordinator.envelope import APIError
from coordinator.job_states import (PROCESSING, REVISION_CANCELLED_MESSAGE, REVISION_NOTE,
                                     REVISION_RENDER_MESSAGE, REVISION_REVIEW_MESSAGE, TERMINAL,
                                     IllegalTransition, JobStatus, SceneStatus, transition)
from coordinator.media import ImageLimits
from coordinator.progress import REVIEW_PERCENT, progress
from coordinator.stages import STAGES, fold
from coordinator.schemas.jobs import CTA_CARD_SECONDS, AdvancedOptions, JobCreate, SceneUpdate
from coordinator.settings import Settings
from coordinator.storage import ObjectStore
from models.presets import TINY_PRESET, UnknownPreset, get_preset

DEFAULT_SCENE_COUNT = 4
DEFAULT_SECONDS_PER_SCENE = 3.0


def resolve_plan(settings: Settings, advanced: AdvancedOptions,
                 default_preset: str | None = None) -> dict[str, Any]:
    """The concrete plan behind ``advanced``: preset, scene count, duration, seed.
    ``default_preset`` is the one the renderers loaded (they decide it where they run)."""
    preset_name = (advanced.preset or settings.renderfarm_default_preset or default_preset
                   or TINY_PRESET)
    try:
        preset = get_preset(preset_name)
    except UnknownPreset as exc:
        raise APIError(400, f"advanced.preset: {exc}", "validation_error") from None
    if advanced.reference_asset_id and preset.image.reference == "none":
        raise APIError(400, f"advanced.referenceAssetId: preset {preset.name!r} does not condition "
                       "images on a reference; choose a preset that does (README: reference "
                       "images)", "validation_error")
    scene_count = advanced.scene_count or DEFAULT_SCENE_COUNT
    duration = advanced.duration_seconds or scene_count * DEFAULT_SECONDS_PER_SCENE + CTA_CARD_SECONDS
    if duration < scene_count + CTA_CARD_SECONDS:
        raise APIError(400, "advanced.durationSeconds must allow at least 1 second per scene plus "
                       f"{CTA_CARD_SECONDS:g} seconds for the call-to-action card", "validation_error")
    return {"preset": preset, "scene_count": scene_count, "duration_seconds": duration,
            "audio": resolve_audio(preset, advanced)}


def quote_for(settings: Settings, plan: dict[str, Any]) -> dict[str, Any]:
    estimate = plan["preset"].estimate
    audio = plan["audio"]
    return pricing.quote(settings, scene_count=plan["scene_count"],
                         image_seconds_per_scene=estimate.image_seconds_per_scene,
                         clip_seconds_per_scene=estimate.clip_seconds_per_scene,
                         voice_seconds_per_scene=(estimate.voice_seconds_per_scene
                                                  if audio["voiceOver"] else 0.0),
                         music_seconds=(estimate.music_seconds_per_job
                                        if audio["music"] == "generated" else 0.0),
                         uses_llm=bool(settings.ai_api_key))


async def validate_references(session: AsyncSession, owner: str, body: JobCreate, *,
                              settings: Settings, store: ObjectStore) -> dict[str, Any]:
    """Client, campaign and product image must be the caller's, and the image within the image
    limits (the job actor decodes it); returns brand context."""
    client = await require_own_client(session, body.context.client_id, owner)
    campaign = None
    if body.context.campaign_id:
        campaign = await require_own_campaign(session, body.context.campaign_id, owner,
                                              client_id=client.id)
    if body.webhook_id and await session.scalar(select(WebhookEndpoint.id).where(
            WebhookEndpoint.id == body.webhook_id, WebhookEndpoint.owner_id == owner)) is None:
        raise APIError(400, f"webhookId: no webhook endpoint {body.webhook_id!r} among yours",
                       "unknown_webhook")
    for field, asset_id in (("advanced.productImageAssetId", body.advanced.product_image_asset_id),
                            ("advanced.referenceAssetId", body.advanced.reference_asset_id)):
        if asset_id:
            await _check_image_asset(session, store, settings, owner, asset_id, field)
    music_asset_id = body.advanced.music_asset_id
    if music_asset_id:
        music_type = await session.scalar(select(Asset.type).where(
            Asset.id == music_asset_id, Asset.owner_id == owner))
        if music_type is None:
            raise APIError(400, f"advanced.musicAssetId: no asset {music_asset_id!r} among yours",
                           "unknown_asset")
        if music_type != "audio":
            raise APIError(400, "advanced.musicAssetId must be an audio asset (WAV, MP3, M4A "
                           "(AAC) or Ogg)", "validation_error")
    return {"brand": client.brand_guidelines or {},
            "campaignBrief": campaign.brief if campaign else None}


async def _check_image_asset(session: AsyncSession, store: ObjectStore, settings: Settings,
                             owner: str, asset_id: str, field: str) -> None:
    """An image asset of the caller's (another user's is as unknown as a missing one), within
    the image limits the job actor decodes it under."""
    asset = await session.scalar(select(Asset).where(Asset.id == asset_id, Asset.owner_id == owner))
    if asset is None:
        raise APIError(400, f"{field}: no asset {asset_id!r} among yours", "unknown_asset")
    if asset.type != "image":
        raise APIError(400, f"{field} must be an image asset", "validation_error")
    await check_stored_image(store, asset, ImageLimits.from_settings(settings), field)


async def create_job(*, session: AsyncSession, settings: Settings, store: ObjectStore, owner: str,
                     body: JobCreate, idempotency_key: str | None,
                     default_preset: str | None = None) -> tuple[Job, bool]:
    """Returns ``(job, created)``; a retried request with the same key returns the first job,
    and the same key with a different body is a 409 (it is a client bug, not a retry)."""
    request_hash = hashlib.sha256(body.model_dump_json(by_alias=True).encode()).hexdigest()
    if idempotency_key:
        existing = await _job_by_idempotency_key(session, owner, idempotency_key)
        if existing:
            return _same_request(existing, request_hash), False
    context = await validate_references(session, owner, body, settings=settings, store=store)
    plan = resolve_plan(settings, body.advanced, default_preset)
    # From here to the commit, this user's other creations wait: the count stays true.
    await _lock_job_creation(session, owner)
    if idempotency_key:
        existing = await _job_by_idempotency_key(session, owner, idempotency_key)
        if existing:  # a retry that waited for the lock behind its first attempt
            await session.commit()  # releases the lock and, unlike a rollback, keeps the row loaded
            return _same_request(existing, request_hash), False
    active = await session.scalar(select(func.count()).select_from(Job).where(
        Job.owner_id == owner, Job.status.in_([s.value for s in PROCESSING])))
    if active >= settings.max_active_jobs_per_user:
        await session.rollback()  # releases the lock
        raise APIError(429, f"You already have {active} jobs processing (the limit is "
                       f"{settings.max_active_jobs_per_user}); wait for one to finish or cancel it",
                       "too_many_active_jobs")
    advanced = body.advanced.model_dump(mode="json", by_alias=True)
    advanced.update(sceneCount=plan["scene_count"], durationSeconds=plan["duration_seconds"],
                    preset=plan["preset"].name, **plan["audio"])
    quote = quote_for(settings, plan)
    brief = body.model_dump(mode="json", by_alias=True, include={"context", "ad_basics", "creative"})
    brief.update(context)
    job = Job(owner_id=owner, client_id=body.context.client_id, campaign_id=body.context.campaign_id,
              status=JobStatus.PENDING.value, brief=brief, advanced=advanced,
              preset=plan["preset"].name, aspect_ratio=body.advanced.aspect_ratio.value,
              priority=body.priority.value, webhook_id=body.webhook_id,
              seed=body.advanced.seed if body.advanced.seed is not None else random.randrange(2**31),
              progress=progress("queued", 0, "Waiting for a job actor"),
              estimated_cost=quote["estimatedCost"], cost_breakdown=quote["breakdown"],
              idempotency_key=idempotency_key, request_hash=request_hash)
    session.add(job)
    try:
        await session.commit()
    except IntegrityError:
        # Two retries raced: the other one stored the job first.
        await session.rollback()
        existing = await _job_by_idempotency_key(session, owner, idempotency_key or "")
        if existing is None:
            raise
        return _same_request(existing, request_hash), False
    return job, True


async def _lock_job_creation(session: AsyncSession, owner: str) -> None:
    """Takes the user's job-creation lock for the rest of the transaction: an upsert of their
    lock row. PostgreSQL row-locks it (a concurrent upsert of the same key waits, even for a
    row not yet committed); SQLite takes its database write lock, and as nothing was read in
    this transaction before, no stale snapshot is kept. Either way the active-job count that
    follows sees every job committed by whoever held the lock before."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(JobCreationLock).values(owner_id=owner, locked_at=utcnow())
    await session.execute(statement.on_conflict_do_update(
        index_elements=[JobCreationLock.owner_id], set_={"locked_at": statement.excluded.locked_at}))


def _same_request(job: Job, request_hash: str) -> Job:
    if job.request_hash and job.request_hash != request_hash:
        raise APIError(409, "This Idempotency-Key was already used for a different request; "
                       "use a new key for a new job", "idempotency_key_reused")
    return job


async def _job_by_idempotency_key(session: AsyncSession, owner: str, key: str) -> Job | None:
    return await session.scalar(select(Job).where(Job.owner_id == owner,
                                                  Job.idempotency_key == key))


async def list_jobs(*, session: AsyncSession, owner: str, page: Page, status: JobStatus | None,
                    client_id: str | None, campaign_id: str | None) -> tuple[list[Job], int]:
    query = select(Job).where(Job.owner_id == owner)
    if status is not None:
        query = query.where(Job.status == status.value)
    if client_id is not None:
        query = query.where(Job.client_id == client_id)
    if campaign_id is not None:
        query = query.where(Job.campaign_id == campaign_id)
    rows, total = await fetch_page(session, query, page, Job.created_at.desc(), Job.id)
    return list(rows), total


async def scenes_of(session: AsyncSession, job_id: str) -> list[Scene]:
    return list((await session.scalars(
        select(Scene).where(Scene.job_id == job_id).order_by(Scene.scene_idx))).all())


async def scenes_by_job(session: AsyncSession, job_ids: list[str]) -> dict[str, list[Scene]]:
    grouped: dict[str, list[Scene]] = {job_id: [] for job_id in job_ids}
    if job_ids:
        rows = await session.scalars(select(Scene).where(Scene.job_id.in_(job_ids))
                                     .order_by(Scene.job_id, Scene.scene_idx))
        for scene in rows:
            grouped[scene.job_id].append(scene)
    return grouped


# ---- a person's actions -----------------------------------------------------------------------
#
# Each action first takes the job row's write lock (``lock_job``) and re-reads the job and its
# scenes inside that transaction, so an edit can never slip in behind an approval (or the other
# way round), on PostgreSQL and on SQLite alike.

async def lock_job(session: AsyncSession, job_id: str) -> Job:
    """Locks the job row for the rest of the transaction and returns it as committed now.

    A write is the portable lock: PostgreSQL row-locks it and SQLite takes its database write
    lock, so concurrent actions on one job queue up instead of acting on a stale read."""
    await session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow())
                          .execution_options(synchronize_session=False))
    return await session.scalar(select(Job).where(Job.id == job_id)
                                .execution_options(populate_existing=True))


async def _lock_scene(session: AsyncSession, job: Job, scene: Scene, action: str) -> tuple[Job, Scene]:
    """The locked job, required to be under review, and the scene, required to be idle. A
    completed job is reopened for review as its next revision, in this same transaction: the
    change that asked for it and the reopening commit together or not at all."""
    job = await lock_job(session, job.id)
    if job.status not in (JobStatus.STORYBOARD_READY.value, JobStatus.COMPLETED.value):
        status = job.status  # rows expire on rollback; keep what the message needs
        await session.rollback()
        raise APIError(409, f"Cannot {action}: the job is {status}; scenes can be changed "
                       "only while the storyboard is ready for review or once the video is "
                       "completed", "illegal_state")
    scene = await session.scalar(select(Scene).where(Scene.id == scene.id)
                                 .execution_options(populate_existing=True))
    if scene is None:
        await session.rollback()
        raise APIError(404, "Scene not found", "scene_not_found")
    if scene.status == SceneStatus.REGENERATING:
        scene_idx = scene.scene_idx
        await session.rollback()
        raise APIError(409, f"Cannot {action}: scene {scene_idx} is being regenerated",
                       "scene_busy")
    if job.status == JobStatus.COMPLETED.value:
        job = await _reopen_for_revision(session, job, action)
    return job, scene


async def _reopen_for_revision(session: AsyncSession, job: Job, action: str) -> Job:
    """Moves a completed job back to review as revision ``revision + 1``, without committing.
    Its video, thumbnail, duration and delivery time stay: they are served until the revision's
    video lands under new names (``actors.steps.video_key``)."""
    review = progress("storyboard_ready", REVIEW_PERCENT, REVISION_REVIEW_MESSAGE)
    return await transition(session, job, JobStatus.STORYBOARD_READY, action=action, revise=True,
                            commit=False, revision=(job.revision or 0) + 1, approved_at=None,
                            progress=review, stages=_revision_timeline(job.stages, review))


def _revision_timeline(stages: list[dict[str, Any]] | None,
                       review: dict[str, Any]) -> list[dict[str, Any]]:
    """The stage timeline of a reopened job: review running again, and the stages after it
    (clips, compositing, upload) to do again; the storyboard and images stay done."""
    timeline = fold(stages, at=utcnow(), progress=review)
    for entry in timeline[STAGES.index("review") + 1:]:
        entry.update(status="pending", percent=0.0, startedAt=None, completedAt=None, error=None)
    return timeline


async def approve_job(*, session: AsyncSession, job: Job) -> Job:
    job = await lock_job(session, job.id)
    if job.status == JobStatus.STORYBOARD_READY.value:
        scenes = await scenes_of(session, job.id)
        problem = None
        if not scenes:
            problem = APIError(409, "Cannot approve: the storyboard has no scenes", "no_scenes")
        busy = [s.scene_idx for s in scenes if s.status == SceneStatus.REGENERATING or not s.image_key]
        if busy:
            problem = APIError(409, f"Cannot approve: scene(s) {busy} are still rendering",
                               "scenes_rendering")
        if problem:
            await session.rollback()
            raise problem
    message = REVISION_RENDER_MESSAGE if job.video_key else "Storyboard approved; rendering clips"
    return await transition(session, job, JobStatus.VIDEO_PROCESSING, action="approve",
                            approved_at=utcnow(), progress=progress("clip_rendering", 0, message))


async def cancel_job(*, session: AsyncSession, job: Job) -> Job:
    """Cancels the job and, in the same transaction, ends any scene regeneration it had
    asked for: no actor will finish it, and a scene left ``regenerating`` would look busy
    for good.

    Cancelling a revision (a job that has delivered a video: it is in review or rendering
    again) abandons the revision, not the job: it goes back to ``completed`` with the video it
    had, which was never replaced. Scenes keep their edits and any image or clip rendered
    meanwhile, so a later revision renders only what still differs."""
    job = await lock_job(session, job.id)
    if JobStatus(job.status) in TERMINAL:
        status = job.status
        await session.rollback()
        raise IllegalTransition(status, JobStatus.CANCELLED, "cancel")
    await session.execute(update(Scene).where(
        Scene.job_id == job.id, Scene.status == SceneStatus.REGENERATING.value).values(
        # The scene keeps its last image if it has one; that is where it stood before.
        status=case((Scene.image_key.is_not(None), SceneStatus.IMAGE_READY.value),
                    else_=SceneStatus.PENDING.value),
        regenerate_feedback=None, updated_at=utcnow()).execution_options(synchronize_session=False))
    # ``transition`` commits the scenes with the status; the job lock means it cannot miss.
    if job.video_key:
        return await transition(session, job, JobStatus.COMPLETED, action="cancel", revise=True,
                                completed_at=job.completed_at,  # when that video was delivered
                                progress=progress("uploading", 100, REVISION_CANCELLED_MESSAGE))
    return await transition(session, job, JobStatus.CANCELLED, action="cancel",
                            progress=progress("cancelled", job_percent(job), "Cancelled"))


def job_percent(job: Job) -> float:
    return float((job.progress or {}).get("percent") or 0)


async def retry_job(*, session: AsyncSession, settings: Settings, job: Job) -> Job:
    """Reopens a failed job at the step that failed: video processing if the storyboard was
    approved, else storyboard processing. Finished images and clips are kept (the actor skips
    them); the error is cleared. A retry counts against the owner's active-job limit."""
    job = await lock_job(session, job.id)
    if job.status != JobStatus.FAILED.value:
        status = job.status
        await session.rollback()
        raise APIError(409, f"Cannot retry: the job is {status}; only a failed job can be retried",
                       "illegal_state")
    active = await session.scalar(select(func.count()).select_from(Job).where(
        Job.owner_id == job.owner_id, Job.status.in_([s.value for s in PROCESSING])))
    if active >= settings.max_active_jobs_per_user:
        await session.rollback()
        raise APIError(429, f"You already have {active} jobs processing (the limit is "
                       f"{settings.max_active_jobs_per_user}); wait for one to finish or cancel it",
                       "too_many_active_jobs")
    if job.approved_at is not None:
        target, stage, message = JobStatus.VIDEO_PROCESSING, "clip_rendering", "Retrying the video"
    else:
        target, stage, message = (JobStatus.STORYBOARD_PROCESSING, "storyboard_generation",
                                  "Retrying the storyboard")
    return await transition(session, job, target, action="retry", retry=True, error=None,
                            error_code=None, progress=progress(stage, job_percent(job), message))


async def request_regeneration(*, session: AsyncSession, job: Job, scene: Scene,
                               feedback: str | None) -> Scene:
    """Marks the scene for regeneration (the actor re-plans its text with the feedback and
    re-renders its image). A second request while one runs is a 409."""
    job, scene = await _lock_scene(session, job, scene, "regenerate the scene")
    scene.status = SceneStatus.REGENERATING.value
    scene.regenerate_feedback = feedback or None
    scene.error = None
    message = f"Regenerating scene {scene.scene_idx}"
    if job.video_key:  # a revision
        message += f"; {REVISION_NOTE}"
    job.progress = progress("regenerating_scene", REVIEW_PERCENT, message)
    await session.commit()
    return scene


async def update_scene(*, session: AsyncSession, job: Job, scene: Scene, data: SceneUpdate) -> Scene:
    """Applies the fields sent. An edit that changes nothing leaves a completed job completed
    (no revision for an empty or repeated ``PUT``)."""
    values = {("duration_s" if name == "duration" else name):
              (value.value if isinstance(value, Enum) else value)
              for name, value in ((name, getattr(data, name)) for name in data.model_fields_set)}

    if job.status == JobStatus.COMPLETED.value and all(
            getattr(scene, column) == value for column, value in values.items()):
        return scene  # nothing to revise: no lock, no write
    job, scene = await _lock_scene(session, job, scene, "edit the scene")
    for column, value in values.items():
        setattr(scene, column, value)
    await session.commit()
    return scene


async def delete_scene(*, session: AsyncSession, job: Job, scene: Scene) -> list[str]:
    """Deletes the scene and closes the gap in ``scene_idx``; returns its object keys."""
    job, scene = await _lock_scene(session, job, scene, "delete the scene")
    keys = [key for key in (scene.image_key, scene.clip_key) if key]
    await session.delete(scene)
    await session.execute(update(Scene).where(Scene.job_id == job.id,
                                              Scene.scene_idx > scene.scene_idx)
                          .values(scene_idx=Scene.scene_idx - 1)
                          .execution_options(synchronize_session=False))
    await session.commit()
    return keys


def is_terminal(job: Job) -> bool:
    return JobStatus(job.status) in TERMINAL

