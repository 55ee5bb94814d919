"""Shared plumbing of the benchmarks: a private temporary home, a local Ray with Serve on a free
loopback port, deploying the farm, talking to it over HTTP, and reading its ledger.

Nothing here is imported by the service; only ``bench/*.py`` use it. Import order matters:
``prepare_environment`` must run before anything imports ``serve_app`` (whose import builds an
application from ``get_settings()``, which reads ``RENDERFARM_HOME`` once).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(PROJECT_ROOT))

TERMINAL = {"completed", "failed", "cancelled"}
APP_NAME = "bench"
# How often run_job samples a CpuMeter while polling.
SAMPLE_EVERY_S = float(os.environ.get("RENDERFARM_BENCH_CPU_SAMPLE_S", "0.2"))


# ---- environment ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchEnv:
    root: Path
    home: Path
    models_dir: Path
    env_vars: dict[str, str]


def prepare_environment(prefix: str) -> BenchEnv:
    """A fresh temporary RENDERFARM_HOME (SQLite + local objects), CPU rendering, tiny preset.

    The same variables go to every Ray worker, so the replicas' import of ``serve_app`` (which
    builds an app from the environment) touches this temporary home, not the developer's."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    home, models_dir = root / "home", root / "models"
    env_vars = {
        "RENDERFARM_HOME": str(home),
        "RENDERFARM_MODELS_DIR": str(models_dir),
        "RENDERFARM_RENDER_GPUS": "0",
        "RENDERFARM_DEFAULT_PRESET": "tiny",
    }
    for name in ("DATABASE_URL", "S3_BUCKET", "S3_ENDPOINT_URL", "AI_API_KEY", "AUTH_JWKS_URL",
                 "RENDERFARM_PRESETS_PATH", "RENDERFARM_RENDER_CPUS"):
        os.environ.pop(name, None)
    os.environ.update(env_vars)
    return BenchEnv(root=root, home=home, models_dir=models_dir, env_vars=env_vars)


# The per-user limit defaults to 600 requests a minute (10/s); polling every 20 ms is 25-50
# requests a second, so the benchmarks lift it (the limiter itself still runs on every request).
BENCH_RATE_LIMIT_PER_MINUTE = 1_000_000


def make_settings(env: BenchEnv, **overrides):
    from coordinator.settings import Settings

    return Settings(renderfarm_home=env.home, renderfarm_models_dir=env.models_dir,
                    rate_limit_per_minute=BENCH_RATE_LIMIT_PER_MINUTE, **overrides)


@contextmanager
def postgres(env: BenchEnv) -> Iterator[str]:
    """A real PostgreSQL server for the run (the ``pgserver`` wheel, data in the benchmark's
    temporary directory); yields its URL. A farm of many GPUs spans nodes, which needs
    PostgreSQL (SQLite is one file on one machine), so the scaling benchmarks run on it."""
    import pgserver

    server = pgserver.get_server(env.root / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def print_machine(env: BenchEnv) -> None:
    import torch

    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} intra-op threads in this process), "
          f"load average before the run {load_average()}")
    print(f"temporary RENDERFARM_HOME: {env.home}")


# ---- Ray and Serve --------------------------------------------------------------------------

@contextmanager
def ray_cluster(env: BenchEnv, num_cpus: int = 2) -> Iterator[int]:
    """A private local Ray (never an existing cluster) with Serve's proxy on a free port;
    yields the port. Always shuts Serve and Ray down and removes the temporary directory."""
    import logging

    import ray
    from ray import serve

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
             namespace="renderfarm-bench", log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": env.env_vars})
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            shutil.rmtree(env.root, ignore_errors=True)


def deploy(settings, port: int, *, image_replicas: int = 1, clip_replicas: int = 1,
           renderer_cpus: float = 0.5) -> tuple[str, float]:
    """(Re)deploys the whole farm as one Serve app; returns its URL and the deploy seconds."""
    import httpx
    from ray import serve

    from serve_app import build_app

    import ray

    from actors.placement import make_placement

    started = time.perf_counter()
    # Every renderer replica must fit beside the compositor and the audio renderer, or the app
    # never becomes healthy: with more replicas each gets less than ``renderer_cpus``.
    others = make_placement("local").deployments
    taken = sum(others[name]["ray_actor_options"].get("num_cpus", 0)
                for name in ("Compositor", "AudioRenderer", "Api"))
    fits = (ray.cluster_resources().get("CPU", 2.0) - taken) / (image_replicas + clip_replicas)
    cpus = {"ray_actor_options": {"num_cpus": min(renderer_cpus, int(fits * 100) / 100)}}
    app = build_app(settings, ImageRenderer={"num_replicas": image_replicas, **cpus},
                    ClipRenderer={"num_replicas": clip_replicas, **cpus})
    serve.run(app, name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the farm did not become healthy within 120 s")
        time.sleep(0.1)
    return url, time.perf_counter() - started


def workers_started() -> int:
    """Worker processes this Ray has started so far (each writes one core-worker log)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    return len(list(logs.glob("python-core-worker-*.log")))


def undeploy() -> None:
    from ray import serve

    serve.delete(APP_NAME)


# ---- HTTP -----------------------------------------------------------------------------------

def api_client(settings, url: str, user: str = "bench-user"):
    import httpx

    from coordinator.auth import issue_local_token

    return httpx.Client(base_url=url + "/api/v3", timeout=60,
                        headers={"Authorization": f"Bearer {issue_local_token(settings, user)}"})


def create_client(http) -> str:
    response = http.post("/clients", json={
        "name": "Acme Drinks", "description": "Sparkling water",
        "brandGuidelines": {"colors": ["#0055ff", "#ffffff"], "tone": "playful"}})
    response.raise_for_status()
    return response.json()["data"]["id"]


def job_body(client_id: str, scenes: int, **advanced: Any) -> dict:
    return {
        "context": {"clientId": client_id},
        "adBasics": {"product": "Lime Fizz sparkling water", "targetAudience": "young runners",
                     "keyMessage": "Zero sugar, all zing", "callToAction": "Grab a can today"},
        "creative": {"direction": {"style": "bright summer photography"}},
        "advanced": {"sceneCount": scenes, "durationSeconds": scenes * 1 + 3,
                     "aspectRatio": "16:9", "preset": "tiny", **advanced},
    }


@dataclass
class JobRun:
    job_id: str
    seconds: float                 # POST /jobs -> the wanted status seen by the poller
    post_seconds: float            # how long POST /jobs itself took
    polls: int
    # (seconds since the POST started, status, progress message), first time each was seen
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    job: dict = field(default_factory=dict)
    get_seconds: list[float] = field(default_factory=list)  # each GET /jobs/{id} round trip
    new_workers: int = 0  # Ray worker processes started between the POST and the end

    def first_seen(self, predicate) -> float | None:
        for at, status, message in self.timeline:
            if predicate(status, message):
                return at
        return None


class CpuMeter:
    """CPU seconds per part of the farm over a window, read from /proc through psutil.

    Ray names its worker processes after what they run (``ray::ServeReplica:bench:Api``,
    ``ray::JobActor``, ``ray::ServeReplica:bench:Compositor``, ``ray::IDLE``), so a process's
    CPU time is booked to the part it was last seen running (a worker that ran a job actor stays
    booked to it when it goes idle). Short-lived processes (each job's actor)
    are caught by sampling during the job; what exits between two samples shows up only in
    the machine's total, as "not attributed"."""

    # Matched, in order, against a Ray process's title (Ray renames workers after what they run).
    PARTS = (("ServeReplica:bench:Api", "API replica"),
             ("ImageRenderer", "image renderer replicas"),
             ("ClipRenderer", "clip renderer replica"),
             ("ProxyActor", "Serve HTTP proxy"),
             ("ServeController", "Serve controller"),
             ("JobActor", "job actor"),
             ("Compositor", "compositor replica"),
             ("Agent", "Ray core (raylet, GCS, agents)"))
    WORKER = "other Ray workers (idle, starting)"
    GENERIC = (WORKER,)
    CORE = "Ray core (raylet, GCS, agents)"
    OUTSIDE = "outside this benchmark (other processes on the machine)"

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._me = os.getpid()
        self._baseline: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._machine_start = 0.0
        self._wall_start = 0.0
        self.samples = 0

    def _machine_busy(self) -> float:
        times = self._psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _part(self, proc) -> str | None:
        if proc.pid == self._me:
            return "driver (this script: HTTP client, poller)"
        try:
            argv = proc.cmdline()
        except self._psutil.Error:
            return None
        title = argv[0] if argv else ""
        if title.startswith("ray::"):
            return next((part for needle, part in self.PARTS if needle in title), self.WORKER)
        if any("default_worker.py" in arg for arg in argv[1:3]):
            return self.WORKER  # a worker process still starting
        if "ffmpeg" in title:
            return "ffmpeg processes (clip encodes, compositing)"
        return self.CORE

    def sample(self, first: bool = False) -> None:
        """Reads the CPU time of every process. This process and everything it started (the
        local Ray: its children and grandchildren) are booked by part; anything else on the
        machine (e.g. another Ray cluster) is booked as outside this benchmark."""
        self.samples += 1
        try:
            me = self._psutil.Process(self._me)
            ours = {proc.pid: proc for proc in [me, *me.children(recursive=True)]}
        except self._psutil.Error:
            return
        for proc in self._psutil.process_iter():
            part = self._part(ours[proc.pid]) if proc.pid in ours else self.OUTSIDE
            if part is None:
                continue
            try:
                cpu = sum(proc.cpu_times()[:2])
            except self._psutil.Error:
                continue
            if first:
                self._baseline[proc.pid] = cpu
            known = self._last.get(proc.pid)
            if part in self.GENERIC and known and known[0] not in self.GENERIC:
                part = known[0]  # a job actor's or task's worker keeps its name once idle
            self._last[proc.pid] = (part, cpu)

    def start(self) -> None:
        self._wall_start = time.perf_counter()
        self._machine_start = self._machine_busy()
        self.sample(first=True)

    def stop(self) -> dict[str, float]:
        """CPU seconds per part since ``start`` (plus "machine total" and "wall")."""
        self.sample()
        totals: dict[str, float] = {}
        for pid, (part, cpu) in self._last.items():
            totals[part] = totals.get(part, 0.0) + cpu - self._baseline.get(pid, 0.0)
        totals["machine total"] = self._machine_busy() - self._machine_start
        totals["wall"] = time.perf_counter() - self._wall_start
        return totals


def cpu_meter() -> CpuMeter | None:
    try:
        return CpuMeter()
    except ImportError:  # psutil comes with Ray's dependencies, but do without it if absent
        return None


def print_cpu(totals: dict[str, float], jobs: int) -> None:
    machine, wall = totals.pop("machine total"), totals.pop("wall")
    attributed = sum(totals.values())
    outside = totals.pop(CpuMeter.OUTSIDE, 0.0)
    rows = [[part, f"{seconds / jobs:.3f}", f"{seconds / machine:.0%}"]
            for part, seconds in sorted(totals.items(), key=lambda item: -item[1])]
    rows.append([CpuMeter.OUTSIDE, f"{outside / jobs:.3f}", f"{outside / machine:.0%}"])
    rows.append(["not attributed (processes that exited between samples, kernel)",
                 f"{(machine - attributed) / jobs:.3f}", f"{(machine - attributed) / machine:.0%}"])
    rows.append(["machine total", f"{machine / jobs:.3f}",
                 f"{machine / wall:.2f} of {os.cpu_count()} cores busy"])
    print_table(["part", "CPU s per job", "share"], rows)


def run_job(http, body: dict, until: str, poll_s: float = 0.02, timeout_s: float = 170.0,
            meter: CpuMeter | None = None) -> JobRun:
    """POST /jobs, then GET /jobs/{id} every ``poll_s`` until the job reaches ``until``
    (sampling ``meter`` every ~0.2 s on the way)."""
    workers_before = workers_started()
    started = time.perf_counter()
    response = http.post("/jobs", json=body)
    post_seconds = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text}")
    job_id = response.json()["data"]["id"]
    timeline: list[tuple[float, str, str]] = []
    seen: set[tuple[str, str]] = set()
    polls = 0
    get_seconds: list[float] = []
    while True:
        asked = time.perf_counter()
        response = http.get(f"/jobs/{job_id}")
        get_seconds.append(time.perf_counter() - asked)
        if response.status_code != 200:
            raise RuntimeError(f"GET /jobs/{job_id} answered {response.status_code}: "
                               f"{response.text}")
        job = response.json()["data"]
        now = time.perf_counter() - started
        polls += 1
        key = (job["status"], (job.get("progress") or {}).get("message", ""))
        if key not in seen:
            seen.add(key)
            timeline.append((now, *key))
        if meter is not None and polls % max(1, round(SAMPLE_EVERY_S / poll_s)) == 0:
            meter.sample()
        if job["status"] == until:
            return JobRun(job_id, now, post_seconds, polls, timeline, job, get_seconds,
                          workers_started() - workers_before)
        if job["status"] in TERMINAL:
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')} "
                               f"({job.get('errorCode')})")
        if now > timeout_s:
            raise RuntimeError(f"job {job_id} still {job['status']} after {timeout_s:.0f} s")
        time.sleep(poll_s)


# ---- the database, read directly ------------------------------------------------------------

def ledger(settings, job_id: str) -> list[dict]:
    """The job's ``render_usage`` rows (kind, seconds, cost, created_at), oldest first."""
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.sync_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT kind, scene_id, seconds, cost, created_at FROM render_usage "
                "WHERE job_id = :job ORDER BY id"), {"job": job_id})
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def when(value: Any) -> datetime:
    """A timestamp column as a datetime (SQLite hands back text through raw SQL)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def job_scenes(settings, job_id: str) -> tuple[dict, list[dict]]:
    """The job row (seed, brief, created_at) and its scenes in order, from the database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.sync_database_url)
    try:
        with engine.connect() as conn:
            job = dict(conn.execute(text(
                "SELECT id, seed, brief, advanced, aspect_ratio, preset, created_at, updated_at "
                "FROM jobs "
                "WHERE id = :job"), {"job": job_id}).one()._mapping)
            scenes = [dict(row._mapping) for row in conn.execute(text(
                "SELECT id, scene_idx, image_prompt, script, transition, duration_s, version, "
                "image_key, clip_key "
                "FROM scenes WHERE job_id = :job ORDER BY scene_idx"), {"job": job_id})]
            return job, scenes
    finally:
        engine.dispose()


def rendered_work(settings, job_id: str) -> dict:
    """What the farm rendered for a job, rebuilt the way the job actor builds its requests
    (``actors.job_actor``: template, style, negative prompt with the brand's restrictions,
    per-scene seeds), so the direct path renders exactly the same thing."""
    import json
    from types import SimpleNamespace

    from actors import steps
    from actors.job_actor import _call_to_action
    from models.presets import apply_prompt_template, get_preset

    job, scenes = job_scenes(settings, job_id)
    brief = job["brief"] if isinstance(job["brief"], dict) else json.loads(job["brief"])
    advanced = job["advanced"] if isinstance(job["advanced"], dict) else json.loads(
        job["advanced"] or "{}")
    row = SimpleNamespace(brief=brief, advanced=advanced, aspect_ratio=job["aspect_ratio"])
    planning = steps.planning_brief(row)
    preset = get_preset(job["preset"])
    ratio = job["aspect_ratio"]
    return {
        "preset": preset,
        "prompts": [apply_prompt_template(preset, s["image_prompt"], planning.style)
                    for s in scenes],
        "negative_prompt": steps.negative_prompt(preset, planning),
        "raw_prompts": [s["image_prompt"] for s in scenes],
        "seeds": [steps.scene_seed(job["seed"], s["id"], s["version"]) for s in scenes],
        "scenes": scenes,
        "image_size": preset.image_size[ratio],
        "clip_size": preset.clip_size[ratio],
        "output_size": preset.output_size[ratio],
        "cta": _call_to_action(SimpleNamespace(brief=brief)),
    }


def same_pixels(settings, work: dict, image) -> int:
    """Largest per-channel difference (0..255) between the farm's stored image of scene 0 and
    ``image``, the direct path's render of it: shows both paths did the same work (batched
    kernels may round a level or so apart)."""
    import io

    import numpy as np
    from PIL import Image

    from coordinator.storage import make_object_store

    stored = make_object_store(settings).get_bytes(work["scenes"][0]["image_key"])
    farm = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"), dtype=np.int16)
    return int(np.abs(farm - np.asarray(image.convert("RGB"), dtype=np.int16)).max())


def time_progress_writes(settings, job_id: str, count: int = 20) -> list[float]:
    """Seconds of the job actor's own progress write (``JobStore.set_progress``: one session,
    one UPDATE, one commit), called from here on a job at rest. The actor does this once per
    scene image and once per clip, next to ``record_image`` / ``record_clip`` (one more
    transaction each)."""
    import asyncio

    from actors.job_store import JobStore
    from coordinator.progress import progress

    async def measure() -> list[float]:
        store = JobStore(settings, job_id)
        body = progress("storyboard_ready", 100, "Storyboard ready for review")
        times = []
        try:
            for _ in range(count):
                started = time.perf_counter()
                await store.set_progress(body)
                times.append(time.perf_counter() - started)
        finally:
            await store.close()
        return times

    return asyncio.run(measure())


# ---- numbers --------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values)


def time_dry_runs(http, body: dict, count: int = 5) -> list[float]:
    """Round trips of POST /jobs/dry-run: HTTP, auth, validation and a database read, without a
    job row or an actor; the baseline to read POST /jobs against."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        http.post("/jobs/dry-run", json=body).raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def quiet_libraries() -> None:
    """Keeps the per-call prompt-truncation warnings out of the printed table."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


def fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*headers))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        print(line.format(*row))
