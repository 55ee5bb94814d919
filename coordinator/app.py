"""Builds the FastAPI application. The same app runs under Ray Serve (``serve_app.py``) and,
for fast tests, under plain uvicorn; the render side arrives as an optional ``JobRunner``."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware

from coordinator.auth import TokenVerifier
from coordinator.body_limit import BodySizeLimit
from coordinator.db.migrate import upgrade_database
from coordinator.db.session import make_engine, make_sessionmaker
from coordinator.deps import refuse_nul_text
from coordinator.envelope import UnhandledErrors, install_error_handlers
from coordinator.openapi import install_openapi
from coordinator.rate_limit import RateLimiter
from coordinator.stream_slots import StreamSlots
from coordinator.routes import assets, campaigns, clients, health, job_events, jobs, scenes
from coordinator.routes import presets
from coordinator.routes import webhooks
from coordinator.settings import Settings, get_settings
from coordinator.storage import make_object_store
from coordinator.webhooks.sender import run_sender

API_PREFIX = "/api/v3"
VERSION = "3.0.0"
MB = 1024 * 1024


def create_app(settings: Settings | None = None, *, job_runner: Any = None,
               migrate: bool = True) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production_safety()
    if migrate:
        upgrade_database(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Keep every unfinished job driven by a live actor (also resumes orphans at start-up).
        supervisor = None
        if job_runner is not None and hasattr(job_runner, "supervise"):
            supervisor = asyncio.create_task(job_runner.supervise(app.state.sessionmaker))
        # Every replica sends due webhook deliveries (claimed one at a time, so never twice).
        webhook_sender = asyncio.create_task(run_sender(app.state.sessionmaker, settings))
        yield
        if supervisor:
            supervisor.cancel()
        webhook_sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await webhook_sender  # off the database before the engine goes
        await app.state.engine.dispose()

    app = FastAPI(title="Render farm API", version=VERSION, lifespan=lifespan,
                  description="The v3 REST API of the AI video-ad render farm.",
                  dependencies=[Depends(refuse_nul_text)])  # before any route reads its input
    engine = make_engine(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.object_store = make_object_store(settings)
    app.state.token_verifier = TokenVerifier(settings)
    app.state.job_runner = job_runner
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, engine)
    app.state.stream_slots = StreamSlots(settings.max_streams_per_user)

    install_error_handlers(app)
    install_openapi(app)

    @app.middleware("http")
    async def rate_limit_headers(request: Request, call_next):  # noqa: ANN202
        response = await call_next(request)
        response.headers.update(getattr(request.state, "rate_limit_headers", {}))
        return response

    # Added innermost first. CORS is outermost, so every answer, errors included (413 from the
    # body limit, 500 from UnhandledErrors), carries its headers for an allowed Origin.
    app.add_middleware(BodySizeLimit, default_limit=settings.max_json_body_kb * 1024,
                       route_limits={("POST", f"{API_PREFIX}/assets"): settings.max_upload_size_mb * MB})
    app.add_middleware(UnhandledErrors)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=True,  # the `token` cookie
        allow_methods=["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Range", "If-None-Match"],
        expose_headers=["Content-Range", "Accept-Ranges", "Content-Length", "ETag",
                        "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                        "Retry-After"],
    )

    app.include_router(health.router)
    for module in (clients, campaigns, assets, jobs, scenes, job_events, webhooks):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(assets.upload_router, prefix=API_PREFIX)
    app.include_router(presets.router, prefix=API_PREFIX)
    return app
