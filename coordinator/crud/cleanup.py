"""Which stored objects go away with a row: cascades delete rows, this finds their bytes."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from coordinator.db.models import Asset, Job
from coordinator.storage import ObjectStore

log = logging.getLogger(__name__)


def job_prefix(job_id: str) -> str:
    """Every object of a job (scene images and clips of every version, the video) lives here."""
    return f"jobs/{job_id}/"


async def object_keys_for(session: AsyncSession, *, client_id: str | None = None,
                          campaign_id: str | None = None) -> list[str]:
    """The asset keys and job prefixes under a client (or a campaign). Prefixes rather than
    recorded keys, so an artifact written but never recorded (a render that landed after a
    cancel) goes too."""
    asset_filter = Asset.client_id == client_id if client_id else Asset.campaign_id == campaign_id
    job_filter = Job.client_id == client_id if client_id else Job.campaign_id == campaign_id
    keys = list((await session.scalars(select(Asset.storage_key).where(asset_filter))).all())
    keys += [job_prefix(job_id) for job_id in (await session.scalars(select(Job.id).where(job_filter))).all()]
    return keys


async def delete_objects(store: ObjectStore, keys: list[str]) -> None:
    """Best effort after the rows are gone: a leftover object is invisible, a dangling row is not.
    A key ending in ``/`` is a prefix."""
    def _delete_all() -> None:
        for key in keys:
            try:
                store.delete_prefix(key) if key.endswith("/") else store.delete(key)
            except Exception:  # keep deleting the rest; operators see the log line
                log.exception("could not delete object %s", key)

    if keys:
        await run_in_threadpool(_delete_all)
