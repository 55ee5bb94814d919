"""Scaling benchmarks on the simulated GPU (``bench/simulated_gpu.py``), printed side by side
with their ideals in one run:

- scaling: J jobs of S scenes (``autoApprove``) on 1, 4 and 16 simulated GPUs, all submitted
  at once; makespan (first POST to the last job's ``completed`` row) vs the ideal, the
  device-seconds the pool was held ÷ the devices; efficiency = ideal ÷ makespan. Each size
  gets its own time factor so that its ideal is ``--ideal-s`` (default 60 s): the device
  work is compressed by a different factor per size, the farm's own overhead is not, so the
  sizes compare at equal wall time. The same run then gives, per size, the overhead
  (makespan − ideal) and what the efficiency would be at the cards' real speed with that
  overhead unchanged.
- batching across jobs: B concurrent storyboard jobs on one simulated card, images per second
  with the placement's batching and with batches of 1; the ideal is the cost model's
  ``batch_speedup``.
- pipelining: one ``autoApprove`` job at a time, POST → completed, clips starting as each
  image lands vs every image first (``renderfarm_auto_approve_barrier``), at the cards' real
  speed with a cost model where images are a real share of the job (``sd15-ltx``).
- head cost: H small whole jobs (``--head-jobs``, 500 by default) in waves; CPU-seconds per job
  of the head's processes (API replica, Serve proxy and controller, job actors, Ray core) and
  their resident memory after warm-up vs at the end.

    .venv/bin/python bench/scaling.py [--only scaling,batching,pipelining,head] [--jobs 32] [--scenes 8]

Self-contained like the other benchmarks: a private local Ray (2 CPUs) and a temporary
RENDERFARM_HOME, both removed at the end. Timings only, never assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bench

# Jobs per user: many, so one benchmark user can have every job in flight at once.
BENCH_ACTIVE_JOBS = 10_000
# The cost model covers images and clips: the jobs have no voice-over and no music (the audio
# renderer is a real CPU model here, and would compete with the farm for the 2 cores).
NO_SOUND = {"voiceOver": False, "music": "none"}
HEAD_PARTS = ("API replica", "Serve HTTP proxy", "Serve controller", "job actor",
              "Ray core (raylet, GCS, agents)", "other Ray workers (idle, starting)")


def bench_settings(env, database_url: str | None = None):
    extra = {"database_url": database_url} if database_url else {}
    return bench.make_settings(env, max_active_jobs_per_user=BENCH_ACTIVE_JOBS, **extra)


@contextmanager
def farm_database(env, kind: str) -> Iterator[str | None]:
    """The URL of the run's database: PostgreSQL (a many-GPU farm spans nodes, which needs
    it), or None for the default SQLite file."""
    if kind == "sqlite":
        yield None
        return
    with bench.postgres(env) as url:
        yield url


def deploy_simulated(settings, port: int, *, devices: int, time_factor: float,
                     profile: str, image_replicas: int, clip_replicas: int,
                     image_config: dict | None = None, first_clip_device: int = 0):
    """Starts the device pool and deploys the farm with the simulated renderers (no CPU each);
    returns (url, pool)."""
    import httpx
    import ray
    from ray import serve

    import simulated_gpu as sim
    from serve_app import build_app

    pool = sim.start_pool(devices, profile, time_factor, first_clip_device)
    ray.get(pool.usage.remote())  # up before any replica looks for it
    free = {"ray_actor_options": {"num_cpus": 0}}
    image = {"num_replicas": image_replicas, **free}
    if image_config is not None:
        image["user_config"] = image_config
    app = build_app(settings, renderers=sim.simulated_renderers(), ImageRenderer=image,
                    ClipRenderer={"num_replicas": clip_replicas, **free})
    started = time.perf_counter()
    serve.run(app, name=bench.APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while httpx.get(url + "/health", timeout=10).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the farm did not become healthy within 300 s")
        time.sleep(0.2)
    print(f"  deployed {devices} simulated GPUs ({image_replicas} image, {clip_replicas} clip "
          f"replicas) in {time.perf_counter() - started:.0f} s", flush=True)
    return url, pool


def teardown(pool) -> None:
    import ray

    bench.undeploy()
    ray.kill(pool)


def submit(http, body: dict, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = http.post("/jobs", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text}")
        ids.append(response.json()["data"]["id"])
    return ids


def wait_for(settings, ids: list[str], status: str, timeout_s: float,
             meter: bench.CpuMeter | None = None) -> dict[str, tuple]:
    """Reads the jobs' rows (not the API, which would load the head) every 0.25 s until all
    reach ``status``; returns id -> (status, created_at, updated_at)."""
    from sqlalchemy import bindparam, create_engine, text

    engine = create_engine(settings.sync_database_url)
    query = text("SELECT id, status, created_at, updated_at FROM jobs WHERE id IN :ids"
                 ).bindparams(bindparam("ids", expanding=True))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                rows = {r.id: (r.status, bench.when(r.created_at), bench.when(r.updated_at))
                        for r in conn.execute(query, {"ids": ids})}
            bad = {i: r[0] for i, r in rows.items() if r[0] in bench.TERMINAL and r[0] != status}
            if bad:
                raise RuntimeError(f"jobs ended otherwise: {bad}")
            if len(rows) == len(ids) and all(r[0] == status for r in rows.values()):
                return rows
            if time.monotonic() > deadline:
                waiting = sum(1 for r in rows.values() if r[0] != status)
                raise RuntimeError(f"{waiting} jobs not {status} after {timeout_s:.0f} s")
            if meter is not None:
                meter.sample()
            time.sleep(0.25)
    finally:
        engine.dispose()


def epoch(moment) -> float:
    """A database timestamp (UTC; naive from SQLite) as epoch seconds."""
    from datetime import timezone

    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def span_s(rows: dict[str, tuple]) -> float:
    """First job row created to the last row's final update (the database's clock)."""
    first = min(r[1] for r in rows.values())
    last = max(r[2] for r in rows.values())
    return (last - first).total_seconds()


def expected_device_s(profile, jobs: int, scenes: int, batch: int = 4) -> float:
    """Real-GPU seconds of the workload if the image renderer forms full batches."""
    images = jobs * scenes
    batches = -(-images // batch)
    return batches * profile.image.per_call_s + images * profile.image.per_item_s \
        + images * profile.clip.seconds(1)


# ---- scaling ------------------------------------------------------------------------------

def run_scaling(settings, port: int, args) -> list[list[str]]:
    import ray

    import simulated_gpu as sim

    profile = sim.PROFILES[args.profile]
    work = expected_device_s(profile, args.jobs, args.scenes)
    rows = []
    for devices in args.devices:
        factor = args.ideal_s * devices / work
        url, pool = deploy_simulated(settings, port, devices=devices, time_factor=factor,
                                     profile=args.profile,
                                     image_replicas=max(1, devices // 4), clip_replicas=devices)
        with bench.api_client(settings, url) as http:
            client_id = bench.create_client(http)
            body = bench.job_body(client_id, args.scenes, autoApprove=True, **NO_SOUND)
            # Untimed, as many 1-scene jobs as the timed run has, at once: replicas' first
            # calls, the compositor, the clip cache, and a job host per job in the pool (the
            # steady state of a busy farm; a host process start is not device work).
            wait_for(settings, submit(http, bench.job_body(client_id, 1, autoApprove=True,
                                                           **NO_SOUND), args.jobs),
                     "completed", 600)
            ray.get(pool.reset.remote())
            started = time.perf_counter()
            ids = submit(http, body, args.jobs)
            posted = time.perf_counter() - started
            done = wait_for(settings, ids, "completed", 60 * args.ideal_s)
        usage = ray.get(pool.usage.remote())
        teardown(pool)
        makespan = span_s(done)
        # Where the overhead is: before the first device hold, after the last.
        first_row = min(epoch(r[1]) for r in done.values())
        last_row = max(epoch(r[2]) for r in done.values())
        lead, tail = usage["first_start"] - first_row, last_row - usage["last_end"]
        busy = sum(usage["busy_s"].values())
        ideal = busy / devices
        overhead = makespan - ideal
        real_ideal = ideal / factor
        print(f"  {devices} GPUs: time factor {factor:.4f}, makespan {makespan:.1f} s, "
              f"ideal {ideal:.1f} s, POSTs took {posted:.1f} s; first job row -> first device "
              f"hold {lead:.1f} s, last device release -> last job completed {tail:.1f} s; "
              f"batches {usage['image_batches']}", flush=True)
        rows.append([str(devices), f"{factor:.4f}", f"{makespan:.1f}", f"{ideal:.1f}",
                     f"{ideal / makespan:.2f}", f"{overhead:.1f}",
                     f"{real_ideal:.0f}", f"{real_ideal / (real_ideal + overhead):.3f}"])
    return rows


# ---- batching -----------------------------------------------------------------------------

def run_batching(settings, port: int, args) -> tuple[list[list[str]], float]:
    import ray

    import simulated_gpu as sim

    profile = sim.PROFILES[args.profile]
    results = {}
    for label, config in (("batched (placement's batch size)", None),
                          ("batches of 1", {"max_batch_size": 1, "batch_wait_timeout_s": 0.0})):
        url, pool = deploy_simulated(settings, port, devices=1, time_factor=args.batch_factor,
                                     profile=args.profile, image_replicas=1, clip_replicas=1,
                                     image_config=config)
        with bench.api_client(settings, url) as http:
            client_id = bench.create_client(http)
            # Untimed: one job per timed job, so each finds a job host in the pool.
            wait_for(settings, submit(http, bench.job_body(client_id, 1, **NO_SOUND),
                                      args.batch_jobs), "storyboard_ready", 600)
            ray.get(pool.reset.remote())
            ids = submit(http, bench.job_body(client_id, args.scenes, **NO_SOUND),
                         args.batch_jobs)
            done = wait_for(settings, ids, "storyboard_ready", 600)
        usage = ray.get(pool.usage.remote())
        teardown(pool)
        images = usage["items"]["image"]
        device_window = usage["last_end"] - usage["first_start"]
        print(f"  {label}: {images} images, storyboards in {span_s(done):.1f} s, "
              f"batches {usage['image_batches']}", flush=True)
        results[label] = (images / span_s(done), images / device_window,
                          usage["image_batches"], usage["busy_s"]["image"] / device_window)
    rows = [[label, f"{jobs_rate:.2f}", f"{device_rate:.2f}", f"{busy:.0%}",
             " ".join(f"{size}x{count}" for size, count in batches.items())]
            for label, (jobs_rate, device_rate, batches, busy) in results.items()]
    (b_jobs, b_dev, *_), (u_jobs, u_dev, *_) = results.values()
    rows.append(["batched ÷ batches of 1", f"{b_jobs / u_jobs:.2f}x", f"{b_dev / u_dev:.2f}x",
                 "", f"ideal {profile.image.batch_speedup(4):.2f}x (full batches of 4)"])
    return rows, profile.image.batch_speedup(4)


# ---- pipelining ---------------------------------------------------------------------------

def run_pipelining(settings, port: int, args) -> list[list[str]]:
    """One autoApprove job at a time, POST → completed, with clips starting as each image lands
    (the default) and with every image first (``renderfarm_auto_approve_barrier``), on
    a card of its own for the image replica and ``--pipe-devices`` cards for clips, at the
    cards' real speed."""
    import statistics

    import ray

    results = {}
    barrier = settings.model_copy(update={"renderfarm_auto_approve_barrier": True})
    for label, variant in (("pipelined (default)", settings), ("barrier", barrier)):
        # The cluster layout: the image replica on a card of its own, a clip replica on each
        # of the others (on shared cards, clips and images wait for each other either way).
        url, pool = deploy_simulated(variant, port, devices=args.pipe_devices + 1,
                                     time_factor=1.0, profile=args.pipe_profile,
                                     image_replicas=1, clip_replicas=args.pipe_devices,
                                     first_clip_device=1)
        with bench.api_client(variant, url) as http:
            client_id = bench.create_client(http)
            body = bench.job_body(client_id, args.scenes, autoApprove=True, **NO_SOUND)
            wait_for(variant, submit(http, bench.job_body(client_id, 1, autoApprove=True,
                                                          **NO_SOUND), 1), "completed", 300)
            ray.get(pool.reset.remote())
            spans = []
            for _ in range(args.pipe_repeats):
                done = wait_for(variant, submit(http, body, 1), "completed", 600)
                spans.append(span_s(done))
        usage = ray.get(pool.usage.remote())
        teardown(pool)
        print(f"  {label}: POST -> completed {bench.fmt_runs(spans)}", flush=True)
        results[label] = (statistics.median(spans), usage["busy_s"]["image"] / len(spans),
                          usage["busy_s"]["clip"] / len(spans))
    rows = [[label, f"{span:.2f}", f"{image:.2f}", f"{clip:.2f}"]
            for label, (span, image, clip) in results.items()]
    (piped, *_), (barriered, *_) = results.values()
    rows.append(["pipelined ÷ barrier", f"{piped / barriered:.2f}", "", ""])
    return rows


# ---- head cost ----------------------------------------------------------------------------

def head_rss_mb() -> dict[str, float]:
    """Resident MB of the head's long-lived processes by part (the job hosts included: they
    wait in the pool between jobs)."""
    import psutil

    meter = bench.CpuMeter()
    totals: dict[str, float] = {}
    me = psutil.Process()
    for proc in me.children(recursive=True):
        part = meter._part(proc)
        if part is None or part not in HEAD_PARTS:
            continue
        try:
            totals[part] = totals.get(part, 0.0) + proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return totals


def run_head(settings, port: int, args) -> tuple[list[list[str]], list[list[str]]]:
    url, pool = deploy_simulated(settings, port, devices=4, time_factor=args.head_factor,
                                 profile=args.profile, image_replicas=1, clip_replicas=4)
    # At least one wave: the job-host pool grows to a wave's size before the measured jobs.
    warmup = max(args.head_wave, args.head_jobs // 10)
    with bench.api_client(settings, url) as http:
        client_id = bench.create_client(http)
        body = bench.job_body(client_id, args.head_scenes, autoApprove=True, **NO_SOUND)

        def waves(count: int, meter=None) -> None:
            for start in range(0, count, args.head_wave):
                ids = submit(http, body, min(args.head_wave, count - start))
                wait_for(settings, ids, "completed", 600, meter)

        waves(warmup)
        print(f"  {warmup} warm-up jobs done", flush=True)
        rss_before = head_rss_mb()
        meter = bench.CpuMeter()
        meter.start()
        waves(args.head_jobs, meter)
        cpu = meter.stop()
        rss_after = head_rss_mb()
    teardown(pool)
    jobs = args.head_jobs
    head = sum(cpu.get(part, 0.0) for part in HEAD_PARTS)
    cpu_rows = [[part, f"{cpu.get(part, 0.0) / jobs:.3f}"] for part in HEAD_PARTS]
    cpu_rows.append(["head total", f"{head / jobs:.3f}"])
    for part in ("compositor replica", "image renderer replicas", "clip renderer replica",
                 "driver (this script: HTTP client, poller)"):
        cpu_rows.append([f"(not head) {part}", f"{cpu.get(part, 0.0) / jobs:.3f}"])
    cpu_rows.append(["machine total", f"{cpu['machine total'] / jobs:.3f} "
                     f"({cpu['machine total'] / cpu['wall']:.2f} of 2 cores busy, "
                     f"{cpu['wall']:.0f} s)"])
    rss_rows = [[part, f"{rss_before.get(part, 0):.0f}", f"{rss_after.get(part, 0):.0f}",
                 f"{(rss_after.get(part, 0) / rss_before[part] - 1):+.1%}"
                 if rss_before.get(part) else "n/a"]
                for part in sorted(set(rss_before) | set(rss_after))]
    total_before, total_after = sum(rss_before.values()), sum(rss_after.values())
    rss_rows.append(["head total", f"{total_before:.0f}", f"{total_after:.0f}",
                     f"{total_after / total_before - 1:+.1%}"])
    return cpu_rows, rss_rows


def show(out: list, title: str, headers: list[str], rows: list[list[str]]) -> None:
    """Prints a section's table as soon as it is measured (and keeps it for the summary)."""
    out.append((title, headers, rows))
    print(f"\n{title}")
    bench.print_table(headers, rows)
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="scaling,batching,pipelining,head")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres",
                        help="the farm's database (default postgres, as on a cluster)")
    parser.add_argument("--profile", default="sdxl-turbo-svd")
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--devices", default="1,4,16")
    parser.add_argument("--ideal-s", type=float, default=60.0,
                        help="ideal makespan each scaling size is compressed to")
    parser.add_argument("--batch-jobs", type=int, default=16)
    parser.add_argument("--batch-factor", type=float, default=2.0,
                        help="time factor of the batching runs (device slower than published)")
    parser.add_argument("--pipe-profile", default="sd15-ltx",
                        help="cost model of the pipelining runs (images a real share of a job)")
    parser.add_argument("--pipe-devices", type=int, default=4, help="clip cards (plus one for images)")
    parser.add_argument("--pipe-repeats", type=int, default=3)
    parser.add_argument("--head-jobs", type=int, default=500)
    parser.add_argument("--head-scenes", type=int, default=2)
    parser.add_argument("--head-wave", type=int, default=10)
    parser.add_argument("--head-factor", type=float, default=0.001)
    args = parser.parse_args()
    args.devices = [int(n) for n in args.devices.split(",")]
    sections = set(args.only.split(","))

    env = bench.prepare_environment("renderfarm-scaling-")
    print(f"machine: 2-core; load average before: {bench.load_average()}", flush=True)
    started = time.perf_counter()
    out: list[tuple[str, list[str], list[list[str]]]] = []
    with farm_database(env, args.database) as database_url, bench.ray_cluster(env) as port:
        settings = bench_settings(env, database_url)
        print(f"database: {settings.database_url.split(':', 1)[0]}", flush=True)
        if "scaling" in sections:
            print(f"scaling: {args.jobs} jobs x {args.scenes} scenes, profile {args.profile}",
                  flush=True)
            show(out, *(f"Scaling: {args.jobs} jobs of {args.scenes} scenes (autoApprove), "
                        f"{args.profile} costs, ideal compressed to {args.ideal_s:.0f} s",
                        ["GPUs", "time factor", "makespan s", "ideal s", "efficiency",
                         "overhead s", "ideal at real speed s", "efficiency at real speed"],
                        run_scaling(settings, port, args)))
        if "batching" in sections:
            print(f"batching: {args.batch_jobs} storyboard jobs x {args.scenes} scenes",
                  flush=True)
            rows, _ = run_batching(settings, port, args)
            show(out, *(f"Batching across jobs: {args.batch_jobs} concurrent storyboards of "
                        f"{args.scenes} scenes on 1 simulated card, time factor "
                        f"{args.batch_factor}",
                        ["image renderer", "images/s (jobs)", "images/s (device)",
                         "device busy", "batches formed (size x count)"], rows))
        if "pipelining" in sections:
            print(f"pipelining: {args.scenes} scenes, {args.pipe_profile}", flush=True)
            show(out, *(f"autoApprove pipelined vs barrier: one job of {args.scenes} scenes at a "
                        f"time, {args.pipe_profile} costs at real speed, {args.pipe_devices + 1} "
                        f"simulated GPUs (1 image replica on one, a clip replica on each of "
                        f"the other {args.pipe_devices}), median of {args.pipe_repeats}",
                        ["path", "POST -> completed s", "image device-s per job",
                         "clip device-s per job"], run_pipelining(settings, port, args)))
        if "head" in sections:
            print(f"head cost: {args.head_jobs} jobs x {args.head_scenes} scenes", flush=True)
            cpu_rows, rss_rows = run_head(settings, port, args)
            show(out, *(f"Head cost: CPU-seconds per job over {args.head_jobs} whole jobs of "
                        f"{args.head_scenes} scenes ({args.head_wave} at a time)",
                        ["part", "CPU s per job"], cpu_rows))
            show(out, *("Head resident memory (MB), after warm-up vs after the jobs",
                        ["part", "after warm-up", "at the end", "growth"], rss_rows))
    print(f"\nload average after: {bench.load_average()}; wall {time.perf_counter() - started:.0f} s")
    for title, headers, rows in out:
        print(f"\n{title}")
        bench.print_table(headers, rows)


if __name__ == "__main__":
    main()
