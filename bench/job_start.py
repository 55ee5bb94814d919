"""Job start benchmark: how long a job waits before its work reaches a renderer, and what
rendering each scene's clip as soon as its image lands (autoApprove) saves.

One run prints, side by side:

(a) job start on the pooled job hosts (the default): POST /jobs → the first image request
    reaching the image renderer, and POST approve → the first clip request reaching the clip
    renderer. "Reaching" is the renderer's own clock (``recent_arrivals_by_seed``: when each
    request first arrived at the replica), against this process's clock before it sent the
    POST (same machine, same clock). Jobs of 2 scenes, ``--gap`` seconds apart.
(b) storyboard farm ÷ direct: ``storyboard.py``'s farm path (8 scenes, POST → storyboard_ready,
    1 image replica) against the same images rendered in this process with 1 torch thread.
(c) pipelined ÷ barrier for autoApprove jobs: POST → completed with clips starting per scene,
    and with ``renderfarm_auto_approve_barrier`` (a benchmark-only setting: every image, then
    every clip, as before).

    .venv/bin/python bench/job_start.py [--jobs 8] [--repeats 3] [--scenes 8] [--auto-scenes 4]

Self-contained like the other benchmarks (private 2-CPU Ray, temporary RENDERFARM_HOME).
Timings only, never assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bench
from storyboard import direct_path, farm_path


# Images and clips only: the voice-over and music renderers are not part of this measurement.
NO_SOUND = {"voiceOver": False, "music": "none"}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _seeds(settings, job_id: str) -> list[int]:
    from actors.steps import scene_seed

    job, scenes = bench.job_scenes(settings, job_id)
    return [scene_seed(job["seed"], scene["id"], scene["version"]) for scene in scenes]


def _first_arrival(deployment: str, seeds: list[int]) -> float:
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=bench.APP_NAME)
    arrivals = handle.recent_arrivals_by_seed.remote().result(timeout_s=30)
    return min(arrivals[seed] for seed in seeds if seed in arrivals)


def _wait_status(http, job_id: str, status: str, poll_s: float = 0.05,
                 timeout_s: float = 170.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/jobs/{job_id}").json()["data"]
        if job["status"] == status:
            return job
        if job["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        time.sleep(poll_s)
    raise RuntimeError(f"job {job_id} not {status} after {timeout_s:.0f} s")


def job_starts(settings, port: int, *, jobs: int, gap_s: float, renderer_cpus: float,
               ) -> tuple[list[float], list[float]]:
    """(POST → first image request, approve → first clip request) per job, seconds."""
    bench.deploy(settings, port, renderer_cpus=renderer_cpus)
    posts, approves = [], []
    with bench.api_client(settings, f"http://127.0.0.1:{port}") as http:
        body = bench.job_body(bench.create_client(http), 2, **NO_SOUND)
        time.sleep(gap_s * 2)  # the replica starts its warm hosts after it starts
        for index in range(jobs + 1):  # the first is an untimed warm-up
            sent = time.time()
            response = http.post("/jobs", json=body)
            response.raise_for_status()
            job_id = response.json()["data"]["id"]
            _wait_status(http, job_id, "storyboard_ready")
            first_image = _first_arrival("ImageRenderer", _seeds(settings, job_id)) - sent
            time.sleep(gap_s)
            approved = time.time()
            http.post(f"/jobs/{job_id}/actions", json={"action": "approve"}).raise_for_status()
            _wait_status(http, job_id, "completed")
            first_clip = _first_arrival("ClipRenderer", _seeds(settings, job_id)) - approved
            if index:
                posts.append(first_image)
                approves.append(first_clip)
            time.sleep(gap_s)
    bench.undeploy()
    return posts, approves


def auto_approve_jobs(settings, port: int, *, scenes: int, repeats: int,
                      renderer_cpus: float) -> list[float]:
    """POST → completed of autoApprove jobs, seconds (after one untimed warm-up job)."""
    bench.deploy(settings, port, renderer_cpus=renderer_cpus)
    with bench.api_client(settings, f"http://127.0.0.1:{port}") as http:
        body = bench.job_body(bench.create_client(http), scenes, autoApprove=True, **NO_SOUND)
        time.sleep(3)
        runs = []
        for index in range(repeats + 1):
            run = bench.run_job(http, body, "completed", poll_s=0.05)
            if index:
                runs.append(run.seconds)
            time.sleep(2)  # a fresh warm host for the next job
    bench.undeploy()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8, help="timed jobs for job start (default 8)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed jobs per storyboard / autoApprove path (default 3)")
    parser.add_argument("--scenes", type=int, default=8, help="storyboard scenes (default 8)")
    parser.add_argument("--auto-scenes", type=int, default=4,
                        help="scenes of the autoApprove jobs (default 4)")
    parser.add_argument("--gap", type=float, default=2.0,
                        help="seconds between job-start jobs (default 2)")
    parser.add_argument("--renderer-cpus", type=float, default=0.5)
    args = parser.parse_args()
    started = time.perf_counter()

    env = bench.prepare_environment("rf-bench-job-start-")
    settings = bench.make_settings(env)
    bench.print_machine(env)

    from models.pipelines import load_image_model
    from models.presets import get_preset

    model = load_image_model(get_preset("tiny"), env.models_dir)
    bench.quiet_libraries()
    barrier = settings.model_copy(update={"renderfarm_auto_approve_barrier": True})
    with bench.ray_cluster(env) as port:
        print(f"[job start, pooled hosts] {args.jobs} jobs ...", flush=True)
        warm_post, warm_approve = job_starts(settings, port, jobs=args.jobs, gap_s=args.gap,
                                             renderer_cpus=args.renderer_cpus)
        print(f"[storyboard, farm] {args.repeats} jobs of {args.scenes} scenes ...", flush=True)
        story = farm_path(settings, port, replicas=1, scenes=args.scenes, repeats=args.repeats,
                          renderer_cpus=args.renderer_cpus, poll_s=0.02)
        direct = direct_path(model, bench.rendered_work(settings, story.runs[0].job_id),
                             repeats=args.repeats, threads=1)
        print(f"[autoApprove, pipelined] {args.repeats} jobs of {args.auto_scenes} scenes ...",
              flush=True)
        pipelined = auto_approve_jobs(settings, port, scenes=args.auto_scenes,
                                      repeats=args.repeats, renderer_cpus=args.renderer_cpus)
        print(f"[autoApprove, barrier] {args.repeats} jobs ...", flush=True)
        barriered = auto_approve_jobs(barrier, port, scenes=args.auto_scenes,
                                      repeats=args.repeats, renderer_cpus=args.renderer_cpus)

    med = statistics.median
    print()
    print(f"Job start, jobs of 2 scenes, {args.gap:.0f} s apart; seconds (median / p95 of "
          f"{args.jobs})")
    bench.print_table(["path", "POST -> 1st image request", "approve -> 1st clip request"], [
        ["pooled job hosts (default)", f"{med(warm_post):.3f} / {_p95(warm_post):.3f}",
         f"{med(warm_approve):.3f} / {_p95(warm_approve):.3f}"],
    ])
    farm_s, direct_s = med(story.seconds), med(direct)
    print()
    bench.print_table(["ratio", "value", "seconds"], [
        [f"storyboard farm / direct ({args.scenes} scenes, 1 thread)",
         f"{farm_s / direct_s:.2f}", f"{farm_s:.3f} / {direct_s:.3f}"],
        [f"autoApprove pipelined / barrier ({args.auto_scenes} scenes, POST -> completed)",
         f"{med(pipelined) / med(barriered):.2f}",
         f"{med(pipelined):.3f} / {med(barriered):.3f}"],
    ])
    print(f"runs: pipelined {bench.fmt_runs(pipelined)}, barrier {bench.fmt_runs(barriered)}, "
          f"storyboard farm {bench.fmt_runs(story.seconds)}")
    print(f"load average after: {bench.load_average()}; whole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
