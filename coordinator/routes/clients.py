"""``/api/v3/clients``: the advertiser accounts jobs are made for."""

from __future__ import annotations

from fastapi import APIRouter

from coordinator.crud import clients as crud
from coordinator.deps import CurrentUser, OwnedClient, PageDep, SessionDep, StoreDep
from coordinator.envelope import Envelope, ok
from coordinator.schemas.clients import ClientCreate, ClientOut, ClientStats, ClientUpdate
from coordinator.schemas.common import Message

router = APIRouter(prefix="/clients", tags=["clients"])


def _out(client) -> dict:  # noqa: ANN001
    return ClientOut.model_validate(client).model_dump(mode="json", by_alias=True)


@router.get("", response_model=Envelope[list[ClientOut]])
async def list_clients(session: SessionDep, user: CurrentUser, page: PageDep):
    rows, total = await crud.list_clients(session=session, owner=user, page=page)
    return ok([_out(row) for row in rows], page=page.number, total=total)


@router.post("", response_model=Envelope[ClientOut], status_code=201)
async def create_client(body: ClientCreate, session: SessionDep, user: CurrentUser):
    return ok(_out(await crud.create_client(session=session, data=body, owner=user)))


@router.get("/{client_id}", response_model=Envelope[ClientOut])
async def get_client(client: OwnedClient):
    return ok(_out(client))


@router.put("/{client_id}", response_model=Envelope[ClientOut])
async def update_client(body: ClientUpdate, client: OwnedClient, session: SessionDep):
    return ok(_out(await crud.update_client(session=session, client=client, data=body)))


@router.delete("/{client_id}", response_model=Envelope[Message])
async def delete_client(client: OwnedClient, session: SessionDep, store: StoreDep):
    """Deletes the client and everything under it: campaigns, assets (with their bytes) and
    jobs. Refused with 409 while one of its jobs is still processing."""
    await crud.delete_client(session=session, store=store, client=client)
    return ok({"message": "Client deleted successfully"})


@router.get("/{client_id}/stats", response_model=Envelope[ClientStats])
async def client_stats(client: OwnedClient, session: SessionDep):
    stats = await crud.client_stats(session=session, client=client)
    return ok(stats.model_dump(by_alias=True))
