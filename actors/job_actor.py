"""The per-job actor: one named, detached Ray actor drives a job like a workflow.

``_run`` orders the steps and always starts by reading the job's row, so an actor that Ray
restarted after a crash picks up where the database says the job is, skipping finished work
(scene images and clips carry the version they were rendered from). ``drive`` and ``cancel``
are the signals; ``describe`` is a read-only query.

Starting an actor is a new worker process (Python, Ray's core worker, these imports: over a
second of CPU), so the actors are *hosts* that outlive their jobs: a host drives one job at a
time and, when nothing is left to do (the job ended, or waits for a person), lets the job go and
waits in its farm's idle pool (``actors.job_registry``) for the next one, so a job costs a
method call, not a process. Each API replica keeps ``renderfarm_warm_job_hosts`` idle. An idle
host ends once the API replica that started it is gone, or after ``IDLE_HOST_TTL_S`` while
more than that many are idle (after a burst). A host retires after ``MAX_JOBS_PER_HOST`` jobs
(whatever one job leaves behind in a process does not pile up) and after a crash it has
recovered from.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Awaitable, Callable, Coroutine, Iterable, TypeVar

import ray
from ray.util import metrics

from actors import job_registry, steps, transient
from actors.capacity import CapacityWait, CapacityWatch
from actors.composite_task import COMPOSITE_RETRIES, ClipPlan, CompositeOutput
from actors.compositor import CallToActionCard, CompositorError
from actors.sound_mix import SoundMixError
from actors.job_store import JobStore, job_engine
from actors.messages import ClipRequest, ImageRequest, MusicRequest, VoiceRequest
from actors.placement import Placement
from coordinator import pricing
from coordinator.db.base import utcnow
from coordinator.db.models import Job, Scene
from coordinator.media import ImageLimits
from coordinator.job_states import (REVISION_REVIEW_MESSAGE, TERMINAL, IllegalTransition,
                                     JobStatus, SceneStatus)
from coordinator.schemas.jobs import CTA_CARD_SECONDS
from coordinator.planner import PlannedScene, PlannerError, plan_storyboard, replan_scene
from coordinator.progress import ALONGSIDE, REVIEW_PERCENT, STEPS, progress, step_percent
from coordinator.settings import Settings
from coordinator.storage import ObjectStore, make_object_store
from models.presets import apply_prompt_template, get_preset

log = logging.getLogger(__name__)

T = TypeVar("T")

ACTOR_NAMESPACE = "renderfarm"
DEFAULT_CTA_BACKGROUND = "#111111"
DEFAULT_CTA_TEXT = "#ffffff"
OUTPUT_FPS = 24
# Beyond ffmpeg's limits (two passes: picture, sound), time for the downloads and the bytes back.
COMPOSITE_SLACK_S = 120.0
# How often an idle host checks that the API replica that started it is alive.
IDLE_OWNER_CHECK_S = 5.0
# An idle host beyond the warm ones ends after this long without a job.
IDLE_HOST_TTL_S = 600.0
MAX_JOBS_PER_HOST = 200


def actor_name(job_id: str) -> str:
    """The name of the actor driving the job now: its registered host, else the per-job name
    actors created for one job carry (needs a connection to Ray)."""
    return job_registry.host_of(job_id) or legacy_actor_name(job_id)


def legacy_actor_name(job_id: str) -> str:
    """The name of an actor created for this one job (not a warm host)."""
    return f"job-{job_id}"


def host_name() -> str:
    """A fresh name for a warm host."""
    return f"jobhost-{uuid.uuid4().hex}"


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
    def __init__(self, job_id: str | None, settings: Settings, images: Any, clips: Any,
                 placement: Placement, *, host: str | None = None, owner: Any = None,
                 pool: str | None = None, audio: Any = None, compositor: Any = None):
        """With a ``job_id``: an actor for that one job, driving it at once (also when Ray
        restarts it after a crash), ending with it. Without one: the host named ``host``,
        which joins the idle pool ``pool`` at once; after a crash it takes back the job the
        registry says it had. ``owner`` is the API replica that started the host."""
        self.settings = settings
        self.placement = placement
        self.images = images
        self.clips = clips
        self.audio = audio  # the AudioRenderer handle; None on a farm without one
        self.compositor = compositor  # the Compositor handle (a warm worker; never None on a farm)
        self.host = host
        self.owner = owner
        self.pool = pool
        self.objects: ObjectStore = make_object_store(settings)
        # One engine for every job this actor drives; its connections close between jobs.
        self._engine = job_engine(settings)
        self.capacity = CapacityWatch(placement, autoscaling=settings.renderfarm_autoscaling,
                                      wait_limit_s=settings.capacity_wait_seconds)
        self._taking = asyncio.Lock()  # one job per host, even when two pokes race
        self._ending = False  # letting the job go: a drive now is refused (the caller retries)
        self._jobs_taken = 0
        self._idle_task: asyncio.Task | None = None
        self._forget_job()
        if job_id is None and host is not None:
            job_id = job_registry.job_of(host)
        if job_id is not None:
            self._take(job_id)
            self._start()
        else:
            if self.pool is not None:
                job_registry.offer(self.pool, self.host)
            self._idle_task = asyncio.get_running_loop().create_task(self._idle())

    def _forget_job(self) -> None:
        """Per-job state, empty: at start and each time the host lets a job go."""
        self.job_id: str | None = None
        self.jobs: JobStore | None = None
        self._run_task: asyncio.Task | None = None
        self._again = False  # a drive arrived while the run was deciding that nothing is due
        self._job_final = False  # the job reached a final state (its registry entries can go)
        # Scenes finish concurrently; progress writes go one at a time and never backwards.
        self._progress_lock = asyncio.Lock()
        self._reported_percent = 0.0
        # The job's reference image framed per scene size: loaded once, shared by every scene.
        self._reference_pngs: dict[tuple[str, int, int], asyncio.Future[bytes]] = {}

    # ---- signals and queries ------------------------------------------------------------

    async def ready(self) -> bool:
        """Answers once the host's process is up (the pool waits for this)."""
        return True

    async def drive(self, job_id: str) -> bool:
        """Takes the job if this is an idle host and no other host is registered for it, then
        looks at the job again (new regenerations, an approval); idempotent. False when this
        actor drives another job or is letting its job go, or another host has this one."""
        async with self._taking:
            if self._ending:
                return False
            if self.job_id is None:
                if self.host is not None:
                    if not await asyncio.to_thread(job_registry.claim, job_id, self.host):
                        if self.pool is not None:  # still idle: back in the pool
                            await asyncio.to_thread(job_registry.offer, self.pool, self.host)
                        return False
                    if self.pool is not None:
                        await asyncio.to_thread(job_registry.withdraw, self.pool, self.host)
                self._take(job_id)
            elif self.job_id != job_id:
                return False
        if self._run_task is not None and not self._run_task.done():
            self._again = True  # the run may have read the row before this change: look again
        self._start()
        return True

    async def ensure_running(self) -> bool:
        """``drive`` for the job this actor already has (actors created for one job)."""
        if self.job_id is None:
            return False
        self._start()
        return True

    async def cancel(self, job_id: str | None = None) -> None:
        """Stops in-flight work on ``job_id`` (any job, when None). The row is already
        ``cancelled`` (the API wrote it first). A host that has moved on to another job since
        the caller looked it up leaves that job alone."""
        if job_id is not None and job_id != self.job_id:
            return
        if self._run_task and not self._run_task.done():
            self._ending = True
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        if self.job_id is None:
            return  # idle: nothing to stop
        self._ending = True
        await self._count_outcome()
        await self._let_go()

    async def describe(self) -> dict[str, Any]:
        pool = self._engine.sync_engine.pool
        return {"job_id": self.job_id, "host": self.host, "jobs_taken": self._jobs_taken,
                "running": bool(self._run_task and not self._run_task.done()),
                "database_connections": (getattr(pool, "checkedin", lambda: 0)()
                                         + getattr(pool, "checkedout", lambda: 0)())}

    def _take(self, job_id: str) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        self._jobs_taken += 1
        self.job_id = job_id
        self.jobs = JobStore(self.settings, job_id, self._engine)

    def _start(self) -> None:
        if self.job_id is not None and (self._run_task is None or self._run_task.done()):
            self._run_task = asyncio.get_running_loop().create_task(self._run())

    def _reusable(self) -> bool:
        """Whether this host takes another job after this one (else it ends)."""
        return (self.host is not None and self.pool is not None
                and self._jobs_taken < MAX_JOBS_PER_HOST
                # After a crash: finish the job it had, then make way for a fresh process.
                and not ray.get_runtime_context().was_current_actor_reconstructed)

    async def _let_go(self) -> None:
        """The job is done or waits for a person: releases it (a host takes it again when it
        needs one), then waits in the pool for the next job, or ends."""
        async with self._taking:
            if self.host is not None and self.job_id is not None:
                try:
                    await asyncio.to_thread(job_registry.release, self.job_id, self.host,
                                            finished=self._job_final)
                except Exception:  # the next poke finds the host busy or dead and moves on
                    log.exception("job %s: could not release its host %s", self.job_id,
                                  self.host)
            if self._reusable():
                try:  # an idle host holds no database connections (a burst leaves many hosts)
                    await self._engine.dispose()
                except Exception:  # closing broken connections: the next job opens new ones
                    log.exception("host %s: could not close its database connections", self.host)
                self._forget_job()
                try:
                    await asyncio.to_thread(job_registry.offer, self.pool, self.host)
                except Exception:
                    log.exception("host %s: could not rejoin the idle pool; ending", self.host)
                else:
                    self._ending = False
                    self._idle_task = asyncio.get_running_loop().create_task(self._idle())
                    return
        self._end()

    def _end(self) -> None:
        # ray.kill from inside is the reliable way to end an async actor from a background task.
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    async def _idle(self) -> None:
        """While the host has no job: ends it once the API replica that started it is gone
        (deleted, redeployed, scaled down: its farm may be gone too), or when it has waited
        ``IDLE_HOST_TTL_S`` while more than the warm number of hosts are idle. Either way it
        leaves the pool first; a replica that took it from the pool just then gets an error
        on ``drive`` and takes another."""
        idle_since = asyncio.get_running_loop().time()
        while self.job_id is None:
            if self.owner is not None:
                try:
                    await self.owner.__ray_ready__.remote()
                except ray.exceptions.RayActorError:
                    break
                except Exception:  # a blip reaching the replica: look again later
                    log.debug("host %s: owner check failed", self.host, exc_info=True)
            if (self.pool is not None
                    and asyncio.get_running_loop().time() - idle_since > IDLE_HOST_TTL_S):
                idle = await asyncio.to_thread(job_registry.idle_hosts, self.pool)
                if len(idle) > self.settings.renderfarm_warm_job_hosts:
                    break
                idle_since = asyncio.get_running_loop().time()
            await asyncio.sleep(IDLE_OWNER_CHECK_S)
        else:
            return  # took a job
        async with self._taking:
            if self.job_id is not None:
                return
            self._ending = True
            if self.pool is not None:
                await asyncio.to_thread(job_registry.withdraw, self.pool, self.host)
        self._end()

    async def _count_outcome(self) -> None:
        if self.jobs is None:
            return
        job = await self.jobs.job()
        if job is not None and JobStatus(job.status) in TERMINAL:
            self._job_final = True
            _finished_counter().inc(tags={"status": job.status})

    # ---- the workflow -------------------------------------------------------------------

    async def _run(self) -> None:
        cancelled = False
        try:
            while await self._step() or self._again:
                self._again = False
        except asyncio.CancelledError:
            cancelled = True  # cancel() counts the outcome and lets the job go
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
                self._ending = True  # from here a drive is refused; the caller retries
                try:
                    await self._count_outcome()
                finally:
                    await self._let_go()

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
                           if stage in STEPS or stage in ALONGSIDE else REVIEW_PERCENT)
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
        auto_approve = bool((job.advanced or {}).get("autoApprove"))
        if auto_approve and not self.settings.renderfarm_auto_approve_barrier:
            await self._images_and_clips(job, scenes, todo)
            return
        # All scenes at once: the renderer batches them and Serve spreads them over replicas.
        await self._fan_out("image_generation", "Rendering scene images", len(scenes), todo,
                            lambda scene: self._render_image(job, scene, version=scene.version))
        await self._storyboard_ready(auto_approve)

    async def _storyboard_ready(self, auto_approve: bool) -> None:
        await self.jobs.transition(JobStatus.STORYBOARD_READY, progress=progress(
            "storyboard_ready", REVIEW_PERCENT, "Storyboard ready for review"))
        if auto_approve:
            await self.jobs.transition(JobStatus.VIDEO_PROCESSING, approved_at=utcnow(),
                                       progress=progress("clip_rendering", step_percent(
                                           "clip_rendering", 0, 1), "Auto-approved; rendering clips"))

    async def _images_and_clips(self, job: Job, scenes: list[Scene], todo: list[Scene]) -> None:
        """``autoApprove`` without a barrier: each scene's clip starts as soon as its image
        lands. The job moves to ``video_processing`` when the last image lands (as if a person
        approved then) while clips keep rendering; ``_make_video`` then finds only the clips
        still missing. Progress reports images until then, clips after."""
        total, images_left = len(scenes), len(todo)
        image_ids = {scene.id for scene in todo}
        clips_done = sum(1 for s in scenes if s.clip_key and s.clip_version == s.version
                         and s.id not in image_ids)
        approved = False

        async def approve() -> None:
            nonlocal approved
            await self._storyboard_ready(auto_approve=True)
            approved = True
            await self._report("clip_rendering", clips_done, total, "Rendering scene clips")

        async def one(scene: Scene) -> None:
            nonlocal images_left, clips_done
            if scene.id in image_ids:
                await self._render_image(job, scene, version=scene.version)
                images_left -= 1
                last = images_left == 0  # decided now: the others go on while we report
                await self._report("image_generation", total - images_left, total,
                                   "Rendering scene images")
                if last:
                    await approve()
            current = await self._scene(scene.id)
            if current.clip_key is None or current.clip_version != current.version:
                await self._render_clip(job, current)
                clips_done += 1
                if approved:
                    await self._report("clip_rendering", clips_done, total, "Rendering scene clips")

        await self._report("image_generation", total - images_left, total, "Rendering scene images")
        if not todo:
            await approve()
        await _all_at_once(one(scene) for scene in scenes)

    async def _scene(self, scene_id: str) -> Scene:
        """The scene's row as it is now (after its image landed)."""
        for scene in await self.jobs.scenes():
            if scene.id == scene_id:
                return scene
        raise steps.JobEnded(self.job_id)  # deleted: only a deleted job loses scenes mid-run

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
                reference_png=await self._reference_png(job, width, height),
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

    async def _reference_png(self, job: Job, width: int, height: int) -> bytes | None:
        """The job's reference image (``advanced.referenceAssetId``) cropped to the scene
        size as PNG, or None. Scenes render concurrently: the first loads it, the rest await
        the same load."""
        asset_id = (job.advanced or {}).get("referenceAssetId")
        if not asset_id:
            return None
        key = (asset_id, width, height)
        if key not in self._reference_pngs:
            self._reference_pngs[key] = asyncio.ensure_future(
                self._load_reference(asset_id, job.owner_id, width, height))
        try:
            return await asyncio.shield(self._reference_pngs[key])
        except steps.StepFailed:
            self._reference_pngs.pop(key, None)  # a later scene or regeneration tries again
            raise

    async def _load_reference(self, asset_id: str, owner_id: str, width: int, height: int) -> bytes:
        try:
            return await self._store(steps.product_image_png, self.objects,
                                     await self.jobs.asset_key(asset_id, owner_id),
                                     width, height, ImageLimits.from_settings(self.settings))
        except steps.StepFailed as exc:  # the loaders speak of the product image
            raise steps.StepFailed(exc.message.replace("The product image", "The reference image", 1),
                                   exc.code) from None

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
        if getattr(self, "audio", None) is None and (steps.voice_enabled(job)
                                                     or steps.music_source(job) == "generated"):
            # A farm deployed without the audio renderer: the ad keeps its picture (and an
            # asset's music), loudly logged, rather than failing every job.
            log.warning("job %s: no audio renderer in this farm; no voice-over or generated "
                        "music", job.id)
            job.advanced = {**(job.advanced or {}), "voiceOver": False,
                            "music": "none" if steps.music_source(job) == "generated"
                            else steps.music_source(job)}
        voices = [s for s in scenes if steps.voice_enabled(job) and s.script.strip()]
        speak = [s for s in voices if s.voice_key is None
                 or s.voice_text_hash != self._line_hash(job, s)]  # unchanged lines stay
        music = steps.music_source(job) != "none"
        compose = music and job.music_key is None
        # The clips, the spoken lines and the music, all at once, counted as one step.
        total = len(scenes) + len(voices) + int(music)
        done = total - len(todo) - len(speak) - int(compose)
        await self._report("clip_rendering", done, total, "Rendering scene clips and sound")

        async def unit(stage: str, label: str, work: Awaitable[None]) -> None:
            nonlocal done
            await work
            done += 1
            await self._report(stage, done, total, label)

        await _all_at_once([
            *(unit("clip_rendering", "Rendering scene clips", self._render_clip(job, scene))
              for scene in todo),
            *(unit("generating_audio", "Speaking the voice-over", self._speak(job, scene))
              for scene in speak),
            *([unit("generating_audio", "Making the music", self._make_music(job))]
              if compose else []),
        ])
        await self._composite_and_deliver(await self.jobs.job() or job)

    # ---- sound --------------------------------------------------------------------------

    def _audio_handle(self) -> Any:
        audio = getattr(self, "audio", None)
        if audio is None:
            raise steps.StepFailed("This farm has no audio renderer for the voice-over and music; "
                                   "turn them off (advanced.voiceOver, advanced.music) or ask the "
                                   "operator", "audio_unavailable")
        return audio

    @staticmethod
    def _line_hash(job: Job, scene: Scene) -> str:
        advanced = job.advanced or {}
        return steps.voice_text_hash(scene.script.strip(), advanced.get("language") or "en",
                                     advanced.get("voice"))

    async def _speak(self, job: Job, scene: Scene) -> None:
        """Speaks the scene's line and stores it under a key of its version and text."""
        advanced = job.advanced or {}
        text_hash = self._line_hash(job, scene)
        request = VoiceRequest(preset=job.preset, text=scene.script.strip(),
                               language=advanced.get("language") or "en",
                               voice=advanced.get("voice"),
                               seed=steps.voice_seed(job.seed, scene.id, text_hash),
                               priority=job.priority or "normal", owner=job.owner_id)
        what = f"Speaking the line of scene {scene.scene_idx}"
        audio = self._audio_handle()
        routed = audio.options(multiplexed_model_id=request.preset)
        result = await steps.call_renderer(lambda: routed.speak.remote(request), what,
                                           timeout_s=self.settings.render_timeout_seconds,
                                           capacity=self._capacity(audio, what, "generating_audio"))
        key = steps.scene_voice_key(job.id, scene.id, scene.version, text_hash)
        await self._store(self.objects.put_bytes, key, result.wav, "audio/wav")
        stored = await self.jobs.record_voice(
            scene.id, key=key, version=scene.version, text_hash=text_hash,
            duration_s=result.duration_s, seconds=result.seconds,
            cost=pricing.audio_cost(self.settings, result.seconds))
        if not stored:
            await self._store(self.objects.delete, key)
            raise steps.JobEnded(job.id)
        if scene.voice_key and scene.voice_key != key:
            await self._store(self.objects.delete, scene.voice_key)  # the line it replaces

    async def _make_music(self, job: Job) -> None:
        """The job's music bed, once: composed from the brief's mood, or the chosen asset."""
        source = steps.music_source(job)
        key = steps.music_key(job.id, source)
        if source == "asset":
            asset_key = await self.jobs.asset_key(job.advanced["musicAssetId"], job.owner_id,
                                                  what="music")
            data, seconds = await self._store(self.objects.get_bytes, asset_key), 0.0
        else:
            scenes_s = sum(s.duration_s for s in await self.jobs.scenes())
            request = MusicRequest(preset=job.preset, prompt=steps.music_prompt(job),
                                   duration_s=round(scenes_s + CTA_CARD_SECONDS, 3),
                                   seed=job.seed, priority=job.priority or "normal",
                                   owner=job.owner_id)
            what = "Making the music"
            audio = self._audio_handle()
            routed = audio.options(multiplexed_model_id=request.preset)
            result = await steps.call_renderer(
                lambda: routed.compose_music.remote(request), what,
                timeout_s=self.settings.render_timeout_seconds,
                capacity=self._capacity(audio, what, "generating_audio"))
            data, seconds = result.wav, result.seconds
        await self._store(self.objects.put_bytes, key, data, "application/octet-stream")
        if not await self.jobs.record_music(key, seconds=seconds,
                                            cost=pricing.audio_cost(self.settings, seconds)):
            await self._store(self.objects.delete, key)
            raise steps.JobEnded(job.id)

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
        # A scene lasts at least its spoken line (plus a pad); the line starts with the scene.
        spoken = steps.voice_enabled(job)
        clips = [ClipPlan(clip_key=s.clip_key,
                          duration_s=steps.spoken_scene_seconds(
                              s.duration_s, s.voice_duration_s if spoken and s.voice_key else None),
                          transition=s.transition, caption=s.script,
                          voice_duration_s=s.voice_duration_s if spoken and s.voice_key else None,
                          voice_key=s.voice_key if spoken else None) for s in scenes]
        music_key = job.music_key if steps.music_source(job) != "none" else None
        cta = _call_to_action(job)
        try:
            # A replica that dies mid-video is called again (Serve starts another), from the
            # stored clips; cancelling this stops its ffmpeg. ffmpeg's own time limits answer
            # first: this limit is only for a replica that stopped answering.
            output: CompositeOutput = await steps.call_renderer(
                lambda: self.compositor.composite.remote(
                    clips, cta, width=width, height=height, fps=OUTPUT_FPS, music_key=music_key),
                "Compositing", attempts=COMPOSITE_RETRIES + 1,
                timeout_s=2 * self.settings.ffmpeg_timeout_seconds + COMPOSITE_SLACK_S)
        except steps.StepFailed as failed:
            raise _composite_failure(failed) from failed.__cause__
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


def _composite_failure(failed: steps.StepFailed) -> steps.StepFailed:
    """What a failed compositing call tells the client: ffmpeg's reason (``composite_failed``),
    or that the compositing worker died on every attempt (``composite_worker_lost``)."""
    raised = failed.__cause__
    cause = getattr(raised, "cause", None) or raised  # Serve wraps the replica's exception
    if isinstance(cause, (CompositorError, SoundMixError)):
        return steps.StepFailed(f"Compositing failed: {cause}", "composite_failed")
    if raised is not None and steps.is_retryable(raised):
        return steps.StepFailed(f"Compositing failed: its worker was lost {COMPOSITE_RETRIES + 1}"
                                f" times ({type(raised).__name__})", "composite_worker_lost")
    return failed


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

