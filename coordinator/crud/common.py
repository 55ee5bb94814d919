"""Helpers shared by the resource modules: paging a query and applying partial updates."""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.deps import Page

RowT = TypeVar("RowT")


async def fetch_page(session: AsyncSession, query: Select[Any], page: Page,
                     *order_by: Any) -> tuple[Sequence[Any], int]:
    """One page of ``query`` (newest first unless told otherwise) and the total row count."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = (await session.scalars(query.order_by(*order_by).limit(page.limit).offset(page.offset))).all()
    return rows, int(total or 0)


def apply_update(row: RowT, update: BaseModel) -> RowT:
    """Copy the fields the client actually sent (PUT with partial bodies is accepted)."""
    for field in update.model_fields_set:
        value = getattr(update, field)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", by_alias=True, exclude_none=True)
        setattr(row, field, value)
    return row
