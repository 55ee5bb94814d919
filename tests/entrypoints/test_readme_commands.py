"""The service as its users start it, with the settings they get by default.

- ``scripts/serve`` (the README's run command) in a subprocess: the README's whole-job example,
  run from the README's own text, reaches ``completed`` and delivers a playable MP4; the API
  replica carries no torch; SIGTERM stops everything.
- ``serve deploy serve_config.yaml`` onto a Ray started with ``ray start --head``, with the GPU
  request overridden the documented way (``render_gpus: 0`` in the app's ``args``).

Each starts a Ray of its own (not the session's), on free ports, and is torn down by process
group, so nothing is left running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from actors.media_probe import probe_media
from coordinator.auth import issue_local_token
from coordinator.settings import Settings
from tests.conftest import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
HEAVY = ("libtorch",)


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RENDERFARM_", "RAY_", "PYTEST_"))}
    env.update(RENDERFARM_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    return env


def _stop_group(process: subprocess.Popen, grace_s: float = 60.0) -> int | None:
    """SIGTERM to the process group (what a service manager does), SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return process.poll()
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        return None


def _ray_actor_pids(dashboard: str, class_fragment: str) -> list[int]:
    """PIDs of live actors whose class name contains ``class_fragment``, via Ray's state API
    over HTTP (with the cluster's auth token, which Ray keeps in ``~/.ray/auth_token``)."""
    response = httpx.get(f"{dashboard}/api/v0/actors", params={"limit": 1000, "detail": "1"},
                         headers=_ray_auth_headers(), timeout=30)
    response.raise_for_status()
    actors = response.json()["data"]["result"]["result"]
    return [actor["pid"] for actor in actors
            if class_fragment in actor.get("class_name", "") and actor.get("state") == "ALIVE"]


def _ray_auth_headers() -> dict[str, str]:
    token_file = Path.home() / ".ray" / "auth_token"
    if token_file.exists():
        return {"Authorization": f"Bearer {token_file.read_text().strip()}"}
    return {}


def _scrape_farm_metrics(dashboard: str, wanted: tuple[str, ...]) -> str | None:
    """The metrics text of the cluster's Prometheus targets once every ``wanted`` pattern is
    in it (Ray exports every few seconds), else None."""
    targets = httpx.get(f"{dashboard}/api/prometheus/sd", headers=_ray_auth_headers(),
                        timeout=10).json()
    text = ""
    for group in targets:
        for target in group["targets"]:
            try:
                text += httpx.get(f"http://{target}/metrics", timeout=10).text
            except httpx.HTTPError:
                continue
    return text if all(re.search(pattern, text) for pattern in wanted) else None


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _readme_whole_job_block() -> str:
    readme = (REPO / "README.md").read_text()
    marker = readme.index("<!-- whole-job example")
    block = re.search(r"```bash\n(.*?)```", readme[marker:], re.S)
    assert block, "README lost its whole-job example"
    return block.group(1)


def test_readme_run_command_and_whole_job_example(tmp_path):
    """scripts/serve exactly as the README says, on this 2-CPU machine, default settings (only
    the ports are chosen, so the test never collides with a service already on 8000)."""
    home, port, dashboard_port = tmp_path / "home", free_port(), free_port()
    log = (tmp_path / "serve.log").open("w")
    started = time.monotonic()
    service = subprocess.Popen(
        [str(REPO / "scripts" / "serve"), "--port", str(port), "--dashboard-port",
         str(dashboard_port)], cwd=REPO, env=_clean_env(home), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            assert service.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=240, interval=0.5, what="scripts/serve to answer /health")
        print(f"scripts/serve healthy after {time.monotonic() - started:.1f} s")

        # The README's own text, run in a scratch directory that sees the project's venv.
        workdir = tmp_path / "user"
        workdir.mkdir()
        (workdir / ".venv").symlink_to(REPO / ".venv")
        script = _readme_whole_job_block()
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir,
                                env=_clean_env(home, API=f"http://127.0.0.1:{port}/api/v3"),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert re.search(r"job \S+: completed", result.stdout), result.stdout
        facts = probe_media(workdir / "ad.mp4")
        assert facts.video_codec == "h264"
        assert (facts.width, facts.height) == (144, 256)  # the tiny preset's 9:16 output
        assert 9.5 <= facts.duration_s <= 10.5  # the brief's 10 seconds

        # The API replica is the light process the design promises: no torch mapped.
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        api_pids = _ray_actor_pids(dashboard, ":Api")
        renderer_pids = _ray_actor_pids(dashboard, "ImageRenderer")
        assert api_pids and renderer_pids
        for pid in api_pids:
            assert "libtorch" not in _maps(pid), "the Api replica loaded torch"
        assert "libtorch" in _maps(renderer_pids[0])  # the check can see torch where it is
        print(f"Api replica RSS {_rss_mb(api_pids[0]):.0f} MB; "
              f"image renderer RSS {_rss_mb(renderer_pids[0]):.0f} MB")

        # What an operator's Prometheus scrapes: the targets Ray's dashboard hands out for
        # service discovery, and on them the farm's own metrics (Ray prefixes them "ray_").
        wanted = (r'ray_renderfarm_images_rendered_total\{[^}]*preset="tiny"',
                  r'ray_renderfarm_jobs\{[^}]*status="completed"[^}]*\} 1\.0',
                  # The clip replica reports its pipeline's queue depth (0 here: it takes one
                  # clip at a time, the others wait in Serve's router).
                  r'ray_renderfarm_renderer_queue_depth\{[^}]*kind="clip"',
                  r'ray_renderfarm_clip_seconds_count\{[^}]*preset="tiny"')
        scraped = wait_until(lambda: _scrape_farm_metrics(dashboard, wanted), timeout=120,
                             interval=2, what="the farm's metrics on Ray's Prometheus endpoint")
        print(f"scraped {len(scraped)} bytes of metrics")
    finally:
        code = _stop_group(service)
        log.close()
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert "renderfarm: shutting down" in (tmp_path / "serve.log").read_text()


def test_serve_deploy_of_serve_config_on_ray_start(tmp_path):
    """``serve deploy serve_config.yaml`` onto ``ray start --head``, as an operator does on the
    head node; this machine has no GPU, so the config's app gets ``render_gpus: 0``."""
    home = tmp_path / "home"
    # A short temp dir of its own: Ray's socket paths must stay short, and `ray start` must not
    # become the cluster that other `ray.init()` calls on this machine would join.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rf-", dir="/tmp"))
    gcs, dashboard_port, http_port = free_port(), free_port(), free_port()
    auth_secret = "serve-deploy-test-secret-0123456789abcdef"
    env = _clean_env(home, RAY_TMPDIR=str(ray_tmp), AUTH_SECRET=auth_secret,
                     RAY_AUTH_MODE="token")
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = http_port
    config["applications"][0]["args"]["render_gpus"] = 0
    config_path = tmp_path / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--num-gpus=0",
         f"--port={gcs}", f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
         "--disable-usage-stats"],
        cwd=REPO, env=env, stdout=(tmp_path / "ray.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        def dashboard_up() -> bool:
            assert head.poll() is None, (tmp_path / "ray.log").read_text()[-3000:]
            try:
                return httpx.get(f"{dashboard}/api/version", timeout=2).status_code < 500
            except httpx.HTTPError:
                return False

        wait_until(dashboard_up, timeout=120, interval=0.5, what="ray start --head")
        deploy = subprocess.run([str(VENV_BIN / "serve"), "deploy", str(config_path), "-a",
                                 dashboard], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=120)
        assert deploy.returncode == 0, deploy.stderr[-3000:]

        settings = Settings(renderfarm_home=home, auth_secret=auth_secret)
        url = f"http://127.0.0.1:{http_port}"
        wait_until(lambda: _healthy(url), timeout=240, interval=0.25, what="the deployed app")
        token = issue_local_token(settings, "operator")
        job = run_whole_job_over_http(url, token, timeout_s=240)
        assert job["status"] == "completed", job
        assert job["preset"] == "tiny"  # decided where the renderers run: no CUDA there
    finally:
        # `ray start --block` stops its processes one by one on SIGTERM, which takes longer
        # than 20 s here: the group is killed after a short grace (nothing is asserted on it).
        _stop_group(head, grace_s=5)


def run_whole_job_over_http(url: str, token: str, timeout_s: float) -> dict:
    """A client and an auto-approved 2-scene job, polled until it ends; the final job."""
    with httpx.Client(base_url=url + "/api/v3", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        client = http.post("/clients", json={"name": "Acme"}).json()["data"]
        created = http.post("/jobs", json={
            "context": {"clientId": client["id"]},
            "adBasics": {"product": "Lime Fizz", "targetAudience": "runners",
                         "keyMessage": "Zero sugar", "callToAction": "Grab a can"},
            "creative": {"direction": {"style": "bright summer photography"}},
            "advanced": {"sceneCount": 2, "durationSeconds": 6, "autoApprove": True}})
        assert created.status_code == 201, created.text
        job_id = created.json()["data"]["id"]
        return wait_until(lambda: _if_final(http.get(f"/jobs/{job_id}").json()["data"]),
                          timeout=timeout_s, interval=0.25, what=f"job {job_id} to end")


def _if_final(job: dict) -> dict | None:
    return job if job["status"] in ("completed", "failed", "cancelled") else None


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_serve_config_passes_serves_own_schema_and_names_the_cluster_profile():
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(
        yaml.safe_load((REPO / "serve_config.yaml").read_text()))
    (application,) = config.applications
    assert application.import_path == "serve_app:app"
    assert application.args == {"profile": "cluster"}
    # Replica settings live in actors/placement.py only.
    assert not application.deployments


def test_importing_the_entry_point_loads_no_model_libraries():
    """``serve_app`` and the ingress module are imported by the API side; torch is not."""
    code = ("import sys, serve_app, coordinator.ingress, coordinator.cli; "
            "print(json.dumps([m for m in ('torch','diffusers','transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
