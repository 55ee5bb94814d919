"""``/api/v3/webhooks``: endpoints the owner's job events are POSTed to (signed as Standard
Webhooks say), their secret rotation, and the record of every delivery attempt."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from coordinator.crud.common import apply_update
from coordinator.db.models import Client, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from coordinator.deps import CurrentUser, PageDep, SessionDep, SettingsDep, get_owned
from coordinator.envelope import Envelope, ok
from coordinator.schemas.common import Message
from coordinator.schemas.webhooks import (WebhookAttemptOut, WebhookCreate, WebhookDeliveryOut,
                                          WebhookOut, WebhookUpdate)
from coordinator.webhooks import endpoints as crud
from coordinator.webhooks.target import resolve_target

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def _owned_webhook(webhook_id: str, session: SessionDep, user: CurrentUser) -> WebhookEndpoint:
    return await get_owned(session, WebhookEndpoint, webhook_id, user, "Webhook")


OwnedWebhook = Annotated[WebhookEndpoint, Depends(_owned_webhook)]


def _out(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    view = WebhookOut.model_validate(endpoint)
    view.secret = endpoint.secret if with_secret else None
    return view.model_dump(mode="json", by_alias=True)


@router.get("", response_model=Envelope[list[WebhookOut]])
async def list_webhooks(session: SessionDep, user: CurrentUser, page: PageDep):
    rows, total = await crud.list_endpoints(session=session, owner=user, page=page)
    return ok([_out(row) for row in rows], page=page.number, total=total)


@router.post("", response_model=Envelope[WebhookOut], status_code=201)
async def create_webhook(body: WebhookCreate, session: SessionDep, user: CurrentUser,
                         settings: SettingsDep):
    """Registers an endpoint. The answer carries its signing ``secret``, shown only here and
    on rotation. The URL must be public https (400 ``url_not_allowed``,
    ``url_scheme_not_allowed``, ``url_invalid``) unless inside ``WEBHOOK_ALLOW_NETWORKS``."""
    if body.client_id is not None:
        await get_owned(session, Client, body.client_id, user, "Client")
    await resolve_target(body.url, settings.webhook_allow_networks)
    endpoint = await crud.create_endpoint(session=session, owner=user, url=body.url,
                                          client_id=body.client_id, events=list(body.events),
                                          description=body.description,
                                          jobs_only=body.jobs_only)
    return ok(_out(endpoint, with_secret=True))


@router.get("/{webhook_id}", response_model=Envelope[WebhookOut])
async def get_webhook(endpoint: OwnedWebhook):
    return ok(_out(endpoint))


@router.put("/{webhook_id}", response_model=Envelope[WebhookOut])
async def update_webhook(body: WebhookUpdate, endpoint: OwnedWebhook, session: SessionDep,
                         settings: SettingsDep):
    if body.url is not None:
        await resolve_target(body.url, settings.webhook_allow_networks)
    apply_update(endpoint, body)
    await session.commit()
    await session.refresh(endpoint)
    return ok(_out(endpoint))


@router.delete("/{webhook_id}", response_model=Envelope[Message])
async def delete_webhook(endpoint: OwnedWebhook, session: SessionDep):
    """Deletes the endpoint with its deliveries; pending ones are not sent."""
    await session.delete(endpoint)
    await session.commit()
    return ok({"message": "Webhook deleted successfully"})


@router.post("/{webhook_id}/rotate-secret", response_model=Envelope[WebhookOut])
async def rotate_webhook_secret(endpoint: OwnedWebhook, session: SessionDep,
                                settings: SettingsDep):
    """A new signing secret (in the answer). The old one keeps signing beside it for
    ``WEBHOOK_SECRET_GRACE_SECONDS`` (24 hours by default; ``previousSecretExpiresAt``)."""
    endpoint = await crud.rotate_secret(session=session, endpoint=endpoint,
                                        grace_seconds=settings.webhook_secret_grace_seconds)
    return ok(_out(endpoint, with_secret=True))


@router.get("/{webhook_id}/deliveries", response_model=Envelope[list[WebhookDeliveryOut]])
async def list_webhook_deliveries(endpoint: OwnedWebhook, session: SessionDep, page: PageDep):
    """Every event sent (or to be sent) to the endpoint, newest first, with its attempts."""
    rows, total = await crud.list_deliveries(session=session, endpoint=endpoint, page=page)
    return ok([_delivery_out(delivery, attempts) for delivery, attempts in rows],
              page=page.number, total=total)


def _delivery_out(delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    view = WebhookDeliveryOut(
        id=delivery.id, event=delivery.event, job_id=delivery.job_id, status=delivery.status,
        attempt_count=delivery.attempt_count, next_attempt_at=delivery.next_attempt_at,
        attempts=[WebhookAttemptOut.model_validate(attempt) for attempt in attempts],
        created_at=delivery.created_at, updated_at=delivery.updated_at)
    return view.model_dump(mode="json", by_alias=True)
