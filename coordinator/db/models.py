"""The tables. Ownership is a column on every row. Deleting a client cascades to its campaigns,
assets and jobs; deleting a campaign to its assets and jobs (the stored bytes are removed by
``coordinator.crud.cleanup``)."""

from __future__ import annotations

from typing import Any

from datetime import datetime

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text,
                        UniqueConstraint, false)
from sqlalchemy.orm import Mapped, mapped_column

from coordinator.db.base import Base, OwnedMixin, utcnow


class Client(OwnedMixin, Base):
    __tablename__ = "clients"

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    brand_guidelines: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Campaign(OwnedMixin, Base):
    __tablename__ = "campaigns"

    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    goal: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(50), default="draft")
    brief: Mapped[str] = mapped_column(Text, default="")


class Asset(OwnedMixin, Base):
    __tablename__ = "assets"

    client_id: Mapped[str | None] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    campaign_id: Mapped[str | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(20))  # image | video | audio | document
    format: Mapped[str] = mapped_column(String(20))  # sniffed from the bytes: png, mp4, ...
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    source_url: Mapped[str | None] = mapped_column(Text)


class Job(OwnedMixin, Base):
    """A video job. ``status`` moves only through ``coordinator.job_states.transition``."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner_id", "idempotency_key"),)

    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), index=True)
    campaign_id: Mapped[str | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(32), index=True)
    brief: Mapped[dict[str, Any]] = mapped_column(JSON)  # context, adBasics, creative as sent
    advanced: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # validated, normalised
    preset: Mapped[str] = mapped_column(String(64))
    aspect_ratio: Mapped[str] = mapped_column(String(8))
    seed: Mapped[int] = mapped_column(BigInteger)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    estimated_cost: Mapped[float] = mapped_column(Float, default=0.0)
    cost_breakdown: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actual_cost: Mapped[float | None] = mapped_column(Float)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # sha256 of the create request, so a key replayed with another body is refused.
    request_hash: Mapped[str | None] = mapped_column(String(64))
    video_key: Mapped[str | None] = mapped_column(String(255))
    thumbnail_key: Mapped[str | None] = mapped_column(String(255))
    video_duration_s: Mapped[float | None] = mapped_column(Float)
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    priority: Mapped[str] = mapped_column(String(16), default="normal", server_default="normal")
    # The stage timeline: [{name, status, percent, startedAt, completedAt, error}].
    stages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # A webhook endpoint the job named: notified of this job's events (besides those by scope).
    webhook_id: Mapped[str | None] = mapped_column(String(36))
    # The job's music bed (generated or copied from an asset), mixed under the voice-over.
    music_key: Mapped[str | None] = mapped_column(String(255))
    # 0 for the first video; each revision of the completed job counts up, and its video and
    # thumbnail are stored under new names, so the previous ones stay served until it lands.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Scene(OwnedMixin, Base):
    """One storyboard scene. ``version`` goes up on every edit or regeneration; the image and
    clip record which version they were rendered from, so stale artifacts are easy to spot."""

    __tablename__ = "scenes"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    scene_idx: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text)
    script: Mapped[str] = mapped_column(Text, default="")
    shot_type: Mapped[str] = mapped_column(String(32))
    transition: Mapped[str] = mapped_column(String(32))
    duration_s: Mapped[float] = mapped_column(Float)
    image_prompt: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(32), default="pending")  # see SceneStatus
    error: Mapped[str | None] = mapped_column(Text)
    # Feedback of a requested regeneration, kept until it is done so a restarted actor can redo it.
    regenerate_feedback: Mapped[str | None] = mapped_column(Text)
    image_key: Mapped[str | None] = mapped_column(String(255))
    image_version: Mapped[int | None] = mapped_column(Integer)
    clip_key: Mapped[str | None] = mapped_column(String(255))
    clip_version: Mapped[int | None] = mapped_column(Integer)
    # The spoken line: its WAV, how long it lasts, and the scene version and sha256 of
    # (text, language, voice) it was spoken from; an unchanged hash is never spoken again.
    voice_key: Mapped[str | None] = mapped_column(String(255))
    voice_duration_s: Mapped[float | None] = mapped_column(Float)
    voice_version: Mapped[int | None] = mapped_column(Integer)
    voice_text_hash: Mapped[str | None] = mapped_column(String(64))


class RenderUsage(Base):
    """What one piece of work used, as measured: the ledger ``actualCost`` is summed from."""

    __tablename__ = "render_usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    scene_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))  # planner | image | clip | voice | music | composite
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobCreationLock(Base):
    """One row per user, written at the start of every job creation: the write lock on it
    serialises a user's creations (across API replicas too), so the active-job count and the
    insert that follows it cannot interleave with another request's."""

    __tablename__ = "job_creation_locks"

    owner_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    locked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RateLimitWindow(Base):
    """Requests one user made in one rate-limit window, counted in the database so every API
    replica shares the limit."""

    __tablename__ = "rate_limit_windows"

    owner_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds
    count: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEndpoint(OwnedMixin, Base):
    """A URL the owner's job events are POSTed to, signed with its Standard Webhooks secret.
    With ``client_id`` only that client's jobs notify it; without, all the owner's jobs."""

    __tablename__ = "webhook_endpoints"

    client_id: Mapped[str | None] = mapped_column(
        ForeignKey("clients.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)  # event types it wants, e.g. job.completed
    secret: Mapped[str] = mapped_column(String(100))  # whsec_<base64 key>
    # After a rotation the old secret also signs until it expires, so receivers can switch over.
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Only jobs that name this endpoint (``webhookId``) notify it, whatever their client.
    jobs_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class WebhookDelivery(OwnedMixin, Base):
    """One event for one endpoint (the outbox row, written with the job's status change).
    Its ``id`` is the ``webhook-id`` header, the same on every retry."""

    __tablename__ = "webhook_deliveries"

    endpoint_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body that is signed and sent
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | succeeded | failed
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    # When a sender may (next) try it; a claim pushes it forward by a lease, see webhooks.sender.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, as it went."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)  # 1, 2, ...
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)  # None when no answer came
    error: Mapped[str | None] = mapped_column(Text)  # None on success
