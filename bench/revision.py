"""Revision benchmark: what revising one scene of a finished job costs against the whole job.

One run, side by side:

(a) the whole job: POST /jobs with ``advanced.autoApprove: true`` (8 scenes, tiny preset) until
    ``completed``;
(b) a revision of that finished job: edit the line of one scene (PUT), regenerate its picture
    (POST .../regenerate), wait for the new image, approve, until ``completed`` again.

Device-seconds are the renderers' own seconds booked in the render ledger (``render_usage``
rows of every kind but ``planner`` and ``composite``: images, clips, and the voice lines and
music when the job has them; what a GPU would be busy for); the ledger rows written after (a)
completed are the revision's. It prints revision / whole job (goal: at most 0.2),
the renders each made, the compositing seconds, and the wall times.

    .venv/bin/python bench/revision.py [--scenes 8] [--revised 1]

Self-contained: a private local Ray (2 CPUs) and a temporary RENDERFARM_HOME, both removed at
the end. Measurements only, never assertions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bench

# Ledger kinds that are not a renderer's work: the storyboard LLM and ffmpeg on a CPU.
NOT_DEVICE = ("planner", "composite")


def device_seconds(rows: list[dict]) -> float:
    return sum(row["seconds"] for row in rows if row["kind"] not in NOT_DEVICE)


def count(rows: list[dict], kind: str) -> int:
    return sum(1 for row in rows if row["kind"] == kind)


def seconds_of(rows: list[dict], kind: str) -> float:
    return sum(row["seconds"] for row in rows if row["kind"] == kind)


def wait_job(http, job_id: str, predicate, timeout_s: float = 300.0, poll_s: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(f"/jobs/{job_id}").json()["data"]
        if predicate(job):
            return job
        if job["status"] in ("failed", "cancelled"):
            raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} still {job['status']}: {job['progress']}")
        time.sleep(poll_s)


def revise(http, job: dict, scene_indexes: list[int]) -> float:
    """Edits and regenerates the given scenes of a completed job, approves the revision once
    their images landed, and waits for the revised video; returns the wall seconds."""
    job_id = job["id"]
    started = time.perf_counter()
    scenes = job["storyboard"]["scenes"]
    for index in scene_indexes:
        scene = scenes[index]
        url = f"/jobs/{job_id}/scenes/{scene['id']}"
        http.put(url, json={"script": f"Now in lemon too ({index})"}).raise_for_status()
        http.post(f"{url}/regenerate", json={"feedback": "a lemon"}).raise_for_status()
    wanted = {scenes[i]["id"]: scenes[i]["version"] + 1 for i in scene_indexes}
    wait_job(http, job_id, lambda j: all(
        s["status"] == "image_ready" and s["version"] == wanted[s["id"]]
        for s in j["storyboard"]["scenes"] if s["id"] in wanted))
    http.post(f"/jobs/{job_id}/actions", json={"action": "approve"}).raise_for_status()
    wait_job(http, job_id, lambda j: j["status"] == "completed")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--revised", type=int, default=1, help="scenes changed by the revision")
    parser.add_argument("--renderer-cpus", type=float, default=0.5)
    args = parser.parse_args()

    env = bench.prepare_environment("renderfarm-bench-revision-")
    settings = bench.make_settings(env)
    bench.print_machine(env)
    with bench.ray_cluster(env) as port:
        url, deploy_s = bench.deploy(settings, port, renderer_cpus=args.renderer_cpus)
        print(f"farm deployed in {deploy_s:.1f} s")
        with bench.api_client(settings, url) as http:
            client_id = bench.create_client(http)
            body = bench.job_body(client_id, args.scenes, autoApprove=True)
            whole = bench.run_job(http, body, until="completed", poll_s=0.05)
            first_rows = bench.ledger(settings, whole.job_id)
            # The middle scene(s): a line changed in the body of the ad.
            middle = args.scenes // 2
            indexes = list(range(middle, min(args.scenes, middle + args.revised)))
            revision_s = revise(http, whole.job, indexes)
            rows = bench.ledger(settings, whole.job_id)
        added = rows[len(first_rows):]

    whole_device, revision_device = device_seconds(first_rows), device_seconds(added)
    print(f"\nload average after the run: {bench.load_average()}")
    print(f"\nRevising {len(indexes)} scene(s) (index {indexes}) of a finished "
          f"{args.scenes}-scene job, tiny preset, one run\n")
    kinds = sorted({row["kind"] for row in first_rows + added} - set(NOT_DEVICE))
    per_kind = []
    for kind in kinds:
        whole_n, revision_n = count(first_rows, kind), count(added, kind)
        per_kind += [[f"{kind} renders", whole_n, revision_n,
                      f"{revision_n / whole_n:.3f}" if whole_n else ""],
                     [f"{kind} device-seconds", f"{seconds_of(first_rows, kind):.3f}",
                      f"{seconds_of(added, kind):.3f}", ""]]
    bench.print_table(
        ["", "whole job", "revision", "revision / whole"],
        [*per_kind,
         [f"device-seconds ({' + '.join(kinds)})", f"{whole_device:.3f}",
          f"{revision_device:.3f}", f"{revision_device / whole_device:.3f}"],
         ["compositing seconds (ffmpeg, CPU)", f"{seconds_of(first_rows, 'composite'):.3f}",
          f"{seconds_of(added, 'composite'):.3f}", ""],
         ["wall seconds (POST or first edit -> completed)", f"{whole.seconds:.2f}",
          f"{revision_s:.2f}", f"{revision_s / whole.seconds:.3f}"]])
    ratio = revision_device / whole_device
    print(f"\ndevice-seconds, revision / whole job: {ratio:.3f} "
          f"(goal <= 0.2: {'met' if ratio <= 0.2 else 'missed'})")


if __name__ == "__main__":
    main()
