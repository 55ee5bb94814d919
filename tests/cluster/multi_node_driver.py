"""Runs the farm on a local multi-node Ray cluster and writes what happened as JSON facts.

Started by ``tests/cluster/test_multi_node.py`` in its own process (a ``ray.cluster_utils.Cluster``
cannot share a process with the test session's local Ray). The cluster mirrors ``cluster.yaml``:
a head node with CPUs and the ``coordinator`` resource, and GPU worker nodes with one GPU each
(logical GPUs: CUDA is absent here, so the renderers run their tiny models on the CPU). Settings
come from the environment, as on the nodes of a real cluster (DATABASE_URL, S3_*, AUTH_SECRET,
RENDERFARM_*).

Placements are read with Ray's state API, which asks the head's dashboard: the head starts one.

Usage: python multi_node_driver.py FACTS_JSON_PATH HTTP_PORT DASHBOARD_PORT SLOW_PRESET
The test asserts on the facts; this script only acts and records.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import httpx
import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from coordinator.auth import issue_local_token
from coordinator.cluster_checks import ClusterSettingsError
from coordinator.settings import Settings
from serve_app import build_app

# Nothing from tests.conftest here: importing it clears DATABASE_URL, S3_BUCKET and the like
# from the environment, which is where this cluster's nodes get their settings.

APP_NAME = "renderfarm"
HEAD = {"num_cpus": 2, "num_gpus": 0, "resources": {"coordinator": 1000}}
# What a gpu_a10g node of cluster.yaml advertises (one GPU), with fewer CPUs than a g5.2xlarge.
GPU_WORKER = {"num_cpus": 2, "num_gpus": 1}


def main(facts_path: Path, http_port: int, dashboard_port: int, slow_preset: str) -> None:
    facts: dict = {"phase": "starting the cluster", "phase_started_s": {}}
    started = time.monotonic()
    cluster = None

    def phase(name: str) -> None:
        facts["phase"] = name
        facts["phase_started_s"][name] = round(time.monotonic() - started, 1)

    phase("starting the cluster")
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            **HEAD, "include_dashboard": True, "dashboard_port": dashboard_port,
            "dashboard_agent_listen_port": None})
        workers = [cluster.add_node(**GPU_WORKER) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        # Whether Ray's token auth is on for this driver (a token in ~/.ray/auth_token can turn
        # it on; the state API below then has to send it): recorded to explain a failure there.
        facts["ray_auth_mode"] = os.environ.get("RAY_AUTH_MODE")
        facts["head_node"] = cluster.head_node.node_id
        facts["gpu_nodes"] = [node.node_id for node in workers]
        facts["nodes"] = {node["NodeID"]: node["Resources"] for node in ray.nodes() if node["Alive"]}

        phase("building the app with single-node settings")
        facts["single_node_refusal"] = single_node_refusal(facts_path.parent / "single-node-home")

        phase("deploying the app")
        settings = Settings()  # from this process's environment, like every node's
        # One HTTP proxy, on the head: every node of a local cluster shares 127.0.0.1, so a
        # proxy per node (Serve's default) would fight over the port.
        serve.start(http_options={"host": "127.0.0.1", "port": http_port,
                                  "location": "HeadOnly"})
        serve.run(build_app(settings, profile="cluster"), name=APP_NAME, route_prefix="/")
        url = f"http://127.0.0.1:{http_port}"
        poll(lambda: _healthy(url), timeout=120, what="the app's health")
        token = issue_local_token(settings, "operator")
        with httpx.Client(base_url=url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            phase("a whole job")
            created = start_job(http, sceneCount=3, durationSeconds=8, autoApprove=True)
            facts["whole_job"] = wait_for_status(http, created["id"], "completed", timeout=240)

            phase("a job losing a GPU node mid-clips")
            facts["node_loss"] = lose_clip_node_mid_job(cluster, http, slow_preset)

        phase("reading placements")
        facts["actors"] = [{"class_name": a.class_name, "node_id": a.node_id, "state": a.state}
                           for a in list_actors(limit=10_000)
                           if a.class_name == "JobActor" or a.class_name.startswith("ServeReplica:")]
        phase("done")
    except BaseException:
        facts["error"] = traceback.format_exc()
    finally:
        facts_path.write_text(json.dumps(facts, indent=1, default=str))
        shut_down(cluster)


def single_node_refusal(home: Path) -> str | None:
    """Builds the app with the one-node defaults (SQLite, the local object directory, a
    generated secret); ``None`` if the cluster let it start."""
    try:
        build_app(Settings(renderfarm_home=home, database_url=None, s3_bucket=None,
                           auth_secret=None, auth_jwks_url=None), profile="cluster")
    except ClusterSettingsError as refusal:
        return str(refusal)
    return None


def lose_clip_node_mid_job(cluster: Cluster, http: httpx.Client, slow_preset: str) -> dict:
    """Removes the node holding the clip renderer while some clips are done and others are
    not, adds a fresh GPU node, and lets the job finish."""
    created = start_job(http, sceneCount=4, durationSeconds=10, preset=slow_preset,
                        autoApprove=True)

    def statuses(job: dict) -> list[str]:
        return [scene["status"] for scene in job["storyboard"]["scenes"]]

    partial = poll_job(http, created["id"], lambda j: j["status"] == "video_processing"
                       and "clip_ready" in statuses(j) and "image_ready" in statuses(j),
                       timeout=240, what="some but not all clips")
    clip_node = replica_nodes("ClipRenderer")[0]
    victim = next(node for node in cluster.worker_nodes if node.node_id == clip_node)
    cluster.remove_node(victim, allow_graceful=False)
    # With one GPU per node and the image renderer holding the other, the clip renderer has
    # nowhere to go: add a GPU node, as the autoscaler does when a replica cannot be placed.
    replacement = cluster.add_node(**GPU_WORKER)
    job = wait_for_status(http, created["id"], "completed", timeout=240)
    return {"job": job, "removed_node": clip_node, "replacement_node": replacement.node_id,
            "clips_done_before": [s["id"] for s in partial["storyboard"]["scenes"]
                                  if s["status"] == "clip_ready"],
            "clip_nodes_after": replica_nodes("ClipRenderer")}


# ---- HTTP, as a frontend uses the API ------------------------------------------------------

def start_job(http: httpx.Client, **advanced) -> dict:
    client = http.post("/api/v3/clients", json={"name": "Acme Drinks"})
    client.raise_for_status()
    body = {"context": {"clientId": client.json()["data"]["id"]},
            "adBasics": {"product": "Lime Fizz", "targetAudience": "runners",
                         "keyMessage": "Zero sugar", "callToAction": "Grab a can"},
            "creative": {"direction": {"style": "bright summer photography"}},
            "advanced": advanced}
    response = http.post("/api/v3/jobs", json=body)
    if response.status_code != 201:
        raise AssertionError(f"POST /jobs: {response.status_code} {response.text}")
    return response.json()["data"]


def wait_for_status(http: httpx.Client, job_id: str, status: str, timeout: float) -> dict:
    return poll_job(http, job_id, lambda job: job["status"] == status, timeout, status)


def poll_job(http: httpx.Client, job_id: str, predicate, timeout: float, what: str) -> dict:
    """Polls GET /jobs/{id} until ``predicate`` holds; fails at once on a final status that
    does not satisfy it."""
    def check() -> dict | None:
        job = http.get(f"/api/v3/jobs/{job_id}").json()["data"]
        if predicate(job):
            return job
        if job["status"] in ("completed", "failed", "cancelled"):
            raise AssertionError(f"job ended {job['status']} ({job.get('error')}) before: {what}")
        return None

    return poll(check, timeout, what)


def poll(check, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return value


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


# ---- Ray --------------------------------------------------------------------------------------

def replica_nodes(deployment: str) -> list[str]:
    """The nodes of a deployment's live replicas."""
    return [actor.node_id for actor in list_actors(filters=[
        ("class_name", "=", f"ServeReplica:{APP_NAME}:{deployment}"), ("state", "=", "ALIVE")])]


def shut_down(cluster: Cluster | None) -> None:
    for step in (serve.shutdown, ray.shutdown, getattr(cluster, "shutdown", None)):
        if step is None:
            continue
        try:
            step()
        except Exception:  # keep going: the cluster's processes must end whatever failed
            traceback.print_exc()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
