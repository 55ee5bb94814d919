"""Sends due deliveries and retries failed ones, from every API replica.

Each replica polls for deliveries that are due; it claims one with a conditional UPDATE (on
the attempt count it read), so of several replicas exactly one sends each attempt. The claim
also moves ``next_attempt_at`` a lease ahead: if the replica dies mid-attempt, the delivery is
due again when the lease ends. A 2xx answer succeeds; anything else (3xx included, or no
answer within ``webhook_timeout_seconds``) fails the attempt, and the next one waits
``webhook_retry_base_seconds * 2**(attempts - 1)``, up to ``webhook_max_attempts``."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from coordinator.db.base import utcnow
from coordinator.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from coordinator.envelope import APIError
from coordinator.settings import Settings
from coordinator.webhooks.outbox import FAILED, PENDING, SUCCEEDED
from coordinator.webhooks.signing import signature_headers
from coordinator.webhooks.target import post, resolve_target

log = logging.getLogger(__name__)

BATCH = 20
MAX_ERROR_CHARS = 500


def retry_delay(settings: Settings, attempts_made: int) -> float:
    """Seconds between attempt ``attempts_made`` failing and the next one."""
    return settings.webhook_retry_base_seconds * 2 ** (attempts_made - 1)


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The current secret, and the previous one while its grace period lasts."""
    secrets_ = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)  # SQLite hands it back naive (UTC)
    if endpoint.previous_secret and expires is not None and expires > now:
        secrets_.append(endpoint.previous_secret)
    return secrets_


async def _claim(session: AsyncSession, delivery: WebhookDelivery, lease: timedelta) -> bool:
    now = utcnow()
    result = await session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id == delivery.id, WebhookDelivery.status == PENDING,
        WebhookDelivery.attempt_count == delivery.attempt_count,
        WebhookDelivery.next_attempt_at <= now,
    ).values(attempt_count=delivery.attempt_count + 1, next_attempt_at=now + lease,
             updated_at=now).execution_options(synchronize_session=False))
    await session.commit()
    return result.rowcount == 1


async def _attempt(settings: Settings, url: str, secrets_: list[str], message_id: str,
                   body: str) -> tuple[int | None, str | None]:
    """One POST: (status code or None, error or None)."""
    headers = signature_headers(secrets_, message_id, int(time.time()), body)
    try:
        async with asyncio.timeout(settings.webhook_timeout_seconds):
            target = await resolve_target(url, settings.webhook_allow_networks)
            async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                         timeout=settings.webhook_timeout_seconds) as client:
                response = await post(client, target, body, headers)
    except APIError as refused:
        return None, refused.message
    except (TimeoutError, httpx.TimeoutException):
        return None, f"No answer within {settings.webhook_timeout_seconds:g} seconds"
    except httpx.HTTPError as exc:
        return None, f"Connection failed: {exc}"[:MAX_ERROR_CHARS]
    if response.is_success:
        return response.status_code, None
    return response.status_code, f"The receiver answered HTTP {response.status_code}"


async def deliver(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                  delivery_id: str) -> None:
    """Claims the delivery, makes one attempt and records it (or does nothing when another
    replica claimed it first)."""
    lease = timedelta(seconds=settings.webhook_timeout_seconds * 2 + 30)
    async with sessions() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None or not await _claim(session, delivery, lease):
            return
        await session.refresh(delivery)
        endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
        if endpoint is None:
            return  # deleted meanwhile (its deliveries went with it)
        attempt, url, body = delivery.attempt_count, endpoint.url, delivery.payload
        secrets_ = signing_secrets(endpoint, utcnow())
        await session.commit()  # hold no connection while the receiver answers
        started = utcnow()
        status_code, error = await _attempt(settings, url, secrets_, delivery_id, body)
        finished = utcnow()
        if error is None:
            status, next_at = SUCCEEDED, None
        elif attempt >= settings.webhook_max_attempts:
            status, next_at = FAILED, None
        else:
            status, next_at = PENDING, finished + timedelta(seconds=retry_delay(settings, attempt))
        try:
            session.add(WebhookAttempt(delivery_id=delivery_id, attempt=attempt, started_at=started,
                                       finished_at=finished, status_code=status_code, error=error))
            await session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.attempt_count == attempt,
            ).values(status=status, next_attempt_at=next_at, updated_at=finished))
            await session.commit()
        except SQLAlchemyError:
            # The endpoint (and so this delivery) was deleted while we sent: nothing to record.
            await session.rollback()


async def due_deliveries(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= utcnow())
            .order_by(WebhookDelivery.next_attempt_at).limit(BATCH))
        return list(rows.all())


async def run_sender(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Forever: send what is due, then wait ``webhook_poll_seconds``. A database outage or a
    bug in one round is logged and the next round tries again."""
    while True:
        try:
            due = await due_deliveries(sessions)
            results = await asyncio.gather(*(deliver(sessions, settings, delivery_id)
                                             for delivery_id in due), return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.warning("webhook delivery failed unexpectedly", exc_info=result)
        except (SQLAlchemyError, OSError):
            log.warning("webhook sender could not read due deliveries", exc_info=True)
        await asyncio.sleep(settings.webhook_poll_seconds)
