"""Asset shapes (spec 000 ``Asset``; spec 003 import from URL)."""

from __future__ import annotations

from enum import Enum

from pydantic import AnyUrl, Field, StringConstraints, UrlConstraints
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


class CharacterReferenceCreate(RequestModel):
    """``POST /assets/character-reference`` (spec 004's ``{character_description}``, in v3
    camelCase): a product or character image rendered from a description, kept as an asset."""

    character_description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                            max_length=1000)]
    name: Name | None = None
    preset: Annotated[str, Field(max_length=64)] | None = None  # spec 004's config_flavor
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    client_id: Id | None = None
    campaign_id: Id | None = None
    tags: list[ShortText] = Field(default_factory=list, max_length=50)
