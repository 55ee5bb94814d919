"""``/api/v3/jobs``: create (with ``Idempotency-Key``), quote, poll, list, act, and fetch the
finished video and thumbnail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import ValidationError

from coordinator import eta
from coordinator.crud import jobs as crud
from coordinator.deps import (CurrentUser, JobRunnerDep, OwnedJob, PageDep, SessionDep,
                              SettingsDep, StoreDep)
from coordinator.envelope import APIError, Envelope, ok
from coordinator.job_states import JobStatus
from coordinator.schemas.jobs import (ActionResult, CostEstimate, JobActionRequest, JobCreate,
                                      JobOut, JobSummary, RegeneratePayload)
from coordinator.schemas.video import VideoMetadata
from coordinator.serving import serve_object
from coordinator.video_metadata import video_metadata
from coordinator.views import dump_job

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("/dry-run", response_model=Envelope[CostEstimate])
async def estimate_cost(body: JobCreate, session: SessionDep, user: CurrentUser,
                        settings: SettingsDep, runner: JobRunnerDep, store: StoreDep):
    """What the job would cost, valid until the end of the UTC day. Nothing is stored."""
    await crud.validate_references(session, user, body, settings=settings, store=store)
    plan = crud.resolve_plan(settings, body.advanced, await runner.default_preset())
    return ok(crud.quote_for(settings, plan))


@router.post("", response_model=Envelope[JobSummary], status_code=201)
async def create_job(body: JobCreate, response: Response, session: SessionDep, user: CurrentUser,
                     settings: SettingsDep, runner: JobRunnerDep, store: StoreDep,
                     idempotency_key: Annotated[str | None, Header(max_length=255)] = None):
    """Creates a job and starts its actor. Retrying with the same ``Idempotency-Key`` returns
    the job the first request made (200 instead of 201)."""
    job, created = await crud.create_job(session=session, settings=settings, store=store,
                                         owner=user, body=body, idempotency_key=idempotency_key,
                                         default_preset=await runner.default_preset())
    if created:
        await runner.poke(job.id)
    else:
        response.status_code = 200
    return ok(JobSummary.model_validate(job).model_dump(mode="json", by_alias=True))


@router.get("", response_model=Envelope[list[JobOut]])
async def list_jobs(session: SessionDep, user: CurrentUser, page: PageDep, settings: SettingsDep,
                    store: StoreDep, status: Annotated[JobStatus | None, Query()] = None,
                    client_id: Annotated[str | None, Query(max_length=64)] = None,
                    campaign_id: Annotated[str | None, Query(max_length=64)] = None):
    rows, total = await crud.list_jobs(session=session, owner=user, page=page, status=status,
                                       client_id=client_id, campaign_id=campaign_id)
    scenes = await crud.scenes_by_job(session, [job.id for job in rows])
    live = await eta.live_progress(session, rows)
    return ok([dump_job(settings, store, job, scenes[job.id], live.get(job.id)) for job in rows],
              page=page.number, total=total)


@router.get("/{job_id}", response_model=Envelope[JobOut])
async def get_job(job: OwnedJob, session: SessionDep, settings: SettingsDep, store: StoreDep):
    live = await eta.live_progress(session, [job])
    return ok(dump_job(settings, store, job, await crud.scenes_of(session, job.id),
                       live.get(job.id)))


@router.post("/{job_id}/actions", response_model=Envelope[ActionResult])
async def job_action(body: JobActionRequest, job: OwnedJob, session: SessionDep,
                     runner: JobRunnerDep, settings: SettingsDep):
    """``approve`` (storyboard_ready → video_processing), ``cancel`` (any unfinished state;
    a revision goes back to completed with its previous video), ``regenerate_scene`` with
    ``payload: {sceneIdx, feedback?}`` (under review, or on a completed job: a revision), or
    ``retry`` (failed → the step that failed, keeping finished work). Not allowed now → 409."""
    if body.action == "approve":
        job = await crud.approve_job(session=session, job=job)
        await runner.poke(job.id)
        return ok({"message": "Storyboard approved; rendering the video", "status": job.status})
    if body.action == "retry":
        job = await crud.retry_job(session=session, settings=settings, job=job)
        await runner.poke(job.id)
        return ok({"message": "Retrying the job from its last finished step", "status": job.status})
    if body.action == "cancel":
        job = await crud.cancel_job(session=session, job=job)
        await runner.cancel(job.id)
        return ok({"message": "Job cancelled", "status": job.status})
    try:
        payload = RegeneratePayload.model_validate(body.payload or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise APIError(400, f"Invalid request: payload.{field}: {first['msg']}",
                       "validation_error") from None
    scenes = await crud.scenes_of(session, job.id)
    editable = (JobStatus.STORYBOARD_READY.value, JobStatus.COMPLETED.value)
    if job.status in editable and payload.scene_idx >= len(scenes):
        raise APIError(400, f"payload.sceneIdx: the storyboard has {len(scenes)} scenes",
                       "validation_error")
    scene = scenes[payload.scene_idx] if payload.scene_idx < len(scenes) else None
    if scene is None:
        raise APIError(409, f"Cannot regenerate a scene: the job is {job.status}", "illegal_state")
    await crud.request_regeneration(session=session, job=job, scene=scene, feedback=payload.feedback)
    await runner.poke(job.id)
    return ok({"message": "Scene regeneration started", "status": job.status,
               "updatedSceneIdx": payload.scene_idx})


def _require_delivered(job) -> None:  # noqa: ANN001
    """A video exists once the job first completed; a revision (back in review or rendering,
    or failed) keeps serving it until the revised video replaces it."""
    if not job.video_key:
        raise APIError(409, f"The video is not ready: the job is {job.status}", "video_not_ready")


def _etag(key: str) -> str:
    # From the object's name ("<job>-video", "<job>-video-r2"): each revision is a file of its
    # own, so a cache never answers with the one it replaced.
    job_id, name = key.split("/")[-2:]
    return f"{job_id}-{name.rsplit('.', 1)[0]}"


@router.get("/{job_id}/video")
@router.head("/{job_id}/video", include_in_schema=False)
async def job_video(job: OwnedJob, request: Request, store: StoreDep):
    """The delivered MP4 (HTTP Range supported); during a revision, the previous one. 409
    until the job first completes."""
    _require_delivered(job)
    return await serve_object(request, store, job.video_key, content_type="video/mp4",
                              etag=_etag(job.video_key), filename=f"{job.id}.mp4")


@router.get("/{job_id}/thumbnail")
@router.head("/{job_id}/thumbnail", include_in_schema=False)
async def job_thumbnail(job: OwnedJob, request: Request, store: StoreDep):
    """A JPEG frame of the delivered video (during a revision, of the previous one). 409
    until the job first completes."""
    _require_delivered(job)
    return await serve_object(request, store, job.thumbnail_key, content_type="image/jpeg",
                              etag=_etag(job.thumbnail_key))


@router.get("/{job_id}/metadata", response_model=Envelope[VideoMetadata])
async def job_video_metadata(job: OwnedJob, store: StoreDep):
    """Duration, size, frame rate, codecs, format, file size and delivery time of the
    delivered video (``coordinator.video_metadata``); during a revision, of the previous one.
    409 until the job first completes."""
    _require_delivered(job)
    return ok(await video_metadata(store, job))
