"""The farm on a real multi-node Ray cluster, laid out as ``cluster.yaml`` lays it out: a CPU head
node advertising ``coordinator`` and GPU worker nodes. Renderer replicas must land on the GPU
nodes only; the API replicas, job actors and compositing on the head only; a job must complete
over HTTP, and still complete, without rendering finished clips again, when the node holding
the clip renderer disappears mid-job. Single-node settings must be refused on such a cluster.

The cluster runs in a subprocess (``multi_node_driver.py``) with its own Ray temp directory: a
``ray.cluster_utils.Cluster`` cannot share this process with the session's local Ray, and the
address file it writes must not steer anyone else's ``ray.init()`` to it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from coordinator.settings import Settings
from tests.conftest import SLOW_PRESET, free_port, write_slow_preset
from tests.jobs_helpers import job_object_keys, renders_per_scene

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("multi_node_driver.py")
DRIVER_TIMEOUT_S = 420

# No opt-in marker: this runs in the normal suite. Only the timeout is raised above the
# suite's default, to cover the driver's own limit.
pytestmark = pytest.mark.timeout(DRIVER_TIMEOUT_S + 60)


@pytest.fixture(scope="module")
def cluster_run(make_postgres_database, s3_server, tmp_path_factory) -> dict:
    """Runs the driver once against fresh PostgreSQL and S3, and returns its facts together
    with the settings the nodes had (to read the database afterwards)."""
    workdir = tmp_path_factory.mktemp("multi-node")
    presets_dir = workdir / "presets"
    presets_dir.mkdir()
    write_slow_preset(presets_dir)
    node_env = {
        "DATABASE_URL": make_postgres_database(),
        "S3_BUCKET": s3_server.make_bucket(), "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "S3_REGION": "us-east-1", "S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test",
        "AUTH_SECRET": secrets.token_urlsafe(32),
        "RENDERFARM_HOME": str(workdir / "home"),
        "RENDERFARM_MODELS_DIR": str(workdir / "models"),
        "RENDERFARM_DEFAULT_PRESET": "tiny",
        "RENDERFARM_PRESETS_PATH": str(presets_dir),
    }
    env = {name: value for name, value in os.environ.items()
           # The cluster profile decides GPUs itself; the session's Ray must not be joined.
           if name not in ("RENDERFARM_RENDER_GPUS", "RAY_ADDRESS")}
    # A short path: Ray's Unix sockets live under it and their paths have a length limit.
    ray_tmp = tempfile.mkdtemp(prefix="rf-ray-", dir="/tmp")
    env.update(node_env, RAY_TMPDIR=ray_tmp, PYTHONPATH=str(REPO))
    facts_path = workdir / "facts.json"
    process = subprocess.Popen(
        [sys.executable, str(DRIVER), str(facts_path), str(free_port()), str(free_port()),
         SLOW_PRESET], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=DRIVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and every Ray process it started
        output, _ = process.communicate()
        pytest.fail(f"the multi-node driver took over {DRIVER_TIMEOUT_S}s:\n{output[-5000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    facts = json.loads(facts_path.read_text()) if facts_path.exists() else {}
    if "error" in facts or facts.get("phase") != "done":
        pytest.fail(f"the multi-node driver failed while {facts.get('phase')!r}:\n"
                    f"{facts.get('error')}\n{output[-5000:]}")
    facts["settings"] = Settings(**{name.lower(): value for name, value in node_env.items()})
    return facts


def nodes_of(facts: dict, class_name: str) -> set[str]:
    """The nodes that ran actors of a class. Replicas Serve's autoscaler asked for but no node
    could hold yet (waiting for a GPU node) have no node, and are left out."""
    return {actor["node_id"] for actor in facts["actors"]
            if actor["class_name"] == class_name and actor["node_id"]}


def test_the_cluster_looks_like_cluster_yaml(cluster_run):
    nodes = cluster_run["nodes"]
    assert nodes[cluster_run["head_node"]].get("coordinator") == 1000
    assert not nodes[cluster_run["head_node"]].get("GPU")
    for gpu_node in cluster_run["gpu_nodes"]:
        assert nodes[gpu_node]["GPU"] == 1 and "coordinator" not in nodes[gpu_node]


def test_renderers_run_only_on_gpu_nodes(cluster_run):
    gpu_nodes = {*cluster_run["gpu_nodes"], cluster_run["node_loss"]["replacement_node"]}
    for deployment in ("ImageRenderer", "ClipRenderer"):
        placed = nodes_of(cluster_run, f"ServeReplica:renderfarm:{deployment}")
        assert placed and placed <= gpu_nodes, deployment


def test_api_job_actors_and_compositing_run_only_on_the_head(cluster_run):
    head = {cluster_run["head_node"]}
    assert nodes_of(cluster_run, "ServeReplica:renderfarm:Api") == head
    assert nodes_of(cluster_run, "JobActor") == head
    assert nodes_of(cluster_run, "ServeReplica:renderfarm:Compositor") == head


def test_a_whole_job_completes_over_http(cluster_run):
    job = cluster_run["whole_job"]
    assert job["status"] == "completed" and job["videoUrl"] and job["actualCost"] > 0
    assert len(job["storyboard"]["scenes"]) == 3
    counts = renders_per_scene(cluster_run["settings"], job["id"], "clip")
    assert sorted(counts.values()) == [1, 1, 1]


def test_losing_the_clip_node_mid_job_redoes_no_finished_work(cluster_run):
    loss = cluster_run["node_loss"]
    job = loss["job"]
    assert job["status"] == "completed" and job["videoUrl"]
    scene_ids = {scene["id"] for scene in job["storyboard"]["scenes"]}
    assert loss["clips_done_before"] and set(loss["clips_done_before"]) < scene_ids
    # The clip renderer moved off the lost node, onto the node added in its place.
    assert loss["clip_nodes_after"] == [loss["replacement_node"]]
    clips = renders_per_scene(cluster_run["settings"], job["id"], "clip")
    images = renders_per_scene(cluster_run["settings"], job["id"], "image")
    assert set(clips) == scene_ids and set(images) == scene_ids
    for scene_id in loss["clips_done_before"]:
        assert clips[scene_id] == 1, "a clip finished before the node was lost was rendered again"
    assert set(images.values()) == {1}, "an image was rendered again"
    # And in S3: version 1 of each scene's image, clip and spoken line, nothing else (a line's
    # key also names its text's hash).
    stored = {re.sub(r"/voice-v1-[0-9a-f]{16}\.wav$", "/voice-v1.wav", key)
              for key in job_object_keys(cluster_run["settings"], job["id"])
              if "/scenes/" in key}
    assert stored == {f"jobs/{job['id']}/scenes/{scene_id}/{artifact}"
                      for scene_id in scene_ids
                      for artifact in ("image-v1.png", "clip-v1.mp4", "voice-v1.wav")}


def test_single_node_settings_are_refused_on_a_multi_node_cluster(cluster_run):
    refusal = cluster_run["single_node_refusal"]
    assert refusal is not None, "the app started on SQLite and a local directory"
    assert "DATABASE_URL" in refusal and "S3_BUCKET" in refusal
