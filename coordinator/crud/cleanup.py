"""Which stored objects go away with a row: cascades delete rows, this finds their bytes."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from coordinator.db.models import Asset, Job, Scene
from coordinator.storage import ObjectStore

log = logging.getLogger(__name__)


async def object_keys_for(session: AsyncSession, *, client_id: str | None = None,
                          campaign_id: str | None = None) -> list[str]:
    """Every object key owned by the client's (or the campaign's) assets and jobs."""
    asset_filter = Asset.client_id == client_id if client_id else Asset.campaign_id == campaign_id
    job_filter = Job.client_id == client_id if client_id else Job.campaign_id == campaign_id
    keys = list((await session.scalars(select(Asset.storage_key).where(asset_filter))).all())
    jobs = (await session.execute(select(Job.video_key, Job.thumbnail_key).where(job_filter))).all()
    keys += [key for row in jobs for key in row if key]
    scenes = (await session.execute(
        select(Scene.image_key, Scene.clip_key).join(Job, Job.id == Scene.job_id).where(job_filter)
    )).all()
    keys += [key for row in scenes for key in row if key]
    return keys


async def delete_objects(store: ObjectStore, keys: list[str]) -> None:
    """Best effort after the rows are gone: a leftover object is invisible, a dangling row is not."""
    def _delete_all() -> None:
        for key in keys:
            try:
                store.delete(key)
            except Exception:  # keep deleting the rest; operators see the log line
                log.exception("could not delete object %s", key)

    if keys:
        await run_in_threadpool(_delete_all)

