"""Clients: create, list, update, delete (cascading), stats."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.crud.cleanup import delete_objects, object_keys_for
from coordinator.crud.common import apply_update, fetch_page
from coordinator.db.models import Campaign, Client, Job, Scene
from coordinator.deps import Page
from coordinator.envelope import APIError
from coordinator.job_states import PROCESSING, JobStatus, SceneStatus
from coordinator.schemas.clients import ClientCreate, ClientStats, ClientUpdate
from coordinator.storage import ObjectStore


async def create_client(*, session: AsyncSession, data: ClientCreate, owner: str) -> Client:
    client = Client(owner_id=owner, name=data.name, description=data.description,
                    brand_guidelines=data.brand_guidelines.model_dump(mode="json", by_alias=True,
                                                                      exclude_none=True)
                    if data.brand_guidelines else None)
    session.add(client)
    await session.commit()
    return client


async def list_clients(*, session: AsyncSession, owner: str, page: Page) -> tuple[list[Client], int]:
    query = select(Client).where(Client.owner_id == owner)
    rows, total = await fetch_page(session, query, page, Client.created_at.desc(), Client.id)
    return list(rows), total


async def update_client(*, session: AsyncSession, client: Client, data: ClientUpdate) -> Client:
    apply_update(client, data)
    await session.commit()
    await session.refresh(client)
    return client


async def refuse_if_rendering(session: AsyncSession, *where: object, what: str) -> None:
    """Rows with a job still rendering (a scene regeneration included) are not deleted from
    under it."""
    regenerating = select(Scene.job_id).where(Scene.status == SceneStatus.REGENERATING.value)
    busy = await session.scalar(select(func.count()).select_from(Job).where(
        *where, or_(Job.status.in_([status.value for status in PROCESSING]),
                    # Only a job under review regenerates; a finished job's scene row is history.
                    (Job.status == JobStatus.STORYBOARD_READY.value) & Job.id.in_(regenerating))))
    if busy:
        raise APIError(409, f"The {what} has {busy} job(s) still processing; cancel them first",
                       "jobs_in_progress")


async def delete_client(*, session: AsyncSession, store: ObjectStore, client: Client) -> None:
    """Deletes the client with its campaigns, assets and jobs, and their stored bytes."""
    await refuse_if_rendering(session, Job.client_id == client.id, what="client")
    keys = await object_keys_for(session, client_id=client.id)
    await session.delete(client)
    await session.commit()
    await delete_objects(store, keys)


async def client_stats(*, session: AsyncSession, client: Client) -> ClientStats:
    campaigns = await session.scalar(
        select(func.count()).select_from(Campaign).where(Campaign.client_id == client.id))
    videos, spend = (await session.execute(
        select(func.count(), func.coalesce(func.sum(Job.actual_cost), 0.0)).where(
            Job.client_id == client.id, Job.status == JobStatus.COMPLETED.value))).one()
    return ClientStats(campaign_count=int(campaigns or 0), video_count=int(videos),
                       total_spend=round(float(spend), 6))
