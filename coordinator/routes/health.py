"""``GET /health``: liveness plus a database round trip, without auth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import text

from coordinator.envelope import APIError, ok

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request):
    try:
        async with request.app.state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        raise APIError(503, "Database unreachable", "database_unavailable") from exc
    settings = request.app.state.settings
    return ok({"status": "healthy", "version": request.app.version,
               "environment": settings.environment,
               "database": "postgresql" if settings.database_url else "sqlite",
               "objectStore": "s3" if settings.s3_bucket else "local"})
