"""Row → response shape for jobs and scenes (URLs included), shared by the job and scene routes."""

from __future__ import annotations

import re
from typing import Any

from coordinator.db.models import Job, Scene
from coordinator.schemas.jobs import JobOut, SceneOut, Storyboard
from coordinator.settings import Settings
from coordinator.stages import fold
from coordinator.storage import ObjectStore


def scene_image_url(settings: Settings, scene: Scene) -> str | None:
    if not scene.image_key:
        return None
    # The version in the query string busts browser caches after a regeneration.
    return (f"{settings.public_base_url}/api/v3/jobs/{scene.job_id}/scenes/{scene.id}/image"
            f"?v={scene.image_version}")


def scene_view(settings: Settings, scene: Scene) -> SceneOut:
    return SceneOut(id=scene.id, scene_idx=scene.scene_idx, image_url=scene_image_url(settings, scene),
                    description=scene.description, script=scene.script, shot_type=scene.shot_type,
                    transition=scene.transition, duration=scene.duration_s, version=scene.version,
                    status=scene.status, error=scene.error, created_at=scene.created_at,
                    updated_at=scene.updated_at)


def dump_scene(settings: Settings, scene: Scene) -> dict[str, Any]:
    return scene_view(settings, scene).model_dump(mode="json", by_alias=True)


def artifact_url(settings: Settings, store: ObjectStore, job: Job, key: str | None,
                 route: str) -> str | None:
    """A presigned S3 URL (short expiry) when objects live in S3, else this API's route. Set
    once the job first completed, and kept through a revision (the previous video is served
    until the revised one lands)."""
    if not key:
        return None
    presigned = store.presigned_url(key, settings.s3_presign_expiry_seconds)
    if presigned:
        return presigned
    url = f"{settings.public_base_url}/api/v3/jobs/{job.id}/{route}"
    # A revision's file has a name of its own (video-r2.mp4); naming it in the URL keeps a
    # browser from playing its cached copy of the previous one.
    revision = _REVISION_IN_KEY.search(key)
    return f"{url}?r={revision.group(1)}" if revision else url


_REVISION_IN_KEY = re.compile(r"-r(\d+)\.\w+$")


def dump_job(settings: Settings, store: ObjectStore, job: Job,
             scenes: list[Scene] | None, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """``live``: fields worked out as the job is served (``coordinator.eta.live_progress``),
    added to its stored progress."""
    view = JobOut(
        id=job.id, status=job.status, client_id=job.client_id, campaign_id=job.campaign_id,
        progress={**(job.progress or {}), **live} if live else job.progress,
        storyboard=Storyboard(scenes=[scene_view(settings, s) for s in scenes]) if scenes is not None else None,
        video_url=artifact_url(settings, store, job, job.video_key, "video"),
        thumbnail_url=artifact_url(settings, store, job, job.thumbnail_key, "thumbnail"),
        error=job.error, error_code=job.error_code, estimated_cost=job.estimated_cost,
        actual_cost=job.actual_cost, preset=job.preset, aspect_ratio=job.aspect_ratio,
        priority=job.priority or "normal", webhook_id=job.webhook_id,
        stages=job_stages(job), created_at=job.created_at, updated_at=job.updated_at)
    return view.model_dump(mode="json", by_alias=True)


def job_stages(job: Job) -> list[dict[str, Any]]:
    """The stored timeline, with the job's current status folded in once more: an approval
    or a cancel made by the API shows before the job actor writes again."""
    return fold(job.stages, at=job.updated_at, status=job.status, error=job.error,
                approved_at=job.approved_at, start_from_status=False)
