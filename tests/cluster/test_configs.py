"""cluster.yaml and serve_config.yaml, checked with Ray's own validation and against the facts an
operator relies on: GPU counts that match the instance types, the head as the only node that
advertises ``coordinator`` (so the placement in ``actors.placement`` puts renderers on GPU nodes
and everything else on the head), only the code uploaded to nodes, and setup that works."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from actors.placement import COORDINATOR_RESOURCE, make_placement
from models.presets import GPU_PRESET, get_preset

REPO = Path(__file__).resolve().parents[2]

# What AWS sells (vCPUs, NVIDIA GPUs); a node type on an instance type not listed here fails
# the test until someone looks the numbers up.
INSTANCE_TYPES = {
    "m6i.2xlarge": {"CPU": 8, "GPU": 0},
    "g5.2xlarge": {"CPU": 8, "GPU": 1},      # 1x A10G
    "p4d.24xlarge": {"CPU": 96, "GPU": 8},   # 8x A100
}


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    """cluster.yaml as Ray reads it: merged with the provider's defaults, then validated
    against Ray's cluster schema."""
    prepared = prepare_config(yaml.safe_load((REPO / "cluster.yaml").read_text()))
    validate_config(prepared)
    return prepared


def node_resources(node_type: dict) -> dict[str, float]:
    """What a node of this type advertises: its hardware, overridden by declared resources
    (as the autoscaler and ``ray start`` combine them)."""
    return {**INSTANCE_TYPES[node_type["node_config"]["InstanceType"]], **node_type["resources"]}


def fits(request: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(name, 0) >= amount for name, amount in request.items() if amount > 0)


def actor_request(options: dict) -> dict[str, float]:
    return {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0),
            **options.get("resources", {})}


def test_declared_gpus_match_the_instance_types(cluster_config):
    for name, node_type in cluster_config["available_node_types"].items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in INSTANCE_TYPES, f"{name}: look up {instance}'s GPUs and add it above"
        assert node_type["resources"].get("GPU", 0) == INSTANCE_TYPES[instance]["GPU"], name


def test_only_the_head_advertises_coordinator(cluster_config):
    node_types = cluster_config["available_node_types"]
    head = node_types[cluster_config["head_node_type"]]
    assert head["resources"] == {COORDINATOR_RESOURCE: 1000}
    assert node_resources(head)["GPU"] == 0
    for name, node_type in node_types.items():
        if node_type is not head:
            assert COORDINATOR_RESOURCE not in node_type["resources"], name


def test_placement_puts_renderers_on_gpu_nodes_and_the_rest_on_the_head(cluster_config,
                                                                       monkeypatch):
    # As on the cluster's nodes: nothing forces the renderers' GPU count (the Ray tests here do).
    monkeypatch.delenv("RENDERFARM_RENDER_GPUS", raising=False)
    node_types = cluster_config["available_node_types"]
    nodes = {name: node_resources(node_type) for name, node_type in node_types.items()}
    head = cluster_config["head_node_type"]
    # The cluster at its smallest: the head and one node of each GPU type.
    totals: dict[str, float] = {}
    for resources in nodes.values():
        for resource, amount in resources.items():
            totals[resource] = totals.get(resource, 0) + amount
    placement = make_placement("cluster", cluster_resources=totals)

    audio = actor_request(placement.deployments["AudioRenderer"]["ray_actor_options"])
    for deployment in ("ImageRenderer", "ClipRenderer"):
        request = actor_request(placement.deployments[deployment]["ray_actor_options"])
        assert {name for name, node in nodes.items() if fits(request, node)} == set(nodes) - {head}
        # Each card holds one renderer (never two) and has room for an audio replica beside it.
        assert 0.5 < request["GPU"] <= 1 and request["GPU"] + audio["GPU"] <= 1
    assert {name for name, node in nodes.items() if fits(audio, node)} == set(nodes) - {head}
    deployments = placement.deployments
    for what, request in {"Api": actor_request(deployments["Api"]["ray_actor_options"]),
                          "job actor": actor_request(placement.job_actor),
                          "Compositor": actor_request(
                              deployments["Compositor"]["ray_actor_options"])}.items():
        assert {name for name, node in nodes.items() if fits(request, node)} == {head}, what


def test_only_the_code_is_uploaded(cluster_config):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    # What `pip install -e .` on a node needs: pyproject.toml, its readme, its modules and
    # packages; plus the Serve config the operator deploys from the head.
    packages = {pattern.rstrip("*") for pattern in
                pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    modules = {f"{name}.py" for name in pyproject["tool"]["setuptools"]["py-modules"]}
    needed = {"pyproject.toml", pyproject["project"]["readme"], "serve_config.yaml",
              *packages, *modules}

    sources = {}
    for remote, local in cluster_config["file_mounts"].items():
        relative = (REPO / local).resolve().relative_to(REPO)
        assert relative.parts, f"{remote} uploads the whole checkout"
        assert (REPO / relative).exists(), local
        sources[str(relative)] = remote
    assert set(sources) == needed
    # Laid out on the node as in the checkout, where setup runs `pip install -e .`.
    assert all(remote == f"/home/ubuntu/renderfarm/{local}" for local, remote in sources.items())
    # Inside the uploaded packages, nothing local either.
    assert {"__pycache__", ".venv", ".renderfarm", ".git"} <= set(cluster_config["rsync_exclude"])


def setup_command(cluster_config, marker: str) -> str:
    [command] = [c for c in cluster_config["setup_commands"] if marker in c]
    return command


def run_on_node(command: str, home: Path) -> subprocess.CompletedProcess:
    """Runs a setup command in bash, with ``home`` as the node's home directory."""
    return subprocess.run(["bash", "-c", command], env={"HOME": str(home), "PATH": os.defpath},
                          capture_output=True, text=True, timeout=30)


def test_setup_refuses_placeholders_then_writes_the_node_settings(cluster_config, tmp_path):
    write_settings = setup_command(cluster_config, "> ~/renderfarm.env")
    refuse_placeholders = setup_command(cluster_config, "CHANGE_ME ~/renderfarm.env")

    assert run_on_node(write_settings, tmp_path).returncode == 0
    refused = run_on_node(refuse_placeholders, tmp_path)
    assert refused.returncode != 0 and "CHANGE_ME" in refused.stderr

    filled = write_settings.replace("CHANGE_ME", "filled-in")
    assert run_on_node(filled, tmp_path).returncode == 0  # again: setup reruns on updates
    assert run_on_node(refuse_placeholders, tmp_path).returncode == 0
    # Ray starts its processes from a login shell, which reads ~/.bashrc once per start.
    assert (tmp_path / ".bashrc").read_text().count(". ~/renderfarm.env") == 1
    shown = run_on_node(". ~/.bashrc && env", tmp_path)
    env = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)

    assert env["ENVIRONMENT"] == "production"
    assert env["DATABASE_URL"].startswith("postgresql://") and env["S3_BUCKET"]
    assert env["AUTH_SECRET"] == "filled-in"
    # The renderers have GPUs: the GPU preset, and one that exists.
    assert env["RENDERFARM_DEFAULT_PRESET"] == GPU_PRESET
    get_preset(env["RENDERFARM_DEFAULT_PRESET"])
    assert env["RENDERFARM_MODELS_DIR"] == f"{tmp_path}/models"
    assert env["PATH"].startswith(f"{tmp_path}/renderfarm/.venv/bin:")
    assert "RENDERFARM_RENDER_GPUS" not in env  # the cluster profile asks for one GPU itself
    # GPU nodes come and go with the autoscaler: jobs wait for them instead of failing fast.
    assert env["RENDERFARM_AUTOSCALING"] == "1"


def test_every_command_is_valid_bash(cluster_config):
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        for command in cluster_config[key]:
            checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
            assert checked.returncode == 0, f"{key}: {command}\n{checked.stderr}"


def test_setup_installs_into_a_venv_with_the_ray_that_runs_ray_up(cluster_config):
    head = cluster_config["available_node_types"][cluster_config["head_node_type"]]
    assert head["node_config"]["ImageId"] != "latest_dlami"  # Ray 2.60: Ubuntu 18.04, CUDA 11.2
    commands = " ; ".join(cluster_config["setup_commands"] + cluster_config["head_setup_commands"]
                          + cluster_config["worker_setup_commands"])
    assert f"'ray[serve]=={ray.__version__}'" in commands
    assert "uv venv --python 3.11 .venv" in commands
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires
    # Every install goes into the venv (the image's own Python refuses pip, PEP 668); this
    # also rules out Ray's default head setup, `pip install boto3`.
    installs = commands.count("pip install")
    assert installs and commands.count("uv pip install --python .venv/bin/python") == installs


def test_serve_config_passes_serves_schema_and_asks_for_the_cluster_profile():
    config = ServeDeploySchema.model_validate(
        yaml.safe_load((REPO / "serve_config.yaml").read_text()))
    [application] = config.applications
    assert application.import_path == "serve_app:app"
    assert application.args == {"profile": "cluster"}
    # Replica counts, resources and batching live in actors/placement.py, not here as well.
    assert not application.deployments
