"""Campaign shapes (spec 000 ``Campaign``, spec 001 stats)."""

from __future__ import annotations

from enum import Enum

from coordinator.schemas.common import (CamelModel, PartialUpdate, Id, LongText, Name, RequestModel,
                                        Timestamps)


class CampaignStatus(str, Enum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    ARCHIVED = "archived"


class CampaignCreate(RequestModel):
    client_id: Id
    name: Name
    goal: LongText = ""
    status: CampaignStatus = CampaignStatus.DRAFT
    brief: LongText = ""


class CampaignUpdate(PartialUpdate):
    """Only the fields sent are changed. A campaign cannot move to another client: ``clientId``
    is accepted only when it names the campaign's own client."""

    client_id: Id | None = None
    name: Name | None = None
    goal: LongText | None = None
    status: CampaignStatus | None = None
    brief: LongText | None = None


class CampaignOut(Timestamps):
    id: str
    client_id: str
    name: str
    goal: str
    status: str
    brief: str


class CampaignStats(CamelModel):
    video_count: int
    total_spend: float
    avg_cost: float
