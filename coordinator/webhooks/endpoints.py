"""Webhook endpoints and their deliveries in the database: plain functions, the session owned
by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.crud.common import fetch_page
from coordinator.db.base import utcnow
from coordinator.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from coordinator.deps import Page
from coordinator.webhooks.signing import new_secret


async def create_endpoint(*, session: AsyncSession, owner: str, url: str, client_id: str | None,
                          events: list[str], description: str | None,
                          jobs_only: bool = False) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(owner_id=owner, url=url, client_id=client_id, events=events,
                               description=description, jobs_only=jobs_only,
                               secret=new_secret())
    session.add(endpoint)
    await session.commit()
    return endpoint


async def list_endpoints(*, session: AsyncSession, owner: str,
                         page: Page) -> tuple[Sequence[WebhookEndpoint], int]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.owner_id == owner)
    return await fetch_page(session, query, page, WebhookEndpoint.created_at.desc(),
                            WebhookEndpoint.id)


async def rotate_secret(*, session: AsyncSession, endpoint: WebhookEndpoint,
                        grace_seconds: int) -> WebhookEndpoint:
    """A new secret signs from now on; the old one signs too for ``grace_seconds`` more (not at
    all when 0), so a receiver can switch over without dropping an event."""
    endpoint.previous_secret = endpoint.secret if grace_seconds else None
    endpoint.previous_secret_expires_at = (utcnow() + timedelta(seconds=grace_seconds)
                                           if grace_seconds else None)
    endpoint.secret = new_secret()
    await session.commit()
    await session.refresh(endpoint)
    return endpoint


async def list_deliveries(*, session: AsyncSession, endpoint: WebhookEndpoint, page: Page,
                          ) -> tuple[list[tuple[WebhookDelivery, list[WebhookAttempt]]], int]:
    """The endpoint's deliveries, newest first, each with its attempts in order."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    deliveries, total = await fetch_page(session, query, page, WebhookDelivery.created_at.desc(),
                                         WebhookDelivery.id)
    attempts: dict[str, list[WebhookAttempt]] = {delivery.id: [] for delivery in deliveries}
    if attempts:
        rows = await session.scalars(select(WebhookAttempt).where(
            WebhookAttempt.delivery_id.in_(list(attempts))).order_by(WebhookAttempt.attempt))
        for row in rows:
            attempts[row.delivery_id].append(row)
    return [(delivery, attempts[delivery.id]) for delivery in deliveries], total
