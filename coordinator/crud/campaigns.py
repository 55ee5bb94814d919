"""Campaigns: create (under one of the caller's clients), list, update, delete, stats."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.crud.cleanup import delete_objects, object_keys_for
from coordinator.crud.clients import refuse_if_rendering
from coordinator.crud.common import apply_update, fetch_page
from coordinator.db.models import Campaign, Client, Job
from coordinator.deps import Page
from coordinator.envelope import APIError
from coordinator.job_states import JobStatus
from coordinator.schemas.campaigns import CampaignCreate, CampaignStats, CampaignUpdate
from coordinator.storage import ObjectStore


async def require_own_client(session: AsyncSession, client_id: str, owner: str) -> Client:
    """A referenced client must exist and be the caller's; a body reference is a 400, not 404."""
    client = await session.scalar(
        select(Client).where(Client.id == client_id, Client.owner_id == owner))
    if client is None:
        raise APIError(400, f"clientId: no client {client_id!r} among your clients",
                       "unknown_client")
    return client


async def require_own_campaign(session: AsyncSession, campaign_id: str, owner: str,
                               client_id: str | None = None) -> Campaign:
    campaign = await session.scalar(
        select(Campaign).where(Campaign.id == campaign_id, Campaign.owner_id == owner))
    if campaign is None:
        raise APIError(400, f"campaignId: no campaign {campaign_id!r} among your campaigns",
                       "unknown_campaign")
    if client_id is not None and campaign.client_id != client_id:
        raise APIError(400, "campaignId: the campaign belongs to another client",
                       "campaign_client_mismatch")
    return campaign


async def create_campaign(*, session: AsyncSession, data: CampaignCreate, owner: str) -> Campaign:
    await require_own_client(session, data.client_id, owner)
    campaign = Campaign(owner_id=owner, client_id=data.client_id, name=data.name, goal=data.goal,
                        status=data.status.value, brief=data.brief)
    session.add(campaign)
    await session.commit()
    return campaign


async def list_campaigns(*, session: AsyncSession, owner: str, page: Page,
                         client_id: str | None) -> tuple[list[Campaign], int]:
    query = select(Campaign).where(Campaign.owner_id == owner)
    if client_id is not None:
        query = query.where(Campaign.client_id == client_id)
    rows, total = await fetch_page(session, query, page, Campaign.created_at.desc(), Campaign.id)
    return list(rows), total


async def update_campaign(*, session: AsyncSession, campaign: Campaign,
                          data: CampaignUpdate) -> Campaign:
    if "client_id" in data.model_fields_set and data.client_id != campaign.client_id:
        # One answer for every other id, so it tells nothing about whose ids exist.
        raise APIError(400, "clientId: a campaign cannot move to another client; create a "
                       "campaign under that client instead", "campaign_client_immutable")
    apply_update(campaign, data)
    if "status" in data.model_fields_set and data.status is not None:
        campaign.status = data.status.value
    await session.commit()
    await session.refresh(campaign)
    return campaign


async def delete_campaign(*, session: AsyncSession, store: ObjectStore, campaign: Campaign) -> None:
    """Deletes the campaign with its assets and jobs, and their stored bytes."""
    await refuse_if_rendering(session, Job.campaign_id == campaign.id, what="campaign")
    keys = await object_keys_for(session, campaign_id=campaign.id)
    await session.delete(campaign)
    await session.commit()
    await delete_objects(store, keys)


async def campaign_stats(*, session: AsyncSession, campaign: Campaign) -> CampaignStats:
    videos, spend = (await session.execute(
        select(func.count(), func.coalesce(func.sum(Job.actual_cost), 0.0)).where(
            Job.campaign_id == campaign.id, Job.status == JobStatus.COMPLETED.value))).one()
    videos, spend = int(videos), float(spend)
    return CampaignStats(video_count=videos, total_spend=round(spend, 6),
                         avg_cost=round(spend / videos, 6) if videos else 0.0)
