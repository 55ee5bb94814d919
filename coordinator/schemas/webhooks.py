"""Webhook endpoint and delivery shapes (``/api/v3/webhooks``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from coordinator.schemas.common import (CamelModel, Id, LongText, PartialUpdate, RequestModel,
                                        Timestamps, UtcDatetime)
from coordinator.webhooks.outbox import EVENT_TYPES

EventType = Literal["job.storyboard_ready", "job.completed", "job.failed"]
assert set(EventType.__args__) == set(EVENT_TYPES)  # one list of events, stated twice for the schema

WebhookUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
EventList = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]


class WebhookCreate(RequestModel):
    url: WebhookUrl
    # Only this client's jobs notify the endpoint; all the owner's jobs when absent.
    client_id: Id | None = None
    events: EventList = Field(default_factory=lambda: list(EVENT_TYPES))
    description: LongText | None = None
    # Only jobs that name this endpoint (their ``webhookId``) notify it.
    jobs_only: bool = False


class WebhookUpdate(PartialUpdate):
    """Only the fields sent are changed; the client scope is fixed at creation."""

    NULLABLE = frozenset({"description"})

    url: WebhookUrl | None = None
    events: EventList | None = None
    description: LongText | None = None


class WebhookOut(Timestamps):
    id: str
    url: str
    client_id: str | None = None
    events: list[str]
    description: str | None = None
    jobs_only: bool = False
    # The signing secret (whsec_...): shown only when created and when rotated.
    secret: str | None = None
    # Until when the previous secret still signs too, after a rotation.
    previous_secret_expires_at: UtcDatetime | None = None


class WebhookAttemptOut(CamelModel):
    attempt: int
    started_at: UtcDatetime
    finished_at: UtcDatetime
    status_code: int | None = None
    error: str | None = None


class WebhookDeliveryOut(Timestamps):
    id: str  # the webhook-id header the receiver saw
    event: str
    job_id: str | None = None
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: UtcDatetime | None = None  # when pending: the next try
    attempts: list[WebhookAttemptOut]
