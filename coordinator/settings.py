"""Service settings, read once from the environment.

Everything has a local default so a laptop needs no configuration: state lives under
``RENDERFARM_HOME`` (a SQLite file, an object-store directory and the auth secret). Setting
``DATABASE_URL`` or ``S3_BUCKET`` switches to the production parts.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing import Annotated


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    renderfarm_home: Path = Path(".renderfarm")
    # Where model weights (and the tiny preset's generated pipelines) are kept.
    renderfarm_models_dir: Path | None = None
    # The preset of jobs that name none. Unset: decided where the renderers run (serve_app).
    renderfarm_default_preset: str | None = None

    # Database: SQLite under RENDERFARM_HOME unless DATABASE_URL names PostgreSQL.
    database_url: str | None = None

    # Object store: a local directory unless S3_BUCKET is set.
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_presign_expiry_seconds: int = Field(default=900, ge=60, le=7 * 24 * 3600)

    # Auth: HS256 with a local secret by default; RS256 through a JWKS URL for an external IdP.
    auth_secret: str | None = None
    auth_jwks_url: str | None = None
    auth_issuer: str | None = None
    auth_audience: str | None = None
    auth_token_ttl_seconds: int = 7 * 24 * 3600

    # Browser frontends on other origins.
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000", "http://127.0.0.1:3000"]

    # Absolute prefix for URLs we hand out (asset data, videos); relative when empty.
    public_base_url: str = ""

    # Limits.
    max_json_body_kb: int = Field(default=1024, ge=1)
    max_upload_size_mb: int = Field(default=100, ge=1)
    max_asset_download_size_mb: int = Field(default=100, ge=1)
    url_import_timeout_seconds: float = Field(default=20.0, gt=0)
    url_import_max_redirects: int = Field(default=5, ge=0, le=20)
    # Networks an operator trusts for URL import despite being non-public (e.g. an internal CDN).
    url_import_allow_networks: Annotated[list[str], NoDecode] = []
    # Image assets, checked from the header at upload and when a job uses one (a few KB of PNG
    # can declare a canvas that takes gigabytes to decode). 100 MP is Pillow's ceiling here.
    max_image_pixels: int = Field(default=40_000_000, ge=1, le=100_000_000)
    max_image_side: int = Field(default=12_000, ge=1)
    max_image_frames: int = Field(default=300, ge=1)  # animated GIF, WebP, PNG

    # Storyboard planner: OpenAI (or any compatible server) when a key is set, offline otherwise.
    ai_api_key: str | None = None
    ai_model: str = "gpt-4o-mini"
    ai_base_url: str | None = None
    ai_timeout_seconds: float = Field(default=60.0, gt=0)

    # Prices for cost quotes and actual cost (USD by default).
    price_currency: str = "USD"
    price_llm_per_1k_tokens: float = Field(default=0.002, ge=0)
    price_llm_estimated_tokens: int = Field(default=2500, ge=0)  # one storyboard, for quotes
    price_image_per_gpu_second: float = Field(default=0.0012, ge=0)
    price_clip_per_gpu_second: float = Field(default=0.0012, ge=0)
    price_composite_per_second: float = Field(default=0.0001, ge=0)
    estimated_composite_seconds_per_scene: float = Field(default=1.0, ge=0)

    # Requests per minute per user (per API replica), spec 002's rate limit.
    rate_limit_per_minute: int = Field(default=600, ge=1)
    # Progress streams (WebSocket + SSE) a user may hold open at once on one API replica.
    max_streams_per_user: int = Field(default=20, ge=1, le=10_000)

    # Jobs.
    max_active_jobs_per_user: int = Field(default=3, ge=1)
    render_timeout_seconds: float = Field(default=900.0, gt=0)  # from when a renderer starts
    # How long renderer work may wait for a worker that is coming (an autoscaling GPU node).
    capacity_wait_seconds: float = Field(default=1800.0, gt=0)
    # Whether the cluster has an autoscaler that can add nodes (cluster.yaml sets it): without
    # one, work no node can ever hold fails at once instead of waiting for capacity_wait_seconds.
    renderfarm_autoscaling: bool = False
    # Job hosts each API replica keeps idle at least, so a new or approved job starts at once
    # instead of waiting for a worker process (hosts return to the pool after each job; beyond
    # this number, idle ones end after 10 minutes).
    renderfarm_warm_job_hosts: int = Field(default=2, ge=0, le=64)
    # Benchmarks only (bench/job_start.py): autoApprove jobs render every image before any
    # clip, as they did before clips started per scene. Never set it in production.
    renderfarm_auto_approve_barrier: bool = False
    ffmpeg_timeout_seconds: float = Field(default=600.0, gt=0)

    # Webhooks (coordinator.webhooks). A receiver must be public and https, unless it is inside
    # one of these operator-trusted networks (then http is allowed too), e.g. 127.0.0.0/8 in tests.
    webhook_allow_networks: Annotated[list[str], NoDecode] = []
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)  # one attempt
    # Attempt n+1 waits base * 2**(n-1) after attempt n fails: with the defaults, 30 s, 1 min,
    # 2 min, ... so the 10th and last attempt comes about 4.3 hours after the first.
    webhook_retry_base_seconds: float = Field(default=30.0, gt=0)
    webhook_max_attempts: int = Field(default=10, ge=1, le=20)
    # After a secret rotation the old secret keeps signing (beside the new one) this long.
    webhook_secret_grace_seconds: int = Field(default=24 * 3600, ge=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)  # how often a replica looks for due deliveries

    @field_validator("cors_origins", "url_import_allow_networks", "webhook_allow_networks",
                     mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("renderfarm_home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("public_base_url", mode="after")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    # ---- derived values -------------------------------------------------------------------

    @property
    def objects_dir(self) -> Path:
        return self.renderfarm_home / "objects"

    @property
    def models_dir(self) -> Path:
        return self.renderfarm_models_dir or self.renderfarm_home / "models"

    @property
    def async_database_url(self) -> str:
        """The URL SQLAlchemy's async engine uses (aiosqlite or psycopg 3)."""
        return _driver_url(self.database_url, async_=True) if self.database_url else (
            f"sqlite+aiosqlite:///{self.renderfarm_home / 'renderfarm.db'}"
        )

    @property
    def sync_database_url(self) -> str:
        """The URL Alembic's synchronous engine uses."""
        return _driver_url(self.database_url, async_=False) if self.database_url else (
            f"sqlite:///{self.renderfarm_home / 'renderfarm.db'}"
        )

    @cached_property
    def jwt_secret(self) -> str:
        """The HS256 signing secret: configured, or generated once under RENDERFARM_HOME."""
        if self.auth_secret:
            return self.auth_secret
        path = self.renderfarm_home / "auth_secret"
        if not path.exists():
            self.renderfarm_home.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes starting at once must agree on one secret.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def check_production_safety(self) -> None:
        """Refuse defaults that are only fit for a laptop."""
        if self.environment != "production":
            return
        problems = []
        if not self.database_url:
            problems.append("DATABASE_URL must name PostgreSQL in production")
        if not self.s3_bucket:
            problems.append("S3_BUCKET must be set in production")
        if not (self.auth_secret or self.auth_jwks_url):
            problems.append("AUTH_SECRET or AUTH_JWKS_URL must be set in production")
        if self.auth_jwks_url and not (self.auth_issuer and self.auth_audience):
            # Otherwise a token the provider issued for another application would pass here.
            problems.append("AUTH_ISSUER and AUTH_AUDIENCE must be set with AUTH_JWKS_URL")
        if problems:
            raise RuntimeError("; ".join(problems))


def _driver_url(url: str, *, async_: bool) -> str:
    """Pin the driver: psycopg 3 for PostgreSQL, aiosqlite/pysqlite for SQLite."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("DATABASE_URL must look like postgresql://user:pass@host/db")
    base = scheme.split("+", 1)[0]
    if base in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}" if async_ else f"sqlite://{rest}"
    raise ValueError(f"unsupported DATABASE_URL scheme {scheme!r}: use postgresql:// or sqlite://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
