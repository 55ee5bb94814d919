"""``/api/v3/assets``: uploads, imports from a URL, listing, and serving the bytes.

The upload route lives on its own router so the app can give it the upload size limit while
every other route keeps the small JSON body limit.
"""

from __future__ import annotations

import io
import random
import tempfile
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile

from actors.messages import ImageRequest
from coordinator.crud import assets as crud
from coordinator.deps import (CurrentUser, JobRunnerDep, OwnedAsset, PageDep, SessionDep,
                              SettingsDep, StoreDep)
from coordinator.envelope import APIError, Envelope, ok
from coordinator.media import ImageLimits, sniff_media
from coordinator.schemas.assets import AssetFromUrl, AssetOut, AssetType, CharacterReferenceCreate
from coordinator.schemas.common import Message
from coordinator.serving import serve_object
from coordinator.settings import Settings
from coordinator.url_import import fetch_to_file
from models.presets import TINY_PRESET, UnknownPreset, apply_prompt_template, get_preset

router = APIRouter(prefix="/assets", tags=["assets"])
upload_router = APIRouter(prefix="/assets", tags=["assets"])

MB = 1024 * 1024
# Generated references carry this tag, so a frontend can list them (?asset_type=image + tag).
CHARACTER_REFERENCE_TAG = "character-reference"
# A reference shows the whole subject, alone, so the scenes conditioned on it inherit the
# subject rather than a background.
CHARACTER_REFERENCE_PROMPT = "{description}, the whole subject in view, centred, plain background"


def asset_url(settings: Settings, asset_id: str) -> str:
    return f"{settings.public_base_url}/api/v3/assets/{asset_id}/data"


def _out(asset, settings: Settings) -> dict:  # noqa: ANN001
    out = AssetOut.model_validate({
        "id": asset.id, "name": asset.name, "type": asset.type, "url": asset_url(settings, asset.id),
        "format": asset.format, "size": asset.size, "tags": asset.tags or [],
        "client_id": asset.client_id, "campaign_id": asset.campaign_id,
        "created_at": asset.created_at, "updated_at": asset.updated_at,
    })
    return out.model_dump(mode="json", by_alias=True)


@upload_router.post("", response_model=Envelope[AssetOut], status_code=201)
async def upload_asset(
    session: SessionDep, user: CurrentUser, store: StoreDep, settings: SettingsDep,
    file: Annotated[UploadFile, File(description="The file to upload")],
    name: Annotated[str | None, Form(max_length=255)] = None,
    type: Annotated[AssetType | None, Form(description="image, video, audio or document")] = None,
    client_id: Annotated[str | None, Form(alias="clientId", max_length=64)] = None,
    campaign_id: Annotated[str | None, Form(alias="campaignId", max_length=64)] = None,
    tags: Annotated[str | None, Form(description="JSON array of strings")] = None,
):
    """Uploads a file (multipart). ``format`` and ``size`` come from the bytes, not the claim.
    Bodies over ``MAX_UPLOAD_SIZE_MB`` are refused with 413 while they stream in; images over
    ``MAX_IMAGE_PIXELS`` / ``MAX_IMAGE_SIDE`` / ``MAX_IMAGE_FRAMES`` with 400 ``image_too_large``."""
    tag_list = crud.parse_tags(tags)
    client_id, campaign_id = await crud.check_references(session, user, client_id or None,
                                                         campaign_id or None)
    detected = await crud.sniff_file(file.file, type, ImageLimits.from_settings(settings))
    display_name = (name or "").strip() or (file.filename or "").strip() or "Untitled asset"
    asset = await crud.store_asset(session=session, store=store, owner=user, source=file.file,
                                   detected=detected, name=display_name[:255], client_id=client_id,
                                   campaign_id=campaign_id, tags=tag_list)
    return ok(_out(asset, settings))


@router.post("/from-url", response_model=Envelope[AssetOut], status_code=201)
async def import_asset(body: AssetFromUrl, session: SessionDep, user: CurrentUser,
                       store: StoreDep, settings: SettingsDep):
    """Imports a public http(s) URL. Private, loopback and metadata addresses are refused (at
    every redirect), and the download is capped at ``MAX_ASSET_DOWNLOAD_SIZE_MB``."""
    client_id, campaign_id = await crud.check_references(session, user, body.client_id,
                                                         body.campaign_id)
    with tempfile.SpooledTemporaryFile(max_size=MB) as spool:
        fetched = await fetch_to_file(
            str(body.url), spool, max_bytes=settings.max_asset_download_size_mb * MB,
            timeout_s=settings.url_import_timeout_seconds,
            max_redirects=settings.url_import_max_redirects,
            allow_networks=settings.url_import_allow_networks)
        detected = await crud.sniff_file(spool, body.type, ImageLimits.from_settings(settings))
        name = body.name or (fetched.filename or "").strip()[:255] or "Imported asset"
        asset = await crud.store_asset(session=session, store=store, owner=user, source=spool,
                                       detected=detected, name=name, client_id=client_id,
                                       campaign_id=campaign_id, tags=body.tags,
                                       source_url=fetched.final_url)
    return ok(_out(asset, settings))


@router.post("/character-reference", response_model=Envelope[AssetOut], status_code=201)
async def generate_character_reference(body: CharacterReferenceCreate, session: SessionDep,
                                       user: CurrentUser, store: StoreDep, settings: SettingsDep,
                                       runner: JobRunnerDep):
    """Renders a product or character reference image from ``characterDescription`` with the
    preset's image model (``preset``, else the default a job would get) on the farm's image
    renderers, and keeps it as an image asset of yours, usable as a job's
    ``advanced.referenceAssetId``. 503 when no renderer can be reached."""
    client_id, campaign_id = await crud.check_references(session, user, body.client_id,
                                                         body.campaign_id)
    # The same choice job creation makes (coordinator.crud.jobs.resolve_plan).
    preset_name = (body.preset or settings.renderfarm_default_preset
                   or await runner.default_preset() or TINY_PRESET)
    try:
        preset = get_preset(preset_name)
    except UnknownPreset as exc:
        raise APIError(400, f"preset: {exc}", "validation_error") from None
    width, height = preset.image_size["1:1"]
    prompt = CHARACTER_REFERENCE_PROMPT.format(description=body.character_description)
    request = ImageRequest(preset=preset.name, prompt=apply_prompt_template(preset, prompt),
                           seed=body.seed if body.seed is not None else random.randrange(2**31),
                           width=width, height=height, owner=user)
    result = await runner.render_image(request)
    detected = sniff_media(result.png)
    name = body.name or f"Character reference: {body.character_description}"[:200]
    tags = list(dict.fromkeys([*body.tags, CHARACTER_REFERENCE_TAG]))
    asset = await crud.store_asset(session=session, store=store, owner=user,
                                   source=io.BytesIO(result.png), detected=detected, name=name,
                                   client_id=client_id, campaign_id=campaign_id, tags=tags)
    return ok(_out(asset, settings))


@router.get("", response_model=Envelope[list[AssetOut]])
async def list_assets(session: SessionDep, user: CurrentUser, page: PageDep, settings: SettingsDep,
                      client_id: Annotated[str | None, Query(max_length=64)] = None,
                      campaign_id: Annotated[str | None, Query(max_length=64)] = None,
                      asset_type: Annotated[AssetType | None, Query()] = None):
    rows, total = await crud.list_assets(session=session, owner=user, page=page,
                                         client_id=client_id, campaign_id=campaign_id,
                                         asset_type=asset_type)
    return ok([_out(row, settings) for row in rows], page=page.number, total=total)


@router.get("/{asset_id}", response_model=Envelope[AssetOut])
async def get_asset(asset: OwnedAsset, settings: SettingsDep):
    return ok(_out(asset, settings))


@router.delete("/{asset_id}", response_model=Envelope[Message])
async def delete_asset(asset: OwnedAsset, session: SessionDep, store: StoreDep):
    """Deletes the asset and its stored bytes."""
    await crud.delete_asset(session=session, store=store, asset=asset)
    return ok({"message": "Asset deleted successfully"})


@router.get("/{asset_id}/data",
                  responses={200: {"description": "The raw bytes"}, 206: {"description": "A byte range"}})
@router.head("/{asset_id}/data", include_in_schema=False)
async def asset_data(asset: OwnedAsset, request: Request, store: StoreDep):
    """The asset's bytes with its sniffed ``Content-Type``, an ``ETag``, and HTTP Range."""
    return await serve_object(request, store, asset.storage_key, content_type=asset.content_type,
                              etag=asset.sha256)
