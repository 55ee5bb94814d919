"""Shared test infrastructure: the real parts, started once per session.

- PostgreSQL: ``TEST_DATABASE_URL`` if set, else a real server from the ``pgserver`` wheel.
- S3: moto's server mode in a subprocess on localhost, reached by boto3 over HTTP.
- The API: ``create_app`` served by uvicorn on a loopback port, talked to over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import psycopg
import pytest
import uvicorn

from coordinator.app import create_app
from coordinator.auth import issue_local_token
from coordinator.settings import Settings

# Never let the developer's own environment leak into tests.
for _name in ("DATABASE_URL", "S3_BUCKET", "S3_ENDPOINT_URL", "AI_API_KEY", "AUTH_JWKS_URL",
              "RENDERFARM_HOME"):
    os.environ.pop(_name, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---- PostgreSQL -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory) -> Iterator[str]:
    """A URL to an admin database on a real PostgreSQL server."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def make_postgres_database(postgres_admin_url):
    """Creates a fresh, empty database per call, so each app under test starts clean."""

    def _make() -> str:
        name = f"rf_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, query = postgres_admin_url.partition("?")
        prefix = base.rsplit("/", 1)[0]
        return f"{prefix}/{name}" + (f"?{query}" if query else "")

    return _make


# ---- S3 (moto server mode) --------------------------------------------------------------------

@dataclass(frozen=True)
class S3Server:
    endpoint_url: str

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def make_bucket(self) -> str:
        name = f"rf-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"

    def _up() -> bool:
        try:
            return httpx.get(endpoint + "/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_until(_up, timeout=30, what="moto S3 server")
        yield S3Server(endpoint)
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---- The API over HTTP ------------------------------------------------------------------------

class LiveServer:
    """Serves one ASGI app with uvicorn on a loopback port in a background thread."""

    def __init__(self, app):
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=30, what="uvicorn start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class ApiUnderTest:
    """A running API with its settings, plus helpers to act as different users."""

    url: str
    settings: Settings
    backend: str

    def client(self, user: str | None = "user-a", **kwargs) -> httpx.Client:
        headers = kwargs.pop("headers", {})
        if user is not None:
            headers["Authorization"] = f"Bearer {issue_local_token(self.settings, user)}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def token(self, user: str) -> str:
        return issue_local_token(self.settings, user)


BACKENDS = {
    # name: (database, object store)
    "sqlite-local": ("sqlite", "local"),
    "postgres-s3": ("postgres", "s3"),
}


def make_settings(tmp_path: Path, backend: str, request, **overrides) -> Settings:
    database, store = BACKENDS[backend]
    values: dict = {"renderfarm_home": tmp_path / "home", "max_upload_size_mb": 2,
                    "max_asset_download_size_mb": 1, "url_import_timeout_seconds": 3.0}
    if database == "postgres":
        values["database_url"] = request.getfixturevalue("make_postgres_database")()
    if store == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        values.update(s3_bucket=s3.make_bucket(), s3_endpoint_url=s3.endpoint_url,
                      s3_region="us-east-1", s3_access_key_id="test", s3_secret_access_key="test")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=list(BACKENDS), scope="module")
def api(request, tmp_path_factory) -> Iterator[ApiUnderTest]:
    """The API on each backend pair: SQLite + local directory, PostgreSQL + S3 (moto)."""
    backend = request.param
    settings = make_settings(tmp_path_factory.mktemp(backend), backend, request,
                             **getattr(request.module, "SETTINGS_OVERRIDES", {}))
    with LiveServer(create_app(settings)) as server:
        yield ApiUnderTest(url=server.url, settings=settings, backend=backend)


@pytest.fixture
def alice(api) -> Iterator[httpx.Client]:
    with api.client(f"alice-{uuid.uuid4().hex[:6]}") as client:
        yield client


@pytest.fixture
def bob(api) -> Iterator[httpx.Client]:
    with api.client(f"bob-{uuid.uuid4().hex[:6]}") as client:
        yield client


# ---- small factories --------------------------------------------------------------------------

def create_client(http: httpx.Client, **fields) -> dict:
    body = {"name": "Acme Drinks", "description": "Sparkling water",
            "brandGuidelines": {"colors": ["#0055ff", "#ffffff"], "tone": "playful"}} | fields
    response = http.post("/api/v3/clients", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


def create_campaign(http: httpx.Client, client_id: str, **fields) -> dict:
    body = {"clientId": client_id, "name": "Summer launch", "goal": "awareness",
            "status": "active", "brief": "Launch the lime flavour"} | fields
    response = http.post("/api/v3/campaigns", json=body)
    assert response.status_code == 201, response.text
    return response.json()["data"]


# ---- Ray: one local cluster per session, one Serve app per backend ----------------------------

SLOW_PRESET = "tiny-slow"


def write_slow_preset(directory: Path) -> None:
    """An operator-style extra preset (``RENDERFARM_PRESETS_PATH``): the tiny models at sizes and
    step counts that take a second or two per render, so fault tests can act mid-render."""
    from models.presets import get_preset

    tiny = get_preset("tiny").model_dump(mode="json")
    tiny.update(name=SLOW_PRESET, description="Tiny models, rendered slowly enough to interrupt.")
    tiny["image"]["steps"] = 8
    tiny["clip"]["steps"] = 4
    tiny["clip"]["num_frames"] = 16
    tiny["image_size"] = {"16:9": [256, 144], "9:16": [144, 256], "1:1": [256, 256]}
    tiny["clip_size"] = {"16:9": [128, 72], "9:16": [72, 128], "1:1": [128, 128]}
    import yaml

    (directory / f"{SLOW_PRESET}.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """A real local Ray with Serve's HTTP proxy on a free loopback port."""
    import ray
    from ray import serve

    models_dir = tmp_path_factory.mktemp("models")
    presets_dir = tmp_path_factory.mktemp("presets")
    write_slow_preset(presets_dir)
    # Random-weight twins of the GPU presets (built on first use: models.twins.ensure_twins).
    from models.twin_presets import write_twin_presets

    write_twin_presets(presets_dir, models_dir)
    env = {"RENDERFARM_RENDER_GPUS": "0", "RENDERFARM_PRESETS_PATH": str(presets_dir)}
    os.environ.update(env)  # the driver validates presets too
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="renderfarm-tests",
             log_to_driver=False, runtime_env={"env_vars": env})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield {"port": port, "models_dir": models_dir}
    serve.shutdown()
    ray.shutdown()


@dataclass
class FarmUnderTest(ApiUnderTest):
    """The API served by Ray Serve with real renderers and job actors behind it."""

    app_name: str = ""


def deploy_farm(ray_session, settings: Settings, *, app_name: str, image_replicas: int = 1,
                clip_replicas: int = 1) -> FarmUnderTest:
    from ray import serve

    from serve_app import build_app

    os.environ["RENDERFARM_RENDER_GPUS"] = "0"
    # The default local placement, as `scripts/serve` gets it, with only the replica counts set.
    application = build_app(settings, ImageRenderer={"num_replicas": image_replicas},
                            ClipRenderer={"num_replicas": clip_replicas})
    serve.run(application, name=app_name, route_prefix="/")
    url = f"http://127.0.0.1:{ray_session['port']}"
    wait_until(lambda: httpx.get(url + "/health", timeout=5).status_code == 200, timeout=60,
               what="Serve app health")
    return FarmUnderTest(url=url, settings=settings, backend=app_name, app_name=app_name)


@pytest.fixture(scope="module")
def farm_overrides() -> dict:
    """Settings a test module's farm needs (override this fixture in the module)."""
    return {}


def _deployed_farm(request, ray_session, tmp_path_factory, backend: str, overrides: dict):
    from ray import serve

    # Tiny pipelines are built once for the whole session and shared by every farm.
    values = {"renderfarm_models_dir": ray_session["models_dir"],
              **getattr(request.module, "SETTINGS_OVERRIDES", {}), **overrides}
    settings = make_settings(tmp_path_factory.mktemp(f"farm-{backend}"), backend, request, **values)
    farm = deploy_farm(ray_session, settings, app_name=f"farm-{backend}")
    try:
        yield farm
    finally:
        serve.delete(farm.app_name)


@pytest.fixture(params=list(BACKENDS), scope="module")
def farm(request, ray_session, tmp_path_factory, farm_overrides) -> Iterator[FarmUnderTest]:
    """The whole service on Ray, on each backend pair in turn (one Serve app at a time)."""
    yield from _deployed_farm(request, ray_session, tmp_path_factory, request.param, farm_overrides)


@pytest.fixture(scope="module")
def local_farm(request, ray_session, tmp_path_factory, farm_overrides) -> Iterator[FarmUnderTest]:
    """The whole service on Ray with SQLite and the local object store only (fault tests)."""
    yield from _deployed_farm(request, ray_session, tmp_path_factory, "sqlite-local", farm_overrides)


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.backends(...)``: a test meant for some backend pairs only is left out
    of the run on the others (deselected and reported as such, never counted as skipped)."""
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("backends")
        params = getattr(getattr(item, "callspec", None), "params", {})
        backend = next((params[name] for name in ("farm", "api") if name in params), None)
        (drop if marker and backend is not None and backend not in marker.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
