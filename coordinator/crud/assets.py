"""Assets: store the bytes under a key we build from the id, then the row; list; delete."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from coordinator.crud.campaigns import require_own_campaign, require_own_client
from coordinator.crud.common import fetch_page
from coordinator.db.base import new_id
from coordinator.db.models import Asset
from coordinator.deps import Page
from coordinator.envelope import APIError
from coordinator.media import (SNIFF_BYTES, AudioRejected, DetectedMedia, ImageLimits, ImageRejected,
                               check_audio, check_claimed_type, check_image, sniff_media,
                               unsupported_media)
from coordinator.schemas.assets import AssetType
from coordinator.storage import ObjectStore

log = logging.getLogger(__name__)

MAX_TAGS = 50
MAX_TAG_LENGTH = 100


def asset_key(asset_id: str) -> str:
    return f"assets/{asset_id}"


def parse_tags(raw: str | None) -> list[str]:
    """``tags`` arrives as a JSON string in multipart forms: ``'["summer", "hero"]'``."""
    if raw is None or raw.strip() == "":
        return []
    try:
        tags = json.loads(raw)
    except json.JSONDecodeError:
        raise APIError(400, "tags: must be a JSON array of strings, e.g. [\"summer\"]",
                       "validation_error") from None
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise APIError(400, "tags: must be a JSON array of strings", "validation_error")
    if any("\x00" in tag for tag in tags):  # "\u0000" inside the JSON string
        raise APIError(400, "tags: text may not contain the NUL character (\\u0000)",
                       "validation_error")
    if len(tags) > MAX_TAGS or any(len(tag) > MAX_TAG_LENGTH for tag in tags):
        raise APIError(400, f"tags: at most {MAX_TAGS} tags of {MAX_TAG_LENGTH} characters",
                       "validation_error")
    return [tag.strip() for tag in tags if tag.strip()]


class _HashingReader:
    """Wraps a file so the sha256 and size are computed while the store reads it (one pass)."""

    def __init__(self, source: BinaryIO):
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk


async def check_references(session: AsyncSession, owner: str, client_id: str | None,
                           campaign_id: str | None) -> tuple[str | None, str | None]:
    """Referenced client/campaign must be the caller's; a campaign implies its client."""
    if client_id:
        await require_own_client(session, client_id, owner)
    if campaign_id:
        campaign = await require_own_campaign(session, campaign_id, owner, client_id=client_id)
        client_id = campaign.client_id
    return client_id, campaign_id


async def sniff_file(source: BinaryIO, claimed: AssetType | None,
                     image_limits: ImageLimits) -> DetectedMedia:
    """What the file is; an image must also be readable and within ``image_limits``."""
    def _head() -> bytes:
        source.seek(0)
        head = source.read(SNIFF_BYTES)
        source.seek(0)
        return head

    detected = sniff_media(await run_in_threadpool(_head))
    if detected is None:
        raise unsupported_media()
    check_claimed_type(claimed.value if claimed else None, detected)
    if detected.asset_type == "image":
        try:
            await run_in_threadpool(check_image, source, detected.format, image_limits)
        except ImageRejected as exc:
            raise exc.as_api_error() from None
    elif detected.asset_type == "audio":  # a job's music decodes it: ffmpeg must read it through
        try:
            await run_in_threadpool(_check_audio_source, source, detected.format)
        except AudioRejected as exc:
            raise exc.as_api_error() from None
    return detected


def _check_audio_source(source: BinaryIO, audio_format: str) -> None:
    """Copies the upload to a named file (ffmpeg seeks, e.g. to an M4A's index at the end)."""
    with tempfile.NamedTemporaryFile(suffix=".audio") as copy:
        source.seek(0)
        shutil.copyfileobj(source, copy, 1 << 20)
        copy.flush()
        source.seek(0)
        check_audio(copy.name, audio_format)


async def check_stored_image(store: ObjectStore, asset: Asset, image_limits: ImageLimits,
                             field: str) -> None:
    """Checks a stored image asset against ``image_limits`` before a job decodes it (it may
    have been stored before the limits, or under looser ones). Reads the object into a spooled
    temporary file; only its headers are parsed."""
    def _check() -> None:
        with tempfile.SpooledTemporaryFile(max_size=1024 * 1024) as spool:
            for chunk in store.iter_range(asset.storage_key, 0, asset.size - 1):
                spool.write(chunk)
            check_image(spool, asset.format, image_limits)

    try:
        await run_in_threadpool(_check)
    except ImageRejected as exc:
        raise exc.as_api_error(field) from None


async def store_asset(*, session: AsyncSession, store: ObjectStore, owner: str, source: BinaryIO,
                      detected: DetectedMedia, name: str, client_id: str | None,
                      campaign_id: str | None, tags: list[str],
                      source_url: str | None = None) -> Asset:
    """Writes the bytes, then the row. If the row cannot be written the bytes are removed, so
    neither a row without bytes nor an unreferenced object is left behind."""
    asset_id = new_id()
    key = asset_key(asset_id)
    reader = _HashingReader(source)
    await run_in_threadpool(store.put_file, key, reader, detected.content_type)
    asset = Asset(id=asset_id, owner_id=owner, client_id=client_id, campaign_id=campaign_id,
                  name=name, type=detected.asset_type, format=detected.format,
                  content_type=detected.content_type, size=reader.size,
                  sha256=reader.digest.hexdigest(), storage_key=key, tags=tags,
                  source_url=source_url)
    session.add(asset)
    try:
        await session.commit()
    except BaseException:
        await session.rollback()
        await run_in_threadpool(store.delete, key)
        raise
    return asset


async def list_assets(*, session: AsyncSession, owner: str, page: Page, client_id: str | None,
                      campaign_id: str | None, asset_type: AssetType | None) -> tuple[list[Asset], int]:
    query = select(Asset).where(Asset.owner_id == owner)
    if client_id is not None:
        query = query.where(Asset.client_id == client_id)
    if campaign_id is not None:
        query = query.where(Asset.campaign_id == campaign_id)
    if asset_type is not None:
        query = query.where(Asset.type == asset_type.value)
    rows, total = await fetch_page(session, query, page, Asset.created_at.desc(), Asset.id)
    return list(rows), total


async def delete_asset(*, session: AsyncSession, store: ObjectStore, asset: Asset) -> None:
    key = asset.storage_key
    await session.delete(asset)
    await session.commit()
    try:
        await run_in_threadpool(store.delete, key)
    except Exception:  # the row is gone, so the object is unreachable; leave a trace for ops
        log.exception("could not delete object %s", key)
