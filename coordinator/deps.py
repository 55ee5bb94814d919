"""FastAPI dependencies, as ``Annotated`` aliases routes read from their signatures.

``CurrentUser`` is the caller's id (JWT ``sub``). The ``Owned*`` loaders fetch a row by its
path id *for this user* or answer 404, so ownership is checked in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, AsyncIterator, Protocol, TypeVar

from fastapi import Depends, Query, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from coordinator.auth import COOKIE_METHODS, TokenVerifier, bearer_token, unauthorized
from coordinator.db.base import Base
from coordinator.db.models import Asset, Campaign, Client, Job, Scene
from coordinator.envelope import not_found
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


class NoRenderRunner:
    """For an API built without Ray (fast HTTP tests): jobs are recorded, nothing renders."""

    async def poke(self, job_id: str) -> None:
        return None

    async def cancel(self, job_id: str) -> None:
        return None


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
    request.state.rate_limit_headers = request.app.state.rate_limiter.hit(user)
    return user


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[ObjectStore, Depends(_store)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
JobRunnerDep = Annotated[JobRunner, Depends(_job_runner)]
CurrentUser = Annotated[str, Depends(_current_user)]


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int

    @property
    def number(self) -> int:
        return self.offset // self.limit + 1


def _page(
    limit: Annotated[int, Query(ge=1, le=1000, description="Number of results (1-1000)")] = 100,
    offset: Annotated[int, Query(ge=0, description="Pagination offset")] = 0,
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
