"""The API under load: p50/p99 of GET /jobs/{id} and the error rate with many concurrent
pollers (locust, headless, bounded in time, only to 127.0.0.1), while the farm is idle and
while it renders on simulated GPUs (``bench/simulated_gpu.py``), side by side in one run.

- idle: the pollers poll finished jobs; nothing else runs.
- rendering: J jobs of S scenes (``autoApprove``) render on D simulated GPUs, compressed so
  that they are still rendering when the pollers stop (checked and printed); the pollers poll
  those jobs.

    .venv/bin/python bench/load.py [--users 200] [--poll-s 5] [--seconds 30]

Needs the bench extra (``pip install -e '.[bench]'``: locust). Self-contained: a private local
Ray (2 CPUs) and a temporary RENDERFARM_HOME, both removed at the end. Timings only.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as bench
from scaling import (NO_SOUND, bench_settings, deploy_simulated, expected_device_s,
                     farm_database, submit, teardown, wait_for)

LOCUSTFILE = Path(__file__).resolve().parent / "locust_pollers.py"


def run_locust(url: str, token: str, job_ids: list[str], args) -> dict[str, float]:
    """Runs the pollers for ``args.seconds`` (after all have started) and returns the stats."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the load benchmark only ever targets this machine")
    with tempfile.TemporaryDirectory(prefix="locust-") as out:
        prefix = os.path.join(out, "run")
        env = {**os.environ, "BENCH_JOB_IDS": ",".join(job_ids), "BENCH_TOKEN": token,
               "BENCH_POLL_S": str(args.poll_s)}
        spawn_rate = max(1, args.users // 2)
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
             "--host", url, "-u", str(args.users), "-r", str(spawn_rate),
             "-t", f"{args.seconds + args.users / spawn_rate:.0f}s", "--reset-stats",
             "--csv", prefix, "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10"],
            env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=args.seconds + 120)
        with open(prefix + "_stats.csv", newline="") as handle:
            rows = {row["Name"]: row for row in csv.DictReader(handle)}
    row = rows["Aggregated"]
    count, failures = int(row["Request Count"]), int(row["Failure Count"])
    return {"requests": count, "failures": failures,
            "rps": float(row["Requests/s"]), "p50": float(row["50%"]),
            "p99": float(row["99%"]), "max": float(row["Max Response Time"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--poll-s", type=float, default=5.0, help="seconds between one user's polls")
    parser.add_argument("--seconds", type=int, default=30, help="measured seconds per phase")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--profile", default="sdxl-turbo-svd")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres",
                        help="the farm's database (default postgres, as on a cluster)")
    args = parser.parse_args()

    import simulated_gpu as sim
    from coordinator.auth import issue_local_token

    env = bench.prepare_environment("renderfarm-load-")
    print(f"machine: 2-core; load average before: {bench.load_average()}", flush=True)
    results = {}
    with farm_database(env, args.database) as database_url, bench.ray_cluster(env) as port:
        settings = bench_settings(env, database_url)
        print(f"database: {settings.database_url.split(':', 1)[0]}", flush=True)
        # The render phase must outlast the pollers: its ideal is 3x the measured window.
        work = expected_device_s(sim.PROFILES[args.profile], args.jobs, args.scenes)
        factor = 3 * args.seconds * args.devices / work
        url, pool = deploy_simulated(settings, port, devices=args.devices, time_factor=factor,
                                     profile=args.profile, image_replicas=1,
                                     clip_replicas=args.devices)
        token = issue_local_token(settings, "bench-user")
        with bench.api_client(settings, url) as http:
            client_id = bench.create_client(http)
            # As many finished jobs as will render, at once: each leaves a job host in the
            # pool, so the rendering phase starts no processes (a busy farm's steady state).
            finished = submit(http, bench.job_body(client_id, 2, autoApprove=True, **NO_SOUND),
                              args.jobs)
            wait_for(settings, finished, "completed", 600)
            print(f"idle: {args.users} pollers on finished jobs for {args.seconds} s", flush=True)
            meter = bench.CpuMeter()
            meter.start()
            results["idle"] = run_locust(url, token, finished, args)
            results["idle"]["cpu"] = meter.stop()
            rendering = submit(http, bench.job_body(client_id, args.scenes, autoApprove=True,
                                                    **NO_SOUND), args.jobs)
            print(f"rendering: {args.jobs} jobs x {args.scenes} scenes on {args.devices} "
                  f"simulated GPUs (time factor {factor:.4f}); {args.users} pollers on them",
                  flush=True)
            meter = bench.CpuMeter()
            meter.start()
            results["rendering"] = run_locust(url, token, rendering, args)
            results["rendering"]["cpu"] = meter.stop()
            still = [job["status"] for job in (http.get(f"/jobs/{i}").json()["data"]
                                               for i in rendering)]
            print(f"  when the pollers stopped: {sum(s != 'completed' for s in still)} of "
                  f"{len(still)} jobs still rendering", flush=True)
        teardown(pool)
    rows = []
    for phase, r in results.items():
        cpu = r["cpu"]
        rows.append([phase, str(r["requests"]), f"{r['rps']:.1f}", f"{r['p50']:.0f}",
                     f"{r['p99']:.0f}", f"{r['max']:.0f}",
                     f"{r['failures']} ({r['failures'] / max(1, r['requests']):.2%})",
                     f"{cpu['machine total'] / cpu['wall']:.2f}"])
    idle, busy = results["idle"], results["rendering"]
    rows.append(["rendering ÷ idle", "", "", f"{busy['p50'] / idle['p50']:.2f}x",
                 f"{busy['p99'] / idle['p99']:.2f}x", "", "", ""])
    print(f"\nGET /jobs/{{id}}: {args.users} pollers, one poll each per {args.poll_s:g} s, "
          f"{args.seconds} s measured per phase; load average after {bench.load_average()}")
    bench.print_table(["phase", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors",
                       "cores busy"], rows)


if __name__ == "__main__":
    main()
