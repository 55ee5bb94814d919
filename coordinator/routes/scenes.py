"""``/api/v3/jobs/{job_id}/scenes``: review a storyboard scene by scene (spec 003)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from coordinator.crud import jobs as crud
from coordinator.crud.cleanup import delete_objects
from coordinator.deps import JobRunnerDep, OwnedJob, OwnedScene, SessionDep, SettingsDep, StoreDep
from coordinator.envelope import APIError, Envelope, ok
from coordinator.schemas.common import Message
from coordinator.schemas.jobs import RegenerateRequest, SceneOut, SceneUpdate
from coordinator.serving import serve_object
from coordinator.views import dump_scene

router = APIRouter(prefix="/jobs/{job_id}/scenes", tags=["scenes"])


@router.get("", response_model=Envelope[list[SceneOut]])
async def list_scenes(job: OwnedJob, session: SessionDep, settings: SettingsDep):
    scenes = await crud.scenes_of(session, job.id)
    return ok([dump_scene(settings, scene) for scene in scenes], page=1, total=len(scenes))


@router.get("/{scene_id}", response_model=Envelope[SceneOut])
async def get_scene(scene: OwnedScene, settings: SettingsDep):
    return ok(dump_scene(settings, scene))


@router.put("/{scene_id}", response_model=Envelope[SceneOut])
async def update_scene(body: SceneUpdate, job: OwnedJob, scene: OwnedScene, session: SessionDep,
                       settings: SettingsDep):
    """Edits text, shot, transition or duration while the storyboard is under review, or on a
    completed job, which that reopens for review as a revision (else 409). The image is not
    re-rendered; regenerate the scene for that."""
    scene = await crud.update_scene(session=session, job=job, scene=scene, data=body)
    return ok(dump_scene(settings, scene))


@router.delete("/{scene_id}", response_model=Envelope[Message])
async def delete_scene(job: OwnedJob, scene: OwnedScene, session: SessionDep, store: StoreDep):
    """Removes the scene; later scenes move up one ``scene_idx``. On a completed job this
    starts a revision, as an edit does."""
    keys = await crud.delete_scene(session=session, job=job, scene=scene)
    await delete_objects(store, keys)
    return ok({"message": "Scene deleted successfully"})


@router.post("/{scene_id}/regenerate", response_model=Envelope[SceneOut], status_code=202)
async def regenerate_scene(job: OwnedJob, scene: OwnedScene, session: SessionDep,
                           settings: SettingsDep, runner: JobRunnerDep,
                           body: RegenerateRequest | None = None):
    """Re-plans this scene (with the optional ``feedback``) and re-renders its image alone; its
    ``version`` goes up when the new image lands. Poll the job or scene to see it. On a
    completed job this starts a revision, as an edit does."""
    scene = await crud.request_regeneration(session=session, job=job, scene=scene,
                                            feedback=body.feedback if body else None)
    await runner.poke(job.id)
    return ok(dump_scene(settings, scene))


@router.get("/{scene_id}/image")
@router.head("/{scene_id}/image", include_in_schema=False)
async def scene_image(scene: OwnedScene, request: Request, store: StoreDep):
    """The scene's current image (PNG)."""
    if not scene.image_key:
        raise APIError(409, "The scene's image has not been rendered yet", "image_not_ready")
    return await serve_object(request, store, scene.image_key, content_type="image/png",
                              etag=f"{scene.id}-v{scene.image_version}")
