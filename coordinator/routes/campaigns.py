"""``/api/v3/campaigns``: a client's campaigns, which jobs and assets can belong to."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from coordinator.crud import campaigns as crud
from coordinator.deps import CurrentUser, OwnedCampaign, PageDep, SessionDep, StoreDep
from coordinator.envelope import Envelope, ok
from coordinator.schemas.campaigns import CampaignCreate, CampaignOut, CampaignStats, CampaignUpdate
from coordinator.schemas.common import Message

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


def _out(campaign) -> dict:  # noqa: ANN001
    return CampaignOut.model_validate(campaign).model_dump(mode="json", by_alias=True)


@router.get("", response_model=Envelope[list[CampaignOut]])
async def list_campaigns(session: SessionDep, user: CurrentUser, page: PageDep,
                         client_id: Annotated[str | None, Query(max_length=64)] = None):
    rows, total = await crud.list_campaigns(session=session, owner=user, page=page,
                                            client_id=client_id)
    return ok([_out(row) for row in rows], page=page.number, total=total)


@router.post("", response_model=Envelope[CampaignOut], status_code=201)
async def create_campaign(body: CampaignCreate, session: SessionDep, user: CurrentUser):
    return ok(_out(await crud.create_campaign(session=session, data=body, owner=user)))


@router.get("/{campaign_id}", response_model=Envelope[CampaignOut])
async def get_campaign(campaign: OwnedCampaign):
    return ok(_out(campaign))


@router.put("/{campaign_id}", response_model=Envelope[CampaignOut])
async def update_campaign(body: CampaignUpdate, campaign: OwnedCampaign, session: SessionDep):
    return ok(_out(await crud.update_campaign(session=session, campaign=campaign, data=body)))


@router.delete("/{campaign_id}", response_model=Envelope[Message])
async def delete_campaign(campaign: OwnedCampaign, session: SessionDep, store: StoreDep):
    """Deletes the campaign with its assets (and their bytes) and jobs. Refused with 409
    while one of its jobs is still processing."""
    await crud.delete_campaign(session=session, store=store, campaign=campaign)
    return ok({"message": "Campaign deleted successfully"})


@router.get("/{campaign_id}/stats", response_model=Envelope[CampaignStats])
async def campaign_stats(campaign: OwnedCampaign, session: SessionDep):
    stats = await crud.campaign_stats(session=session, campaign=campaign)
    return ok(stats.model_dump(by_alias=True))
