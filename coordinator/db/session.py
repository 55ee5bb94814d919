"""The async engine and session factory (aiosqlite locally, psycopg 3 on PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from coordinator.settings import Settings


def make_engine(settings: Settings, *, pool_size: int = 10) -> AsyncEngine:
    """``pool_size`` bounds PostgreSQL connections: job actors (one engine each) take few."""
    url = settings.async_database_url
    if url.startswith("sqlite"):
        settings.renderfarm_home.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_pragmas(engine)
    else:
        engine = create_async_engine(url, pool_pre_ping=True, pool_size=pool_size,
                                     max_overflow=pool_size)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    # Foreign keys are off by default in SQLite; WAL lets the API read while a job actor writes.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
