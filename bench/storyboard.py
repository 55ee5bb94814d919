"""Storyboard benchmark: N scene images through the farm vs the same model called in-process.

One run measures, side by side on the same machine and in the same minute:

(a) farm, 1 image replica: POST /jobs (N scenes, tiny preset) over HTTP, then GET /jobs/{id}
    every ~20 ms until ``storyboard_ready``; R timed jobs (default 5) after one untimed warm-up job,
    median reported. Everything the service does is inside: HTTP and auth, the job row, the job
    actor (a new Ray worker per job), the offline planner, the renderer calls through Serve
    (batched up to 4, 20 ms batch window), PNG encoding, the object store and the database
    writes per scene.
(b) direct: the same image model loaded once in this process (load time NOT included) renders
    the same N prompts with the same seeds one at a time in a loop; median of R loops after one
    warm-up render. Shown with this process's default torch threads and with 1 thread, which is
    what a renderer replica with less than 2 CPUs gets (Ray sets OMP_NUM_THREADS from num_cpus).
    A third direct row renders in batches of 4 with 1 thread: the model work one replica does.
(c) the farm again with 2 image replicas (the app is deleted and deployed again).

It prints the seconds of each path, per-image time, farm/direct and 2-replica/1-replica
ratios, and an attribution of the farm time from the job's own ledger (``render_usage``).

    .venv/bin/python bench/storyboard.py [--scenes 8] [--repeats 5]

Self-contained: a private local Ray (2 CPUs) and a temporary RENDERFARM_HOME, both removed at
the end. Timings only, never assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bench

ASPECT = "16:9"


@dataclass
class FarmResult:
    replicas: int
    deploy_seconds: float
    warmup_seconds: float
    runs: list[bench.JobRun]
    model_seconds: list[float]        # sum of the replicas' render seconds per job (ledger)
    batches: list[list[int]]          # batch sizes per job, inferred from the ledger
    planner_done: list[float]         # POST -> "Rendering scene images (0/N)" first seen
    first_image: list[float]          # job row created -> first image row written (database)
    last_image: list[float]           # job row created -> last image row written (database)
    planner_row: list[float] = field(default_factory=list)  # job row -> planner row (database)
    dry_run: float = 0.0              # median POST /jobs/dry-run round trip
    get_job: float = 0.0              # median GET /jobs/{id} round trip while polling
    db_write: float = 0.0             # median JobStore.set_progress (one commit), seconds
    cpu: dict[str, float] | None = None  # CPU seconds per part over the timed jobs

    @property
    def seconds(self) -> list[float]:
        return [run.seconds for run in self.runs]

    @property
    def render_phase(self) -> list[float]:
        """Planned -> storyboard_ready: the part of a job more replicas can shorten."""
        return [run.seconds - planned for run, planned in zip(self.runs, self.planner_done)]


def _batch_sizes(rows: list[dict]) -> list[int]:
    """The image renderer books ``batch seconds / batch size`` on every image of a batch, so
    equal consecutive values are one batch (an estimate: two batches could tie exactly)."""
    sizes: dict[float, int] = {}
    for row in rows:
        sizes[row["seconds"]] = sizes.get(row["seconds"], 0) + 1
    return sorted(sizes.values(), reverse=True)


def farm_path(settings, port: int, *, replicas: int, scenes: int, repeats: int,
              renderer_cpus: float, poll_s: float) -> FarmResult:
    url, deploy_seconds = bench.deploy(settings, port, image_replicas=replicas,
                                       renderer_cpus=renderer_cpus)
    with bench.api_client(settings, url) as http:
        client_id = bench.create_client(http)
        body = bench.job_body(client_id, scenes)
        warmup = bench.run_job(http, body, "storyboard_ready", poll_s=poll_s)
        meter = bench.cpu_meter()
        if meter:
            meter.start()
        runs = [bench.run_job(http, body, "storyboard_ready", poll_s=poll_s, meter=meter)
                for _ in range(repeats)]
        cpu = meter.stop() if meter else None
        dry_run = bench.median(bench.time_dry_runs(http, body))
    result = FarmResult(replicas, deploy_seconds, warmup.seconds, runs, [], [], [], [], [],
                        dry_run=dry_run, cpu=cpu,
                        get_job=bench.median([s for run in runs for s in run.get_seconds]))
    for run in runs:
        ledger = bench.ledger(settings, run.job_id)
        rows = [row for row in ledger if row["kind"] == "image"]
        job, _ = bench.job_scenes(settings, run.job_id)
        created = bench.when(job["created_at"])
        result.planner_row.append(min((bench.when(row["created_at"]) - created).total_seconds()
                                      for row in ledger if row["kind"] == "planner"))
        stamps = sorted((bench.when(row["created_at"]) - created).total_seconds() for row in rows)
        result.model_seconds.append(sum(row["seconds"] for row in rows))
        result.batches.append(_batch_sizes(rows))
        result.first_image.append(stamps[0])
        result.last_image.append(stamps[-1])
        planned = run.first_seen(lambda status, message: "(0/" in message)
        result.planner_done.append(planned if planned is not None else float("nan"))
    result.db_write = bench.median(bench.time_progress_writes(settings, runs[-1].job_id))
    bench.undeploy()
    return result


def direct_path(model, work: dict, *, repeats: int, threads: int,
                batch: int = 1) -> list[float]:
    """Seconds of R loops over the prompts (``batch`` prompts per call), after a warm-up call."""
    import torch

    prompts, seeds, negative = work["prompts"], work["seeds"], work["negative_prompt"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        width, height = work["image_size"]
        model.render(prompts[:batch], seeds[:batch], width, height, negative)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            for index in range(0, len(prompts), batch):
                model.render(prompts[index:index + batch], seeds[index:index + batch], width,
                             height, negative)
            times.append(time.perf_counter() - started)
        return times
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=8, help="scenes per job, 1..12 (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per path (default 5)")
    parser.add_argument("--renderer-cpus", type=float, default=0.5,
                        help="num_cpus of each renderer replica (default 0.5: 2 image + 1 clip "
                             "replicas must fit in 2 CPUs)")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="GET /jobs/{id} interval")
    args = parser.parse_args()
    if not 1 <= args.scenes <= 12 or args.repeats < 1:
        parser.error("--scenes must be 1..12 and --repeats at least 1")
    started = time.perf_counter()

    env = bench.prepare_environment("rf-bench-storyboard-")
    settings = bench.make_settings(env)
    bench.print_machine(env)

    import torch

    from models.pipelines import load_image_model
    from models.presets import get_preset

    default_threads = torch.get_num_threads()
    # Loading also builds the tiny pipelines under the temporary models dir, once, before the
    # replicas start (they then only load them).
    load_started = time.perf_counter()
    model = load_image_model(get_preset("tiny"), env.models_dir)
    load_seconds = time.perf_counter() - load_started
    bench.quiet_libraries()

    with bench.ray_cluster(env) as port:
        print(f"[farm, 1 image replica] {args.repeats} jobs of {args.scenes} scenes ...", flush=True)
        one = farm_path(settings, port, replicas=1, scenes=args.scenes, repeats=args.repeats,
                        renderer_cpus=args.renderer_cpus, poll_s=args.poll_ms / 1000)
        work = bench.rendered_work(settings, one.runs[0].job_id)
        size = work["image_size"]
        print("[direct] rendering the same prompts in this process ...", flush=True)
        direct_default = direct_path(model, work, repeats=args.repeats, threads=default_threads)
        direct_one = direct_path(model, work, repeats=args.repeats, threads=1)
        direct_batched = direct_path(model, work, repeats=args.repeats, threads=1, batch=4)
        first_four = model.render(work["prompts"][:4], work["seeds"][:4], *size,
                                  work["negative_prompt"])
        pixel_gap = bench.same_pixels(settings, work, first_four[0])
        print(f"[farm, 2 image replicas] {args.repeats} jobs of {args.scenes} scenes ...",
              flush=True)
        two = farm_path(settings, port, replicas=2, scenes=args.scenes, repeats=args.repeats,
                        renderer_cpus=args.renderer_cpus, poll_s=args.poll_ms / 1000)

    n = args.scenes
    med = bench.median
    farm1, farm2 = med(one.seconds), med(two.seconds)
    d_default, d_one, d_batched = med(direct_default), med(direct_one), med(direct_batched)
    print()
    print(f"Storyboard of {n} scenes, tiny preset, {size[0]}x{size[1]} images, CPU; median of "
          f"{args.repeats} (each run's seconds in brackets)")
    bench.print_table(["path", "seconds", "per image", "runs"], [
        ["farm, 1 image replica (POST -> storyboard_ready)", f"{farm1:.3f}", f"{farm1 / n:.3f}",
         bench.fmt_runs(one.seconds)],
        ["farm, 2 image replicas", f"{farm2:.3f}", f"{farm2 / n:.3f}", bench.fmt_runs(two.seconds)],
        [f"direct, one by one, {default_threads} torch threads", f"{d_default:.3f}",
         f"{d_default / n:.3f}", bench.fmt_runs(direct_default)],
        ["direct, one by one, 1 torch thread", f"{d_one:.3f}", f"{d_one / n:.3f}",
         bench.fmt_runs(direct_one)],
        ["direct, batches of 4, 1 torch thread", f"{d_batched:.3f}", f"{d_batched / n:.3f}",
         bench.fmt_runs(direct_batched)],
    ])
    print()
    bench.print_table(["ratio", "value"], [
        [f"farm (1 replica) / direct ({default_threads} threads)", f"{farm1 / d_default:.2f}x"],
        ["farm (1 replica) / direct (1 thread)", f"{farm1 / d_one:.2f}x"],
        ["farm (2 replicas) / direct (1 thread)", f"{farm2 / d_one:.2f}x"],
        ["2 replicas / 1 replica (time)", f"{farm2 / farm1:.2f}"],
        ["speed-up from the 2nd replica", f"{farm1 / farm2:.2f}x"],
        ["speed-up from the 2nd replica, render phase only (planned -> ready)",
         (f"{med(one.render_phase) / med(two.render_phase):.2f}x "
          f"({med(one.render_phase):.3f} s vs {med(two.render_phase):.3f} s)")],
    ])
    print()
    print("Where the farm's time goes (medians over the timed jobs; from the poller and the "
          "job's render_usage rows):")
    rows = []
    for result in (one, two):
        rows.append([
            f"{result.replicas} replica{'s' if result.replicas > 1 else ''}",
            f"{result.get_job:.3f}",
            f"{result.dry_run:.3f}",
            f"{result.db_write * 1000:.1f} ms",
            f"{med([r.post_seconds for r in result.runs]):.3f}",
            f"{med(result.planner_row):.3f}",
            f"{med(result.planner_done):.3f}",
            f"{med(result.first_image):.3f}",
            f"{med(result.last_image):.3f}",
            f"{med(result.seconds):.3f}",
            f"{med(result.model_seconds):.3f}",
            " | ".join("+".join(map(str, b)) for b in result.batches),
            "/".join(str(run.new_workers) for run in result.runs),
            f"{result.warmup_seconds:.2f}",
            f"{result.deploy_seconds:.1f}",
        ])
    bench.print_table(["farm", "GET job", "dry-run", "DB write", "POST", "planner row", "planned", "1st image", "last image", "ready",
                       "model s (sum)", "batches per job", "new workers", "warm-up job", "deploy"], rows)
    print("  GET job: one poll's round trip. dry-run: POST /jobs/dry-run (HTTP, auth, validation, "
          "no row, no actor). POST: POST /jobs (row + job actor created and poked).")
    print("  DB write: one JobStore.set_progress (session, UPDATE, commit) on the job's SQLite "
          "file; the actor makes 2 such transactions per scene image (record_image, set_progress).")
    print("  planner row: database time from the job row to the storyboard's rows (the job "
          "actor started and the offline planner ran).")
    print("  planned: first poll showing 'Rendering scene images (0/N)', seconds after the POST "
          "started.")
    print("  1st/last image: database time of the first/last image row after the job row. "
          "model s: the replicas' own pipeline seconds, summed over the job's images")
    print("  (two replicas render at the same time, so their sum can exceed the wall time). "
          "new workers: Ray worker processes started per job.")
    print("  warm-up job: the untimed first job after deploying (cold worker, first call).")
    print(f"  same work: the farm's image of scene 0 and the direct render of it differ by at "
          f"most {pixel_gap}/255 per channel (same prompt, negative prompt, seed, size).")
    print(f"  direct path: model load {load_seconds:.2f} s excluded; polls every {args.poll_ms:g} "
          f"ms; renderer replicas num_cpus={args.renderer_cpus:g}.")
    for result in (one, two):
        if result.cpu:
            print()
            print(f"CPU per job by part, farm with {result.replicas} image "
                  f"replica{'s' if result.replicas > 1 else ''} (over the {args.repeats} timed "
                  "jobs, polling included):")
            bench.print_cpu(dict(result.cpu), args.repeats)
    print(f"total benchmark wall time {time.perf_counter() - started:.0f} s; load average now "
          f"{bench.load_average()}")


if __name__ == "__main__":
    main()
