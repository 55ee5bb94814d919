"""The per-job actor: one named, detached Ray actor per job that drives it like a workflow.

``_run`` orders the steps and always starts by reading the job's row, so an actor that Ray
restarted after a crash picks up where the database says the job is, skipping finished work
(scene images and clips carry the version they were rendered from). ``ensure_running`` and
``cancel`` are the signals; ``describe`` is a read-only query. When nothing is left to do (the
job ended, or waits for a person), the actor ends itself; the API creates a new one when needed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Coroutine, Iterable, TypeVar

import ray
from ray.util import metrics

from actors import steps, transient
from actors.capacity import CapacityWait, CapacityWatch
from actors.composite_task import COMPOSITE_RETRIES, ClipPlan, CompositeOutput, composite_task
from actors.compositor import CallToActionCard, CompositorError
from actors.job_store import JobStore
from actors.messages import ClipRequest, ImageRequest
from actors.placement import Placement
from coordinator import pricing
from coordinator.db.base import utcnow
from coordinator.db.models import Job, Scene
from coordinator.media import ImageLimits
from coordinator.job_states import (REVISION_REVIEW_MESSAGE, TERMINAL, IllegalTransition,
                                     JobStatus, SceneStatus)
from coordinator.schemas.jobs import CTA_CARD_SECONDS
from coordinator.planner import PlannedScene, PlannerError, plan_storyboard, replan_scene
from coordinator.progress import REVIEW_PERCENT, STEPS, progress, step_percent
from coordinator.settings import Settings
from coordinator.storage import ObjectStore, make_object_store
from models.presets import apply_prompt_template, get_preset

log = logging.getLogger(__name__)

T = TypeVar("T")

ACTOR_NAMESPACE = "renderfarm"
DEFAULT_CTA_BACKGROUND = "#111111"
DEFAULT_CTA_TEXT = "#ffffff"
OUTPUT_FPS = 24


def actor_name(job_id: str) -> str:
    return f"job-{job_id}"


_jobs_finished = None


def _finished_counter():  # noqa: ANN202
    # Created lazily inside the actor process (metrics need a connected Ray worker).
    global _jobs_finished
    if _jobs_finished is None:
        _jobs_finished = metrics.Counter("renderfarm_jobs_finished",
                                         "Jobs that reached a final state", tag_keys=("status",))
    return _jobs_finished


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class JobActor:
    def __init__(self, job_id: str, settings: Settings, images: Any, clips: Any,
                 placement: Placement):
        """Starts driving the job at once, also when Ray restarts this actor after a crash."""
        self.job_id = job_id
        self.settings = settings
        self.placement = placement
        self.images = images
        self.clips = clips
        self.jobs = JobStore(settings, job_id)
        self.objects: ObjectStore = make_object_store(settings)
        self.capacity = CapacityWatch(placement, autoscaling=settings.renderfarm_autoscaling,
                                      wait_limit_s=settings.capacity_wait_seconds)
        self._run_task: asyncio.Task | None = None
        # Scenes finish concurrently; progress writes go one at a time and never backwards.
        self._progress_lock = asyncio.Lock()
        self._reported_percent = 0.0
        self._start()

    # ---- signals and queries ------------------------------------------------------------

    async def ensure_running(self) -> bool:
        """Looks at the job again (new regenerations, an approval); idempotent."""
        self._start()
        return True

    async def cancel(self) -> None:
        """Stops in-flight work. The row is already ``cancelled`` (the API wrote it first)."""
        if self._run_task and not self._run_task.done():
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        await self._count_outcome()
        self._exit()

    async def describe(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "running": bool(self._run_task and not self._run_task.done())}

    def _start(self) -> None:
        if self._run_task is None or self._run_task.done():
            self._run_task = asyncio.get_running_loop().create_task(self._run())

    def _exit(self) -> None:
        # The job is done or waits for a person: free the worker. ray.kill from inside is the
        # reliable way to end an async actor from a background task.
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def _count_outcome(self) -> None:
        job = await self.jobs.job()
        if job is not None and JobStatus(job.status) in TERMINAL:
            _finished_counter().inc(tags={"status": job.status})

    # ---- the workflow -------------------------------------------------------------------

    async def _run(self) -> None:
        cancelled = False
        try:
            while await self._step():
                pass
        except asyncio.CancelledError:
            cancelled = True  # cancel() counts the outcome and ends the actor
            raise
        except (IllegalTransition, steps.JobEnded) as exc:
            # Someone else (a cancel) ended or moved the job first: their state stands.
            log.info("job %s: stopped: %s", self.job_id, exc)
        except steps.StepFailed as failure:
            await self.jobs.fail(failure.message, failure.code)
        except Exception as exc:
            log.exception("job %s failed", self.job_id)
            if transient.is_transient(exc):
                await self.jobs.fail("The database or the object store was unreachable for "
                                     "longer than the retries cover; retry the job",
                                     "service_unavailable")
            else:
                await self.jobs.fail("The render farm hit an internal error; retry the job or "
                                     "contact the operator", "internal_error")
        finally:
            if not cancelled:
                try:
                    await self._count_outcome()
                finally:
                    self._exit()

    async def _step(self) -> bool:
        """Does the next due piece of work; False when nothing is due."""
        job = await self.jobs.job()
        if job is None or JobStatus(job.status) in TERMINAL:
            return False
        status = JobStatus(job.status)
        if status == JobStatus.PENDING:
            await self.jobs.transition(JobStatus.STORYBOARD_PROCESSING, progress=progress(
                "storyboard_generation", 1, "Writing the storyboard"))
        elif status == JobStatus.STORYBOARD_PROCESSING:
            await self._make_storyboard(job)
        elif status == JobStatus.STORYBOARD_READY:
            pending = [s for s in await self.jobs.scenes() if s.status == SceneStatus.REGENERATING.value]
            if not pending:
                return False
            await _all_at_once(self._regenerate(job, scene) for scene in pending)
            await self.jobs.set_progress(progress("storyboard_ready", REVIEW_PERCENT,
                                                  REVISION_REVIEW_MESSAGE if job.video_key
                                                  else "Storyboard ready for review"))
        elif status == JobStatus.VIDEO_PROCESSING:
            await self._make_video(job)
        return True

    async def _fan_out(self, stage: str, label: str, total: int, todo: list[Scene],
                       work: Callable[[Scene], Awaitable[None]]) -> None:
        """Runs ``work`` for every scene in ``todo`` concurrently, reporting progress as each
        lands; the first failure cancels the others (their renderer requests included)."""
        done = total - len(todo)
        await self._report(stage, done, total, label)

        async def one(scene: Scene) -> None:
            nonlocal done
            await work(scene)
            done += 1
            await self._report(stage, done, total, label)

        await _all_at_once(one(scene) for scene in todo)

    def _waiting(self, stage: str) -> Callable[[str], Awaitable[None]]:
        """Reports that ``stage``'s work waits for a render worker to start."""
        async def report(message: str) -> None:
            async with self._progress_lock:
                percent = (max(self._reported_percent, step_percent(stage, 0, 1))
                           if stage in STEPS else REVIEW_PERCENT)
                await self.jobs.set_progress(progress(stage, percent, message))
        return report

    def _capacity(self, handle: Any, what: str, stage: str) -> Callable[[], CapacityWait]:
        return lambda: CapacityWait(self.capacity, handle, what, self._waiting(stage))

    async def _store(self, method: Callable[..., T], *args: Any) -> T:
        """An object-store call, in a thread, riding out short outages."""
        return await transient.retry_transient(lambda: asyncio.to_thread(method, *args),
                                               "object store")

    async def _report(self, stage: str, done: int, total: int, label: str) -> None:
        async with self._progress_lock:
            percent = max(step_percent(stage, done, total), self._reported_percent)
            self._reported_percent = percent
            await self.jobs.set_progress(progress(stage, percent, f"{label} ({done}/{total})"))

    # ---- storyboard ---------------------------------------------------------------------

    async def _make_storyboard(self, job: Job) -> None:
        scenes = await self.jobs.scenes()
        if not scenes:
            await self.jobs.set_progress(progress("storyboard_generation", 2, "Writing the storyboard"))
            try:
                plan = await plan_storyboard(steps.planning_brief(job), self.settings)
            except PlannerError as exc:
                raise steps.StepFailed(str(exc), exc.code) from exc
            tokens = plan.prompt_tokens + plan.completion_tokens
            scenes = await self.jobs.save_storyboard(
                job.owner_id, plan.storyboard.scenes,
                planner_cost=pricing.llm_cost(self.settings, tokens))
        todo = [s for s in scenes if s.image_key is None or s.image_version != s.version]
        # All scenes at once: the renderer batches them and Serve spreads them over replicas.
        await self._fan_out("image_generation", "Rendering scene images", len(scenes), todo,
                            lambda scene: self._render_image(job, scene, version=scene.version))
        await self.jobs.transition(JobStatus.STORYBOARD_READY, progress=progress(
            "storyboard_ready", REVIEW_PERCENT, "Storyboard ready for review"))
        if (job.advanced or {}).get("autoApprove"):
            await self.jobs.transition(JobStatus.VIDEO_PROCESSING, approved_at=utcnow(),
                                       progress=progress("clip_rendering", step_percent(
                                           "clip_rendering", 0, 1), "Auto-approved; rendering clips"))

    async def _render_image(self, job: Job, scene: Scene, *, version: int,
                            text: dict[str, Any] | None = None,
                            stage: str = "image_generation") -> None:
        preset = get_preset(job.preset)
        width, height = preset.image_size[job.aspect_ratio]
        shot_type = (text or {}).get("shot_type", scene.shot_type)
        product_asset = (job.advanced or {}).get("productImageAssetId")
        if product_asset and shot_type == "product":
            # The product shot shows the client's real product photo, not an invention.
            png = await self._store(steps.product_image_png, self.objects,
                                    await self.jobs.asset_key(product_asset, job.owner_id),
                                    width, height, ImageLimits.from_settings(self.settings))
            seconds = 0.0
        else:
            brief = steps.planning_brief(job)
            prompt_source = (text or {}).get("image_prompt", scene.image_prompt)
            request = ImageRequest(
                preset=job.preset, prompt=apply_prompt_template(
                    preset, prompt_source, steps.style_unless_present(brief.style, prompt_source)),
                seed=steps.scene_seed(job.seed, scene.id, version), width=width, height=height,
                negative_prompt=steps.negative_prompt(preset, brief),
                priority=job.priority or "normal", owner=job.owner_id)
            what = f"Rendering the image of scene {scene.scene_idx}"
            # Serve routes the request to a replica already holding the preset's model.
            images = self.images.options(multiplexed_model_id=request.preset)
            result = await steps.call_renderer(lambda: images.render.remote(request), what,
                                               timeout_s=self.settings.render_timeout_seconds,
                                               capacity=self._capacity(self.images, what, stage))
            png, seconds = result.png, result.seconds
        key = steps.scene_image_key(job.id, scene.id, version)
        await self._store(self.objects.put_bytes, key, png, "image/png")
        stored = await self.jobs.record_image(
            scene.id, key=key, version=version, seconds=seconds,
            cost=pricing.image_cost(self.settings, seconds), text=text)
        if not stored:  # the job ended meanwhile: keep nothing it no longer refers to
            await self._store(self.objects.delete, key)
            raise steps.JobEnded(job.id)
        if scene.image_key and scene.image_key != key:
            await self._store(self.objects.delete, scene.image_key)  # the replaced image

    async def _regenerate(self, job: Job, scene: Scene) -> None:
        """Re-plans the scene's text with the person's feedback and renders a new version."""
        text = None
        try:
            if scene.regenerate_feedback:
                scenes = await self.jobs.scenes()
                planned = [_as_planned(s) for s in scenes]
                index = next(i for i, s in enumerate(scenes) if s.id == scene.id)
                new_scene, prompt_tokens, completion_tokens = await replan_scene(
                    steps.planning_brief(job), planned, index, scene.regenerate_feedback,
                    self.settings)
                await self.jobs.record_usage("planner", seconds=0.0, cost=pricing.llm_cost(
                    self.settings, prompt_tokens + completion_tokens))
                text = {"description": new_scene.description, "script": new_scene.script,
                        "image_prompt": new_scene.image_prompt,
                        "shot_type": new_scene.shot_type.value}
            await self._render_image(job, scene, version=scene.version + 1, text=text,
                                     stage="regenerating_scene")
        except (PlannerError, steps.StepFailed) as exc:
            # The storyboard stays usable with the scene's previous image.
            await self.jobs.mark_scene_failed(scene.id, str(exc))

    # ---- video --------------------------------------------------------------------------

    async def _make_video(self, job: Job) -> None:
        scenes = await self.jobs.scenes()
        if not scenes:
            raise steps.StepFailed("The storyboard has no scenes to render", "no_scenes")
        todo = [s for s in scenes if s.clip_key is None or s.clip_version != s.version]
        await self._fan_out("clip_rendering", "Rendering scene clips", len(scenes), todo,
                            lambda scene: self._render_clip(job, scene))
        await self._composite_and_deliver(job)

    async def _render_clip(self, job: Job, scene: Scene) -> None:
        preset = get_preset(job.preset)
        width, height = preset.clip_size[job.aspect_ratio]
        image_png = await self._store(self.objects.get_bytes, scene.image_key)
        request = ClipRequest(preset=job.preset, image_png=image_png,
                              seed=steps.scene_seed(job.seed, scene.id, scene.version),
                              width=width, height=height, prompt=scene.image_prompt,
                              priority=job.priority or "normal", owner=job.owner_id)
        what = f"Rendering the clip of scene {scene.scene_idx}"
        clips = self.clips.options(multiplexed_model_id=request.preset)  # to a replica holding it
        result = await steps.call_renderer(lambda: clips.render.remote(request), what,
                                           timeout_s=self.settings.render_timeout_seconds,
                                           capacity=self._capacity(self.clips, what,
                                                                   "clip_rendering"))
        key = steps.scene_clip_key(job.id, scene.id, scene.version)
        await self._store(self.objects.put_bytes, key, result.mp4, "video/mp4")
        stored = await self.jobs.record_clip(scene.id, key=key, version=scene.version,
                                             seconds=result.seconds,
                                             cost=pricing.clip_cost(self.settings, result.seconds))
        if not stored:
            await self._store(self.objects.delete, key)
            raise steps.JobEnded(job.id)
        if scene.clip_key and scene.clip_key != key:
            # The clip of an earlier version (a revision): the video that used it is a file
            # of its own, so nothing needs it any more.
            await self._store(self.objects.delete, scene.clip_key)

    async def _composite_and_deliver(self, job: Job) -> None:
        scenes = await self.jobs.scenes()
        preset = get_preset(job.preset)
        width, height = preset.output_size[job.aspect_ratio]
        await self.jobs.set_progress(progress("compositing", step_percent("compositing", 0, 1),
                                              "Compositing the clips"))
        clips = [ClipPlan(clip_key=s.clip_key, duration_s=s.duration_s, transition=s.transition,
                          caption=s.script) for s in scenes]
        ref = composite_task.options(**self.placement.composite).remote(
            self.settings, clips, _call_to_action(job), width=width, height=height, fps=OUTPUT_FPS)
        try:
            output: CompositeOutput = await ref
        except asyncio.CancelledError:
            ray.cancel(ref)  # awaiting a task does not own it: stop ffmpeg explicitly
            raise
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, CompositorError) else None
            if cause is None:
                raise
            raise steps.StepFailed(f"Compositing failed: {cause}", "composite_failed") from exc
        except Exception as exc:
            if not steps.is_retryable(exc):
                raise
            # Ray already re-ran the task after each crash of its worker (COMPOSITE_RETRIES).
            raise steps.StepFailed(f"Compositing failed: its worker was lost "
                                   f"{COMPOSITE_RETRIES + 1} times ({type(exc).__name__})",
                                   "composite_worker_lost") from exc
        await self.jobs.record_usage("composite", seconds=output.seconds,
                                     cost=pricing.composite_cost(self.settings, output.seconds))
        await self.jobs.set_progress(progress("uploading", step_percent("uploading", 0, 1),
                                              "Uploading the video"))
        # A revision's video goes under new names: the previous one (still ``job``'s keys)
        # stays served until the row names the new one, and is deleted only then.
        keys = (steps.video_key(job.id, job.revision), steps.thumbnail_key(job.id, job.revision))
        replaced = [key for key in (job.video_key, job.thumbnail_key) if key and key not in keys]
        await self._store(self.objects.put_bytes, keys[0], output.video_mp4, "video/mp4")
        await self._store(self.objects.put_bytes, keys[1], output.thumbnail_jpg, "image/jpeg")
        try:
            await self.jobs.transition(
                JobStatus.COMPLETED, video_key=keys[0], thumbnail_key=keys[1],
                video_duration_s=output.result.duration_s,
                actual_cost=await self.jobs.actual_cost(),
                progress=progress("uploading", 100, "Video ready"))
        except IllegalTransition:
            # Cancelled while uploading: a cancelled job keeps no final video, a cancelled
            # revision the previous one (the row still names it).
            for key in keys:
                await self._store(self.objects.delete, key)
            raise
        for key in replaced:
            await self._store(self.objects.delete, key)


async def _all_at_once(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Awaits all; on the first failure the rest are cancelled and that failure is raised
    as itself (not wrapped in an ExceptionGroup), so callers can tell failures apart."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None


def _call_to_action(job: Job) -> CallToActionCard:
    brief = job.brief or {}
    colors = (brief.get("brand") or {}).get("colors") or []
    return CallToActionCard(
        text=brief.get("adBasics", {}).get("callToAction", ""),
        background_color=colors[0] if colors else DEFAULT_CTA_BACKGROUND,
        text_color=colors[1] if len(colors) > 1 else DEFAULT_CTA_TEXT,
        duration_s=CTA_CARD_SECONDS)


def _as_planned(scene: Scene) -> PlannedScene:
    return PlannedScene(description=scene.description, script=scene.script,
                        shot_type=scene.shot_type, transition=scene.transition,
                        duration_s=scene.duration_s, image_prompt=scene.image_prompt)

