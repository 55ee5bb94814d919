"""End-to-end benchmark: one whole job through the farm vs the same work in one process.

One run measures, side by side:

(a) farm: POST /jobs with ``advanced.autoApprove: true`` (N scenes, tiny preset) over HTTP,
    then GET /jobs/{id} every ~20 ms until ``completed``; R timed jobs (default 5) after one untimed
    warm-up job, median reported. Inside: HTTP, the job actor, the offline planner, N images
    (image renderer), N clips (clip renderer: diffusion + H.264 encode), the ``Compositor``
    replica (downloads the clips, ffmpeg, returns the MP4 and thumbnail), uploads, database writes.
(b) direct, in this process, the same work for the same storyboard (the prompts, seeds,
    captions, transitions and durations the farm's first timed job used): render the N images
    one by one, render the N clips (``load_clip_model(...).render``, the preset's clip size),
    encode each with ``encode_frames_to_mp4``, then ``composite_video`` at the preset's output
    size. Models are loaded once beforehand (load time NOT included). Median of R after one
    warm-up pass. Run with 1 torch thread (what a renderer replica with less than 2 CPUs
    gets) and with this process's default.

It prints farm/direct, the phases of each path, and the share of compositing: in the direct
total, and in the farm (the ``composite`` row of ``render_usage``, i.e. ffmpeg's wall time in
the replica, and the database window from the last clip row to the composite row: scheduling,
clip downloads, ffmpeg and the bytes coming back). It also composites the last job's clips from
the driver as a cold Ray task and on the warm ``Compositor`` replica, side by side: what
starting a compositing worker per job cost.

    .venv/bin/python bench/end_to_end.py [--scenes 3] [--repeats 5]

Self-contained: a private local Ray (2 CPUs) and a temporary RENDERFARM_HOME, both removed at
the end. Timings only, never assertions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bench


@dataclass
class FarmJob:
    run: bench.JobRun
    image_s: float       # sum of image render seconds booked in render_usage
    clip_s: float        # sum of clip diffusion seconds booked in render_usage
    composite_s: float   # ffmpeg wall time inside the compositor (render_usage)
    phases: dict[str, float] = field(default_factory=dict)  # polled, seconds after POST
    clip_booked: list[float] = field(default_factory=list)  # each clip's booked seconds
    # database marks, seconds after the job row was created: last image row, last clip row,
    # the composite row (written when the compositor returned), the final job update
    db_marks: dict[str, float] = field(default_factory=dict)


# The polled progress messages that open each farm phase, in order.
_MARKS = [
    ("planned", lambda status, message: "Rendering scene images (0/" in message),
    ("images done", lambda status, message: status == "storyboard_ready"
     or "Auto-approved" in message or "Rendering scene clips" in message),
    ("compositing", lambda status, message: message == "Compositing the clips"),
    ("uploading", lambda status, message: message == "Uploading the video"),
    ("completed", lambda status, message: status == "completed"),
]


def probe_compositing_start(settings, job_id: str, calls: int = 3,
                            idle_s: float = 3.0) -> dict[str, list[tuple[float, float]]]:
    """Composites a finished job's clips from this driver, ``calls`` times each way, ``idle_s``
    apart: as a cold Ray task (a worker that exits after one call, so each call starts and
    imports in a new process: what compositing cost per job as a Ray task) and on the farm's
    warm ``Compositor`` replica. Returns (round trip, composite seconds reported) per call."""
    import ray
    from ray import serve

    from actors.composite_task import ClipPlan, composite
    from actors.job_actor import OUTPUT_FPS

    board = bench.rendered_work(settings, job_id)
    clips = [ClipPlan(clip_key=s["clip_key"], duration_s=s["duration_s"],
                      transition=s["transition"], caption=s["script"]) for s in board["scenes"]]
    width, height = board["output_size"]
    # The CPU the replica holds is free only between its calls: the task takes a sliver.
    cold_task = ray.remote(max_calls=1, num_cpus=0.01)(composite)
    replica = serve.get_deployment_handle("Compositor", app_name=bench.APP_NAME)
    ways = {
        "cold task": lambda: ray.get(cold_task.remote(settings, clips, board["cta"], width=width,
                                                      height=height, fps=OUTPUT_FPS)),
        "warm replica": lambda: replica.composite.remote(
            clips, board["cta"], width=width, height=height, fps=OUTPUT_FPS).result(),
    }
    measured: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
    for _ in range(calls):
        for way, call in ways.items():
            time.sleep(idle_s)
            started = time.perf_counter()
            output = call()
            measured[way].append((time.perf_counter() - started, output.seconds))
    return measured


def farm_path(settings, port: int, *, scenes: int, repeats: int, renderer_cpus: float,
              poll_s: float) -> tuple[list[FarmJob], float, float,
                                   dict[str, list[tuple[float, float]]],
                                   dict[str, float] | None]:
    url, deploy_seconds = bench.deploy(settings, port, image_replicas=1, clip_replicas=1,
                                       renderer_cpus=renderer_cpus)
    with bench.api_client(settings, url) as http:
        client_id = bench.create_client(http)
        body = bench.job_body(client_id, scenes, autoApprove=True)
        warmup = bench.run_job(http, body, "completed", poll_s=poll_s)
        meter = bench.cpu_meter()
        if meter:
            meter.start()
        runs = [bench.run_job(http, body, "completed", poll_s=poll_s, meter=meter)
                for _ in range(repeats)]
        cpu = meter.stop() if meter else None
    jobs = []
    for run in runs:
        rows = bench.ledger(settings, run.job_id)
        booked = {kind: sum(r["seconds"] for r in rows if r["kind"] == kind)
                  for kind in ("image", "clip", "composite")}
        phases = {name: run.first_seen(test) for name, test in _MARKS}
        job, _ = bench.job_scenes(settings, run.job_id)
        created = bench.when(job["created_at"])

        last = {kind: max((bench.when(r["created_at"]) - created).total_seconds()
                          for r in rows if r["kind"] == kind)
                for kind in ("image", "clip", "composite")}
        planner = min((bench.when(r["created_at"]) - created).total_seconds()
                      for r in rows if r["kind"] == "planner")
        db_marks = {"planner": planner, "images": last["image"], "clips": last["clip"],
                    "composite": last["composite"],
                    "completed": (bench.when(job["updated_at"]) - created).total_seconds()}
        jobs.append(FarmJob(run, booked["image"], booked["clip"], booked["composite"],
                            {k: v for k, v in phases.items() if v is not None},
                            sorted(r["seconds"] for r in rows if r["kind"] == "clip"), db_marks))
    probe = probe_compositing_start(settings, runs[-1].job_id)
    bench.undeploy()
    return jobs, warmup.seconds, deploy_seconds, probe, cpu


@dataclass
class DirectRun:
    images: float
    clips: float
    encode: float
    composite: float

    @property
    def total(self) -> float:
        return self.images + self.clips + self.encode + self.composite


def direct_once(image_model, clip_model, board: dict, workdir: Path) -> DirectRun:
    from actors.compositor import SceneClip, composite_video, encode_frames_to_mp4
    from actors.job_actor import OUTPUT_FPS

    preset = board["preset"]
    (iw, ih), (cw, ch), (ow, oh) = board["image_size"], board["clip_size"], board["output_size"]
    started = time.perf_counter()
    negative = board["negative_prompt"]
    images = [image_model.render([prompt], [seed], iw, ih, negative)[0]
              for prompt, seed in zip(board["prompts"], board["seeds"])]
    images_done = time.perf_counter()
    clips = [clip_model.render(image, seed, cw, ch, None, prompt)
             for image, seed, prompt in zip(images, board["seeds"], board["raw_prompts"])]
    clips_done = time.perf_counter()
    paths = []
    for index, frames in enumerate(clips):
        path = workdir / f"clip_{index:03d}.mp4"
        encode_frames_to_mp4(frames, preset.clip.fps, path, timeout_s=120)
        paths.append(path)
    encoded = time.perf_counter()
    scene_clips = [SceneClip(clip_path=path, duration_s=s["duration_s"], transition=s["transition"],
                             caption=s["script"]) for path, s in zip(paths, board["scenes"])]
    composite_video(scene_clips, board["cta"], workdir / "video.mp4", workdir / "thumbnail.jpg",
                    width=ow, height=oh, fps=OUTPUT_FPS, timeout_s=300, workdir=workdir)
    done = time.perf_counter()
    return DirectRun(images_done - started, clips_done - images_done, encoded - clips_done,
                     done - encoded)


def direct_path(image_model, clip_model, board: dict, *, repeats: int,
                threads: int) -> list[DirectRun]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        runs = []
        for attempt in range(repeats + 1):  # the first pass warms up and is not counted
            with tempfile.TemporaryDirectory(prefix="rf-bench-direct-") as workdir:
                run = direct_once(image_model, clip_model, board, Path(workdir))
            if attempt:
                runs.append(run)
        return runs
    finally:
        torch.set_num_threads(before)


def _median_run(runs: list[DirectRun]) -> DirectRun:
    return sorted(runs, key=lambda run: run.total)[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=3, help="scenes per job, 1..12 (default 3)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per path (default 5)")
    parser.add_argument("--renderer-cpus", type=float, default=0.5,
                        help="num_cpus of each renderer replica (default 0.5: the image and clip "
                             "replicas plus the compositor replica must fit in 2 CPUs)")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="GET /jobs/{id} interval")
    args = parser.parse_args()
    if not 1 <= args.scenes <= 12 or args.repeats < 1:
        parser.error("--scenes must be 1..12 and --repeats at least 1")
    started = time.perf_counter()

    env = bench.prepare_environment("rf-bench-e2e-")
    settings = bench.make_settings(env)
    bench.print_machine(env)

    import torch

    from models.pipelines import load_clip_model, load_image_model
    from models.presets import get_preset

    default_threads = torch.get_num_threads()
    load_started = time.perf_counter()
    image_model = load_image_model(get_preset("tiny"), env.models_dir)
    clip_model = load_clip_model(get_preset("tiny"), env.models_dir)
    load_seconds = time.perf_counter() - load_started
    bench.quiet_libraries()

    with bench.ray_cluster(env) as port:
        print(f"[farm] {args.repeats} auto-approved jobs of {args.scenes} scenes ...", flush=True)
        jobs, warmup_seconds, deploy_seconds, probe, cpu = farm_path(
            settings, port, scenes=args.scenes, repeats=args.repeats,
            renderer_cpus=args.renderer_cpus, poll_s=args.poll_ms / 1000)
        board = bench.rendered_work(settings, jobs[0].run.job_id)
        print("[direct] the same storyboard in this process ...", flush=True)
        direct_one = direct_path(image_model, clip_model, board, repeats=args.repeats, threads=1)
        direct_default = direct_path(image_model, clip_model, board, repeats=args.repeats,
                                     threads=default_threads)

    n, med = args.scenes, bench.median
    farm_times = [job.run.seconds for job in jobs]
    farm = med(farm_times)
    d1, dd = _median_run(direct_one), _median_run(direct_default)
    ow, oh = board["output_size"]
    print()
    print(f"Whole job, {n} scenes, tiny preset, {ow}x{oh} output, CPU; median of {args.repeats} "
          f"(each run's seconds in brackets)")
    bench.print_table(["path", "seconds", "per scene", "runs"], [
        ["farm (POST -> completed, autoApprove)", f"{farm:.3f}", f"{farm / n:.3f}",
         bench.fmt_runs(farm_times)],
        ["direct, 1 torch thread", f"{d1.total:.3f}", f"{d1.total / n:.3f}",
         bench.fmt_runs([r.total for r in direct_one])],
        [f"direct, {default_threads} torch threads", f"{dd.total:.3f}", f"{dd.total / n:.3f}",
         bench.fmt_runs([r.total for r in direct_default])],
    ])
    print()
    farm_composite = med([job.composite_s for job in jobs])
    # From the last clip row to the composite row: the task's scheduling, clip downloads,
    # ffmpeg, and the bytes coming back (database clock, no polling resolution).
    window = [job.db_marks["composite"] - job.db_marks["clips"] for job in jobs]
    bench.print_table(["ratio / share", "value"], [
        ["farm / direct (1 thread)", f"{farm / d1.total:.2f}x"],
        [f"farm / direct ({default_threads} threads)", f"{farm / dd.total:.2f}x"],
        ["compositing share of direct total (1 thread)", f"{d1.composite / d1.total:.0%}"],
        ["compositing share of farm total (ffmpeg, render_usage)",
         f"{farm_composite / farm:.0%}"],
        ["compositing share of farm total (last clip -> composite row: task, I/O, ffmpeg)",
         f"{med(window) / farm:.0%}"],
    ])
    print()
    print("Direct phases (seconds, the median run):")
    bench.print_table(["threads", "images", "clips (diffusion)", "encode clips", "composite",
                       "total"], [
        [str(t), f"{r.images:.3f}", f"{r.clips:.3f}", f"{r.encode:.3f}", f"{r.composite:.3f}",
         f"{r.total:.3f}"] for t, r in ((1, d1), (default_threads, dd))])
    print()
    print("Farm phases (medians; polled marks in seconds after the POST started, booked seconds "
          "from render_usage):")
    headers = (["POST"] + [name for name, _ in _MARKS]
               + ["image s", "clip s", "composite s", "new workers"])
    values = [f"{med([job.run.post_seconds for job in jobs]):.3f}"]
    for name, _ in _MARKS:
        seen = [job.phases[name] for job in jobs if name in job.phases]
        if not seen:
            values.append("-")
        else:  # a stage shorter than one poll is seen in some jobs only: say in how many
            values.append(f"{med(seen):.3f}" + ("" if len(seen) == len(jobs)
                                                else f" ({len(seen)}/{len(jobs)} jobs)"))
    values += [f"{med([job.image_s for job in jobs]):.3f}", f"{med([job.clip_s for job in jobs]):.3f}",
               f"{farm_composite:.3f}", "/".join(str(job.run.new_workers) for job in jobs)]
    bench.print_table(headers, [values])
    marks = ["planner", "images", "clips", "composite", "completed"]
    print()
    print("Farm, database marks (medians, seconds after the job row was written): storyboard "
          "rows (job actor up, planner done), last image row, last clip row, composite row, "
          "final job update")
    bench.print_table(marks, [[f"{med([job.db_marks[m] for job in jobs]):.3f}" for m in marks]])
    print()
    clip_rows = jobs[len(jobs) // 2].clip_booked
    per_clip_direct = d1.clips / n
    print(f"Clip seconds booked per scene in one farm job (sorted): "
          f"{', '.join(f'{v:.3f}' for v in clip_rows)}; direct diffusion per clip (1 thread): "
          f"{per_clip_direct:.3f}")
    print("Compositing start: cold task vs warm replica, the last job's clips composited from "
          "this driver, 3 s apart, alternating (medians of the calls; overhead = round trip - "
          "compositing seconds reported)")
    bench.print_table(["way", "calls", "round trip", "compositing", "overhead"], [
        [way, str(len(calls)), f"{med([t for t, _ in calls]):.3f}",
         f"{med([c for _, c in calls]):.3f}", f"{med([t - c for t, c in calls]):.3f}"]
        for way, calls in probe.items()])
    print()
    print("  planned: 'Rendering scene images (0/N)' first seen; images done: auto-approval seen; "
          "compositing / uploading: those progress messages first seen")
    print("  ('-': never seen, i.e. shorter than one poll).")
    print("  image s / clip s: the renderers' own pipeline seconds (clip excludes its H.264 "
          "encode); composite s: composite_video's wall time inside the task.")
    print("  new workers: Ray worker processes started during each timed job (core-worker logs).")
    print(f"  warm-up job (untimed, first after deploy) {warmup_seconds:.2f} s; deploy "
          f"{deploy_seconds:.1f} s; direct model load {load_seconds:.2f} s excluded; "
          f"polls every {args.poll_ms:g} ms; renderer replicas num_cpus={args.renderer_cpus:g}.")
    if cpu:
        print()
        print(f"CPU per job by part, farm (over the {args.repeats} timed jobs, polling included):")
        bench.print_cpu(dict(cpu), args.repeats)
    print(f"total benchmark wall time {time.perf_counter() - started:.0f} s; load average now "
          f"{bench.load_average()}")


if __name__ == "__main__":
    main()
