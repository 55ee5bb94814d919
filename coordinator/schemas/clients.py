"""Client shapes (spec 000 ``Client``, spec 001 stats)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from coordinator.schemas.common import (CamelModel, PartialUpdate, LongText, Name, RequestModel,
                                        ShortText, Timestamps)

_HEX_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def _hex_color(value: str) -> str:
    # Brand colours paint the call-to-action card, so they must be colours ffmpeg understands.
    if not _HEX_COLOR.match(value):
        raise ValueError("colors must be hex colours like '#1a2b3c'")
    return value.lower()


# The pattern is declared too, so the OpenAPI document states the rule the validator enforces.
HexColor = Annotated[str, AfterValidator(_hex_color),
                     Field(json_schema_extra={"pattern": _HEX_COLOR.pattern})]


class BrandGuidelines(RequestModel):
    colors: list[HexColor] | None = Field(default=None, max_length=20)
    fonts: list[ShortText] | None = Field(default=None, max_length=20)
    tone: ShortText | None = None
    restrictions: list[ShortText] | None = Field(default=None, max_length=50)
    examples: list[ShortText] | None = Field(default=None, max_length=50)


class ClientCreate(RequestModel):
    name: Name
    description: LongText | None = None
    brand_guidelines: BrandGuidelines | None = None


class ClientUpdate(PartialUpdate):
    """Only the fields sent are changed."""

    NULLABLE = frozenset({"description", "brand_guidelines"})

    name: Name | None = None
    description: LongText | None = None
    brand_guidelines: BrandGuidelines | None = None


class ClientOut(Timestamps):
    id: str
    name: str
    description: str | None = None
    brand_guidelines: BrandGuidelines | None = None


class ClientStats(CamelModel):
    campaign_count: int
    video_count: int
    total_spend: float
