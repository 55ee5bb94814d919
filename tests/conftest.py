"""Shared test infrastructure: the real parts, started once per session.

- PostgreSQL: ``TEST_DATABASE_URL`` if set, else a real server from the ``pgserver`` wheel.
- S3: moto's server mode in a subprocess on localhost, reached by boto3 over HTTP.
- The API: ``create_app`` served by uvicorn on a loopback port, talked to over HTTP.
"""

from __future__ import annotations

import dataclasses
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
    """The API served by Ray Serve with real renderers and job actors behind it.

    A deployed farm is shared by the test modules that ask for the same settings (see
    ``FarmPool``); ``user_scope`` gives each module users of its own on it, so ``client("alice")``
    in one module never sees another module's clients, assets or jobs."""

    app_name: str = ""
    user_scope: str = ""

    def user_id(self, user: str) -> str:
        return f"{user}-{self.user_scope}" if self.user_scope else user

    def client(self, user: str | None = "user-a", **kwargs) -> httpx.Client:
        return super().client(None if user is None else self.user_id(user), **kwargs)

    def token(self, user: str) -> str:
        return super().token(self.user_id(user))


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


class FarmPool:
    """At most one deployed farm (only one Serve app can own route "/"), kept from one test
    module to the next while they ask for the same backend pair and settings: deploying one
    takes about 15 s. A different request replaces it; a module that asks for none (and may
    need the cluster's CPUs for Serve apps of its own) gets it deleted first (see
    ``pytest_runtest_setup``); so does the end of the session. Test modules asking for the same
    farm are run one after another (see ``pytest_collection_modifyitems``)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.farm: FarmUnderTest | None = None

    def get(self, key: tuple, deploy) -> FarmUnderTest:
        if self.key != key:
            self.release()
            self.farm, self.key = deploy(), key
        return self.farm

    def release(self) -> None:
        if self.farm is None:
            return
        from ray import serve

        farm, self.farm, self.key = self.farm, None, None
        serve.delete(farm.app_name)


_FARM_POOL = FarmPool()
FARM_FIXTURES = ("farm", "local_farm")


@pytest.fixture(scope="session")
def farm_pool(ray_session) -> Iterator[FarmPool]:
    try:
        yield _FARM_POOL
    finally:
        _FARM_POOL.release()


def _deployed_farm(request, ray_session, farm_pool, tmp_path_factory, backend: str,
                   overrides: dict) -> FarmUnderTest:
    # Tiny pipelines are built once for the whole session and shared by every farm.
    values = {"renderfarm_models_dir": ray_session["models_dir"],
              **getattr(request.module, "SETTINGS_OVERRIDES", {}), **overrides}
    key = (backend, repr(sorted(values.items())))

    def deploy() -> FarmUnderTest:
        settings = make_settings(tmp_path_factory.mktemp(f"farm-{backend}"), backend, request,
                                 **values)
        return deploy_farm(ray_session, settings, app_name=f"farm-{backend}")

    shared = farm_pool.get(key, deploy)
    scope = uuid.uuid5(uuid.NAMESPACE_URL, request.module.__name__).hex[:6]
    return dataclasses.replace(shared, user_scope=scope)


@pytest.fixture(params=list(BACKENDS), scope="module")
def farm(request, ray_session, farm_pool, tmp_path_factory, farm_overrides) -> FarmUnderTest:
    """The whole service on Ray, on each backend pair in turn (one Serve app at a time)."""
    return _deployed_farm(request, ray_session, farm_pool, tmp_path_factory, request.param,
                          farm_overrides)


@pytest.fixture(scope="module")
def local_farm(request, ray_session, farm_pool, tmp_path_factory, farm_overrides) -> FarmUnderTest:
    """The whole service on Ray with SQLite and the local object store only (fault tests)."""
    return _deployed_farm(request, ray_session, farm_pool, tmp_path_factory, "sqlite-local",
                          farm_overrides)


def _farm_key(item) -> tuple | None:
    """Which farm a test runs on, as far as collection can tell: the backend pair, and the
    module when the module overrides ``farm_overrides`` (its own settings); None without one."""
    names = item.fixturenames
    if "farm" in names:
        backend = item.callspec.params["farm"]
    elif "local_farm" in names:
        backend = "sqlite-local"
    else:
        return None
    defs = item._fixtureinfo.name2fixturedefs.get("farm_overrides", ())
    own = bool(defs) and Path(str(defs[-1].func.__code__.co_filename)) != Path(__file__)
    return (backend, item.module.__name__ if own else "")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A module that asks for no farm gets the cluster without one."""
    if _FARM_POOL.farm is not None and item.module.__name__ not in _FARM_MODULES:
        _FARM_POOL.release()


_FARM_MODULES: set[str] = set()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Test modules that use a farm run one after another, grouped by the farm they ask for
    (SQLite first, then PostgreSQL + S3, then modules with settings of their own), where the
    first of them was; every other test keeps its place and order."""
    keys = {id(item): _farm_key(item) for item in items}
    module_key: dict[str, tuple] = {}
    for item in items:
        if keys[id(item)] is not None:
            module_key.setdefault(item.module.__name__, keys[id(item)])
    _FARM_MODULES.clear()
    _FARM_MODULES.update(module_key)
    if not module_key:
        return

    def rank(key: tuple) -> tuple:
        backend, own = key
        return (own != "", list(BACKENDS).index(backend), own)

    block = [item for item in items if item.module.__name__ in module_key]
    first = next(i for i, item in enumerate(items) if item.module.__name__ in module_key)
    order = {id(item): i for i, item in enumerate(items)}
    block.sort(key=lambda item: (rank(keys[id(item)] or module_key[item.module.__name__]),
                                 order[id(item)]))
    rest = [item for item in items if item.module.__name__ not in module_key]
    items[:] = rest[:first] + block + rest[first:]


def _deselect_by_backend(config, items):
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
