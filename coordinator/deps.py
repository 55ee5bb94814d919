"""FastAPI dependencies, as ``Annotated`` aliases routes read from their signatures.

``CurrentUser`` is the caller's id (JWT ``sub``). The ``Owned*`` loaders fetch a row by its
path id *for this user* or answer 404, so ownership is checked in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, AsyncIterator, Protocol, TypeVar

from fastapi import Depends, Query, Request, WebSocketException, status
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import HTTPConnection
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.auth import COOKIE_METHODS, TokenVerifier, bearer_token, unauthorized
from coordinator.db.base import Base
from coordinator.db.models import Asset, Campaign, Client, Job, Scene
from coordinator.envelope import APIError, not_found
from coordinator.settings import Settings
from coordinator.storage import ObjectStore

ModelT = TypeVar("ModelT", bound=Base)


def _settings(request: Request) -> Settings:
    return request.app.state.settings


class JobRunner(Protocol):
    """How the API reaches the render side (``actors.facade.RayJobRunner`` under Ray Serve)."""

    async def poke(self, job_id: str) -> None:
        """Make sure the job's actor exists and is working on whatever the row says is due."""

    async def cancel(self, job_id: str) -> None:
        """Stop the job's in-flight work (its row is already ``cancelled``)."""

    async def default_preset(self) -> str | None:
        """The preset of jobs that name none, as the renderers decided it (None: unknown)."""

    async def render_image(self, request: Any) -> Any:
        """One image outside any job (``ImageRequest`` -> ``ImageResult``) on the renderers."""


class NoRenderRunner:
    """For an API built without Ray (fast HTTP tests): jobs are recorded, nothing renders."""

    async def poke(self, job_id: str) -> None:
        return None

    async def cancel(self, job_id: str) -> None:
        return None

    async def default_preset(self) -> str | None:
        return None

    async def render_image(self, request: Any) -> Any:
        raise APIError(503, "No image renderer is running in this API process; start the "
                       "service with scripts/serve to render images", "renderer_unavailable")


def _job_runner(request: Request) -> JobRunner:
    return request.app.state.job_runner or NoRenderRunner()


def _store(request: Request) -> ObjectStore:
    return request.app.state.object_store


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


async def _current_user(request: Request) -> str:
    # Browsers send the cookie with <img>/<video> requests, which cannot carry headers.
    token = bearer_token(request.headers, request.cookies,
                         cookie_allowed=request.method in COOKIE_METHODS)
    if not token:
        raise unauthorized("Missing bearer token (the token cookie is accepted for GET only)")
    verifier: TokenVerifier = request.app.state.token_verifier
    user = await verifier.user_id(token)
    # The headers ride on the response (see coordinator.app); a 429 carries them itself.
    request.state.rate_limit_headers = await request.app.state.rate_limiter.hit(user)
    return user


NUL = "\x00"
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _nul_place(place: str, value: Any) -> str | None:
    """Where in ``value`` (strings, dict keys and values, lists, uploaded file names) a NUL
    character is, or None. Iterative, so a deeply nested body cannot exhaust the stack."""
    pending = [(place, value)]
    while pending:
        place, item = pending.pop()
        if isinstance(item, str):
            if NUL in item:
                return place
        elif isinstance(item, dict):
            for key, child in item.items():
                key = str(key)
                child_place = f"{place}.{key}" if place else key
                if NUL in key:
                    return child_place.replace(NUL, "\\u0000")
                pending.append((child_place, child))
        elif isinstance(item, (list, tuple)):
            pending.extend((f"{place}[{index}]", child) for index, child in enumerate(item))
        elif isinstance(item, UploadFile) and item.filename and NUL in item.filename:
            return f"{place} (file name)"
    return None


async def _request_texts(connection: HTTPConnection) -> list[tuple[str, Any]]:
    """The text a request carries, as ``(kind, value)``: path and query parameters (every
    value of a repeated key), and a JSON or form body."""
    texts: list[tuple[str, Any]] = [("path parameter", dict(connection.path_params))]
    texts += [("query parameter", {key: value})
              for key, value in connection.query_params.multi_items()]
    if not isinstance(connection, Request):
        return texts
    media_type = connection.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        # Both are cached on the request: FastAPI has already parsed the body this way.
        if media_type in _FORM_TYPES:
            texts += [("", {key: value}) for key, value in (await connection.form()).multi_items()]
        elif media_type == "application/json" or media_type.endswith("+json"):
            texts.append(("", await connection.json()))
    except (ValueError, MultiPartException):
        pass  # not parseable: the route's own validation answers that
    return texts


async def refuse_nul_text(connection: HTTPConnection) -> None:
    """Refuses a NUL character anywhere in a request's text with a 400, before any route runs.

    PostgreSQL cannot store NUL in text (a 500) while SQLite would keep it; no user means one.
    Registered once on the app, so every path, query, JSON body and form field is covered.
    """
    for kind, value in await _request_texts(connection):
        place = _nul_place("", value)
        if place is None:
            continue
        where = " ".join(part for part in (kind, place) if part) or "body"
        message = f"{where}: text may not contain the NUL character (\\u0000)"
        if isinstance(connection, Request):
            raise APIError(400, message, "validation_error")
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, message)


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ObjectStore, Depends(_store)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
JobRunnerDep = Annotated[JobRunner, Depends(_job_runner)]
CurrentUser = Annotated[str, Depends(_current_user)]


# The largest offset a list accepts: beyond it the databases' integer types overflow (a 500),
# and no list holds that many rows anyway.
MAX_OFFSET = 2**31 - 1


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int

    @property
    def number(self) -> int:
        return self.offset // self.limit + 1


def _page(
    limit: Annotated[int, Query(ge=1, le=1000, description="Number of results (1-1000)")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET,
                                 description=f"Pagination offset (0-{MAX_OFFSET})")] = 0,
) -> Page:
    return Page(limit=limit, offset=offset)


PageDep = Annotated[Page, Depends(_page)]


async def get_owned(session: AsyncSession, model: type[ModelT], row_id: str, owner: str,
                    label: str) -> ModelT:
    """The row with this id if it belongs to ``owner``; otherwise a 404 (never a 403)."""
    row = await session.scalar(select(model).where(model.id == row_id, model.owner_id == owner))
    if row is None:
        raise not_found(label)
    return row


async def _owned_client(client_id: str, session: SessionDep, user: CurrentUser) -> Client:
    return await get_owned(session, Client, client_id, user, "Client")


async def _owned_campaign(campaign_id: str, session: SessionDep, user: CurrentUser) -> Campaign:
    return await get_owned(session, Campaign, campaign_id, user, "Campaign")


async def _owned_asset(asset_id: str, session: SessionDep, user: CurrentUser) -> Asset:
    return await get_owned(session, Asset, asset_id, user, "Asset")


OwnedClient = Annotated[Client, Depends(_owned_client)]
OwnedCampaign = Annotated[Campaign, Depends(_owned_campaign)]
OwnedAsset = Annotated[Asset, Depends(_owned_asset)]


async def _owned_job(job_id: str, session: SessionDep, user: CurrentUser) -> Job:
    return await get_owned(session, Job, job_id, user, "Job")


OwnedJob = Annotated[Job, Depends(_owned_job)]


async def _owned_scene(scene_id: str, job: OwnedJob, session: SessionDep) -> Scene:
    scene = await session.scalar(select(Scene).where(Scene.id == scene_id, Scene.job_id == job.id))
    if scene is None:
        raise not_found("Scene")
    return scene


OwnedScene = Annotated[Scene, Depends(_owned_scene)]
