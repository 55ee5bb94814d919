"""Asset shapes (spec 000 ``Asset``; spec 003 import from URL)."""

from __future__ import annotations

from enum import Enum

from pydantic import AnyUrl, Field, UrlConstraints
from typing import Annotated

from coordinator.schemas.common import Id, Name, RequestModel, ShortText, Timestamps


class AssetType(str, Enum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"


class AssetOut(Timestamps):
    id: str
    name: str
    type: AssetType
    url: str
    format: str
    size: int
    tags: list[str] = Field(default_factory=list)
    client_id: str | None = None
    campaign_id: str | None = None


ImportUrl = Annotated[AnyUrl, UrlConstraints(max_length=2048)]


class AssetFromUrl(RequestModel):
    url: ImportUrl
    name: Name | None = None
    type: AssetType | None = None
    client_id: Id | None = None
    campaign_id: Id | None = None
    tags: list[ShortText] = Field(default_factory=list, max_length=50)
