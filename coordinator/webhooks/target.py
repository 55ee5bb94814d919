"""Which URLs may receive webhooks, and sending to one without being steered inside our
network: the rules and the address checks of URL import (``coordinator.url_import``).

A receiver must be an ``https`` URL whose host resolves to public addresses only; an operator
may trust networks (``WEBHOOK_ALLOW_NETWORKS``), whose addresses are then allowed, over plain
``http`` too. The host is resolved again before every attempt and the connection goes to
exactly the checked address (the name still goes out as ``Host`` and TLS SNI), so DNS
rebinding after registration cannot reach a private address."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from coordinator.envelope import APIError
from coordinator.url_import import parse_http_url, parse_networks, resolve_checked

MAX_URL_LENGTH = 2000


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    addresses: list[str]  # checked; connect to these, in order


async def resolve_target(url: str, allow_networks: Sequence[str]) -> Target:
    """Checks ``url`` and resolves its host, refusing with 400 ``url_not_allowed`` (a
    non-public address), ``url_scheme_not_allowed`` (http outside the trusted networks) or
    ``url_invalid`` (malformed, or the host does not resolve)."""
    parsed = parse_http_url(url, "webhook URL")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = parsed.raw_host.decode("ascii")
    try:
        addresses = await resolve_checked(host, port, allow_networks)
    except APIError as error:
        if error.code == "url_not_allowed":
            raise APIError(400, f"The webhook URL points at a non-public address (host "
                                f"{host!r})", "url_not_allowed") from None
        raise APIError(400, f"Could not resolve the webhook URL's host {host!r}",
                       "url_invalid") from None
    if parsed.scheme == "http" and not _all_trusted(addresses, allow_networks):
        raise APIError(400, "A webhook URL must be https (plain http only inside the networks "
                            "WEBHOOK_ALLOW_NETWORKS trusts)", "url_scheme_not_allowed")
    return Target(url=parsed, addresses=addresses)


def _all_trusted(addresses: list[str], allow_networks: Sequence[str]) -> bool:
    trusted = parse_networks(allow_networks)
    return all(any(ipaddress.ip_address(address) in net for net in trusted)
               for address in addresses)


async def post(client: httpx.AsyncClient, target: Target, body: str,
               headers: dict[str, str]) -> httpx.Response:
    """POSTs ``body`` to the first checked address that accepts a connection. Redirects are
    not followed (a 3xx counts as a failed attempt, as Standard Webhooks advises)."""
    host = target.url.raw_host.decode("ascii")
    headers = {**headers, "Host": target.url.netloc.decode("ascii"),
               "Content-Type": "application/json", "User-Agent": "renderfarm-webhooks/1"}
    error: httpx.ConnectError | None = None
    for address in target.addresses:
        request = client.build_request("POST", target.url.copy_with(host=address),
                                       content=body.encode(), headers=headers,
                                       extensions={"sni_hostname": host})
        try:
            return await client.send(request)
        except httpx.ConnectError as exc:
            error = exc
    raise error or httpx.ConnectError("no address to connect to")
