"""The small facade the API uses to reach the render side: make sure a job's actor exists and
looks at its job (``poke``), stop it (``cancel``), and a supervisor loop that keeps every
unfinished job driven by a live actor (after a crash, a restart of the service, or a race with
an actor that was just ending itself).

A job's actor is a host (``actors.job_actor``) taken from the farm's idle pool, which the hosts
rejoin after each job; this replica keeps at least ``renderfarm_warm_job_hosts`` idle, starting
more in the background, so no job waits for a worker process."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import ray
from ray.util import metrics
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from actors import job_registry
from actors import steps
from actors.job_actor import ACTOR_NAMESPACE, JobActor, host_name, legacy_actor_name
from actors.messages import ImageRequest, ImageResult
from actors.placement import Placement
from coordinator.db.models import Job, Scene
from coordinator.envelope import APIError
from coordinator.job_states import PROCESSING, JobStatus, SceneStatus
from coordinator.settings import Settings
from models.presets import GPU_PRESET

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S = 2.0
# Resumption pokes run side by side, each bounded: one hung actor must not hold up the rest.
SUPERVISE_CONCURRENCY = 8
SUPERVISE_POKE_TIMEOUT_S = 15.0
# How long a cancel request waits for the job's actor to stop its work (the row is already
# cancelled, so an actor that misses it stops at its next write anyway).
CANCEL_DELIVERY_TIMEOUT_S = 10.0
DEFAULT_PRESET_WAIT_S = 2.0
# Job hosts this replica starts at once: each start takes a core for about a second, and a
# burst of jobs must not turn into a burst of process starts competing for the same cores.
HOST_STARTS_AT_ONCE = 2
# The jobs-by-state gauge counts the whole jobs table: every 5th round (10 s) is plenty.
JOBS_GAUGE_EVERY = 5


class RayJobRunner:
    def __init__(self, settings: Settings, images: Any, clips: Any, placement: Placement,
                 audio: Any = None, compositor: Any = None):
        self.settings = settings
        self.images = images
        self.clips = clips
        self.audio = audio  # the AudioRenderer handle (voice-over, music); None: a silent farm
        self.compositor = compositor  # the Compositor handle
        self.placement = placement
        self._pokes: set[asyncio.Task] = set()  # strong references until they finish
        self._pool: str | None = None
        self._starts = asyncio.Semaphore(HOST_STARTS_AT_ONCE)
        self._in_flight: dict[str, int] = {}  # job id -> pokes of it running now
        self._filling: asyncio.Task | None = None
        self._default_preset: str | None = None
        self._jobs_gauge: Any = None

    async def default_preset(self) -> str | None:
        """The preset the image renderers chose where they run (asked once, then remembered).
        While no renderer answers (GPU nodes still starting), the GPU preset if renderers ask
        for GPUs, else None (the caller falls back to ``tiny``)."""
        if self._default_preset is None:
            try:
                self._default_preset = await asyncio.wait_for(
                    self.images.default_preset.remote(), DEFAULT_PRESET_WAIT_S)
            except Exception:  # not up yet, or not placeable: decide without it this time
                log.info("no image renderer answered for the default preset yet")
                return GPU_PRESET if self.placement.render_gpus > 0 else None
        return self._default_preset

    def _registered(self, job_id: str) -> Any | None:
        """The live actor driving the job (its registered host, or an actor created for this
        one job), else None. A registered host that is gone for good is forgotten."""
        name = job_registry.host_of(job_id)
        if name is not None:
            try:
                return ray.get_actor(name, namespace=ACTOR_NAMESPACE)
            except ValueError:
                job_registry.forget_dead(job_id, name)
        try:
            return ray.get_actor(legacy_actor_name(job_id), namespace=ACTOR_NAMESPACE)
        except ValueError:
            return None

    @property
    def pool(self) -> str:
        """The idle pool of this farm's hosts: its Serve application and a fingerprint of its
        settings and placement (a host carries both; another farm's host must not drive our
        jobs, and a redeploy with new settings must not reuse the old hosts)."""
        if self._pool is None:
            try:
                from ray import serve

                app = serve.get_replica_context().app_name
            except Exception:  # not in a Serve replica (a driver, e.g. a benchmark)
                app = "driver"
            farm = f"{self.settings.model_dump_json()}|{self.placement!r}"
            self._pool = f"{app}/{hashlib.sha256(farm.encode()).hexdigest()[:16]}"
        return self._pool

    def _new_host(self) -> Any:
        try:  # the API replica: its idle hosts end themselves once it is gone
            owner = ray.get_runtime_context().current_actor
        except RuntimeError:  # not in an actor (a driver, e.g. a benchmark)
            owner = None
        name = host_name()
        # Detached: a job outlives the API replica that handed it out.
        return JobActor.options(name=name, namespace=ACTOR_NAMESPACE, lifetime="detached",
                                **self.placement.job_actor).remote(
            None, self.settings, self.images, self.clips, self.placement, host=name, owner=owner,
            pool=self.pool, audio=self.audio, compositor=self.compositor)

    async def _start_host(self) -> None:
        """Starts a host and waits until it has joined the pool (call it holding a start
        slot). Whoever asked for it may be gone by then: the host waits in the pool."""
        # Creating a named actor is a blocking call to the cluster.
        host = await asyncio.to_thread(self._new_host)
        await host.ready.remote()

    def _refill(self) -> None:
        """Starts hosts in the background until ``renderfarm_warm_job_hosts`` are idle."""
        if self._filling is None or self._filling.done():
            self._filling = asyncio.create_task(self._fill())

    async def _idle_count(self) -> int:
        return len(await asyncio.to_thread(job_registry.idle_hosts, self.pool))

    async def _fill(self) -> None:
        try:
            while await self._idle_count() < self.settings.renderfarm_warm_job_hosts:
                async with self._starts:
                    await self._start_host()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not start a warm job host; trying again next round")

    def _pooled_host(self) -> Any | None:
        """A live idle host taken out of the pool for us alone, or None (blocking calls)."""
        while (name := job_registry.take_idle(self.pool)) is not None:
            try:
                return ray.get_actor(name, namespace=ACTOR_NAMESPACE)
            except ValueError:  # it ended (owner gone) after joining: try the next
                continue
        return None

    async def _take_host(self) -> Any:
        """An idle host from the pool (warm). While there is none, hosts are started, a few
        at a time, each joining the pool, and the first to come free is taken, whoever
        started it (a job that finished meanwhile frees one too)."""
        while True:
            host = await asyncio.to_thread(self._pooled_host)
            if host is None:
                async with self._starts:
                    # Another host may have come free while this waited for a start slot.
                    host = await asyncio.to_thread(self._pooled_host)
                    if host is None:
                        await self._start_host()
                        continue
            self._refill()
            return host

    async def render_image(self, request: ImageRequest) -> ImageResult:
        """One image outside any job (a character reference asset) on the image renderers,
        routed like a job's scenes; a 503 ``APIError`` if it cannot be rendered."""
        images = self.images.options(multiplexed_model_id=request.preset)
        # A request waits at most for a worker to start plus one render, never indefinitely.
        limit_s = self.settings.capacity_wait_seconds + self.settings.render_timeout_seconds
        try:
            return await asyncio.wait_for(steps.call_renderer(
                lambda: images.render.remote(request), "Rendering the reference image",
                timeout_s=self.settings.render_timeout_seconds), limit_s)
        except asyncio.TimeoutError:
            raise APIError(503, "No image renderer took the reference image in time; try "
                           "again later", "renderer_unavailable") from None
        except steps.StepFailed as exc:  # nothing was stored; the caller may simply retry
            raise APIError(503, exc.message, exc.code) from None

    async def poke(self, job_id: str) -> None:
        """Has the job's actor look at the job's row, in the background: no request waits for
        the cluster (and, when no host is warm, for a worker process to start)."""
        task = asyncio.create_task(self.poke_now(job_id))
        self._pokes.add(task)
        task.add_done_callback(self._pokes.discard)

    async def poke_now(self, job_id: str) -> None:
        """Creates the job's actor if needed and has it look at the job's row. Never raises:
        the row is already committed, and the supervisor retries what did not get through."""
        try:
            await self._poke(job_id)
        except Exception:
            log.exception("job %s: could not reach its actor; the supervisor will retry", job_id)

    async def _poke(self, job_id: str) -> None:
        self._in_flight[job_id] = self._in_flight.get(job_id, 0) + 1
        try:
            await self._reach_actor(job_id)
        finally:
            self._in_flight[job_id] -= 1
            if not self._in_flight[job_id]:
                del self._in_flight[job_id]

    async def _reach_actor(self, job_id: str) -> None:
        for attempt in range(3):
            handle = await asyncio.to_thread(self._registered, job_id)
            try:
                if handle is not None:
                    if await handle.drive.remote(job_id):
                        return
                    # It is ending itself (the job waited for a person); a new host takes over.
                else:
                    host = await self._take_host()
                    if await host.drive.remote(job_id):
                        return
                    # Another replica's host took the job first (ours went back to the pool,
                    # or is busy): poke theirs.
                    continue
            except ray.exceptions.RayActorError:
                # The actor was ending itself as we called, or the host died; try again.
                log.debug("job %s: actor gone while poked (attempt %d)", job_id, attempt + 1)
            await asyncio.sleep(0.2 * (attempt + 1))
        log.warning("job %s: could not reach an actor; the supervisor will retry", job_id)

    async def cancel(self, job_id: str) -> None:
        """Stops the job's in-flight work, if an actor is running it. Never raises: an actor
        that misses this notices the cancelled row at its next write and stops there."""
        try:
            handle = await asyncio.to_thread(self._registered, job_id)
            if handle is not None:
                # Bounded: the cancel request must not hang on a busy or restarting actor.
                await asyncio.wait_for(handle.cancel.remote(job_id), CANCEL_DELIVERY_TIMEOUT_S)
        except (ValueError, ray.exceptions.RayActorError):
            pass  # no actor, or it ended itself: nothing is in flight
        except asyncio.TimeoutError:
            log.warning("job %s: its actor did not take the cancel within %.0f s; it stops at "
                        "its next write", job_id, CANCEL_DELIVERY_TIMEOUT_S)
        except Exception:
            log.exception("job %s: could not deliver the cancel to its actor", job_id)

    async def jobs_needing_an_actor(self, sessions: async_sessionmaker[AsyncSession]) -> list[str]:
        """Jobs in a processing state, and reviewed jobs with a regeneration waiting."""
        async with sessions() as session:
            regenerating = select(Scene.job_id).where(Scene.status == SceneStatus.REGENERATING.value)
            rows = await session.scalars(select(Job.id).where(or_(
                Job.status.in_([status.value for status in PROCESSING]),
                (Job.status == JobStatus.STORYBOARD_READY.value) & Job.id.in_(regenerating),
            )))
            return list(rows.all())

    async def report_jobs_by_status(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        """Sets ``renderfarm_jobs{status}``: jobs in each state, from the database (the source of
        truth), each supervision round. Every API replica reports the same counts: take the
        max across replicas, not the sum."""
        async with sessions() as session:
            counts = dict((await session.execute(
                select(Job.status, func.count()).group_by(Job.status))).all())
        if self._jobs_gauge is None:  # created in the replica: metrics need a Ray worker
            self._jobs_gauge = metrics.Gauge("renderfarm_jobs", "Jobs in each state",
                                             tag_keys=("status",))
        for status in JobStatus:
            self._jobs_gauge.set(counts.get(status.value, 0), tags={"status": status.value})

    async def _report_safely(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        # Apart from supervision: a metric that fails must not stop jobs being resumed.
        try:
            await self.report_jobs_by_status(sessions)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reporting jobs by status failed")

    async def supervise(self, sessions: async_sessionmaker[AsyncSession],
                        interval_s: float = SUPERVISE_INTERVAL_S) -> None:
        """Runs for the life of the API replica; on start-up this resumes orphaned jobs.
        Pokes run concurrently (at most ``SUPERVISE_CONCURRENCY``), each given up after
        ``SUPERVISE_POKE_TIMEOUT_S``; a job whose poke still runs is not poked again."""
        slots = asyncio.Semaphore(SUPERVISE_CONCURRENCY)
        running: dict[str, asyncio.Task] = {}
        rounds = 0
        try:
            while True:
                self._refill()  # at start-up, and after a host failed to start
                if rounds % JOBS_GAUGE_EVERY == 0:
                    await self._report_safely(sessions)
                rounds += 1
                try:
                    for job_id in await self.jobs_needing_an_actor(sessions):
                        # Not while another poke of it runs (one still waiting for a host
                        # start would otherwise get company every round).
                        if job_id not in running and job_id not in self._in_flight:
                            task = asyncio.create_task(self._supervised_poke(job_id, slots))
                            running[job_id] = task
                            task.add_done_callback(
                                lambda _, job_id=job_id: running.pop(job_id, None))
                except asyncio.CancelledError:
                    raise
                except Exception:  # a database blip must not end supervision
                    log.exception("job supervision pass failed")
                await asyncio.sleep(interval_s)
        finally:
            for task in list(running.values()):
                task.cancel()
            if self._filling is not None:
                self._filling.cancel()

    async def _supervised_poke(self, job_id: str, slots: asyncio.Semaphore) -> None:
        async with slots:
            try:
                await asyncio.wait_for(self._poke(job_id), SUPERVISE_POKE_TIMEOUT_S)
            except asyncio.TimeoutError:
                log.warning("job %s: its actor did not answer within %.0f s; poked again later",
                            job_id, SUPERVISE_POKE_TIMEOUT_S)
            except Exception:
                log.exception("job %s: could not reach its actor; poked again later", job_id)
