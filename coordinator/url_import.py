"""Downloading a URL a client gave us, without letting it reach inside our network (SSRF).

- Only ``http``/``https``, and no ``user:password@`` in the URL.
- We resolve the host ourselves and refuse unless every address is public (``check_address``);
  then we connect to exactly that address, so a second DNS answer cannot swap in another one
  (DNS rebinding). The original name still goes out as ``Host`` and as the TLS SNI/certificate
  name.
- Redirects are followed here, one hop at a time, and each hop is checked the same way.
- The body is capped while it streams (``Content-Length`` is only a hint) and the whole fetch
  runs under one deadline, so a slow-drip server cannot hold a worker.
"""

from __future__ import annotations

import asyncio
import email.message
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

import httpx

from coordinator.envelope import APIError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_REDIRECTS = {301, 302, 303, 307, 308}
_CONNECT_TIMEOUT_S = 10.0

# Ranges ``is_global`` lets through (or that older Pythons classify loosely), refused outright.
_BLOCKED = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/96",            # unspecified, loopback and the deprecated IPv4-compatible addresses
    "64:ff9b:1::/48",   # local-use NAT64
    "100::/64",         # discard
    "2001::/23",        # IETF protocol assignments, including Teredo 2001::/32
    "2001:db8::/32", "3fff::/20",  # documentation
    "5f00::/16",        # segment routing
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class FetchResult:
    final_url: str  # after redirects (with the host name, not the address we connected to)
    size: int  # bytes written to ``dest``
    content_type: str | None  # the server's Content-Type header: a claim, not a fact
    filename: str | None  # a display hint only; never use it as a path


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address actually reaches."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return _is_public(embedded)
    if any(ip in net for net in _BLOCKED):
        return False
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                 or ip.is_multicast or ip.is_reserved or ip.is_unspecified
                                 or getattr(ip, "is_site_local", False))


def parse_networks(networks: Sequence[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """Operator-trusted CIDRs (``"10.20.0.0/16"``); a bad entry is a configuration error."""
    return tuple(ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net
                 for net in networks)


def check_address(ip: str | IPAddress, allow_networks: Sequence[str | IPNetwork] = ()) -> None:
    """Raises ``url_not_allowed`` unless ``ip`` is a public address, or inside one of the
    ``allow_networks`` an operator explicitly trusts."""
    address = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    same_host = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        same_host.append(address.ipv4_mapped)
    trusted = parse_networks(allow_networks)
    if any(a in net for a in same_host for net in trusted):
        return
    if not _is_public(address):
        raise APIError(400, "URL points at a non-public address", "url_not_allowed")


async def resolve_checked(host: str, port: int,
                          allow_networks: Sequence[str | IPNetwork] = ()) -> list[str]:
    """Resolves ``host`` (without blocking the loop) and returns its addresses, refusing the
    host unless every one of them passes ``check_address``."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise APIError(400, f"Could not resolve the host {host!r}", "url_fetch_failed") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise APIError(400, f"Could not resolve the host {host!r}", "url_fetch_failed")
    for address in addresses:
        try:
            check_address(address, allow_networks)
        except APIError:
            raise APIError(400, f"URL points at a non-public address (host {host!r}); only "
                                "public http(s) URLs can be imported", "url_not_allowed") from None
    return [address.split("%", 1)[0] for address in addresses]


def parse_http_url(url: str | httpx.URL, what: str = "URL") -> httpx.URL:
    """The URL's form alone (no DNS): http(s), a host, a valid port, no credentials; the
    fragment dropped. ``what`` names it in the messages (e.g. "webhook URL")."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise APIError(400, f"The {what} is not valid", "url_invalid") from None
    if parsed.scheme not in ("http", "https"):
        shown = f"{parsed.scheme}:" if parsed.scheme else "no scheme"
        raise APIError(400, f"The {what} must be http or https (got {shown})",
                       "url_scheme_not_allowed")
    if parsed.userinfo:
        raise APIError(400, f"The {what} may not carry a user name or password",
                       "url_not_allowed")
    if not parsed.raw_host:
        raise APIError(400, f"The {what} has no host", "url_invalid")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise APIError(400, f"The {what}'s port is not valid", "url_invalid")
    return parsed.copy_with(fragment=None)


def _human_size(n: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def _too_large(max_bytes: int) -> APIError:
    return APIError(413, f"The file at the URL is larger than the {_human_size(max_bytes)} "
                         "import limit", "url_too_large")


def _filename_hint(response: httpx.Response, url: httpx.URL) -> str | None:
    disposition = response.headers.get("content-disposition")
    name = None
    if disposition:
        message = email.message.Message()
        message["content-disposition"] = disposition
        name = message.get_filename()
    if not name:
        name = url.path.rsplit("/", 1)[-1]  # already percent-decoded
    name = PurePosixPath(name.replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:255]
    return name or None


async def _send(client: httpx.AsyncClient, url: httpx.URL, addresses: list[str]) -> httpx.Response:
    """GET ``url`` from the first of ``addresses`` that accepts a connection."""
    host = url.raw_host.decode("ascii")
    headers = {"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity",
               "User-Agent": "renderfarm-url-import/1"}
    error: httpx.ConnectError | None = None
    for address in addresses:
        request = client.build_request("GET", url.copy_with(host=address), headers=headers,
                                       extensions={"sni_hostname": host})
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            error = exc
    raise error or httpx.ConnectError("no address to connect to")


async def _fetch(url: str, dest: BinaryIO, max_bytes: int, timeout_s: float, max_redirects: int,
                 trusted: tuple[IPNetwork, ...]) -> FetchResult:
    current = parse_http_url(url)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, _CONNECT_TIMEOUT_S))
    for _hop in range(max_redirects + 1):
        port = current.port or (443 if current.scheme == "https" else 80)
        addresses = await resolve_checked(current.raw_host.decode("ascii"), port, trusted)
        # A client per hop: a pooled connection must never be reused for another host name.
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                     timeout=timeout) as client:
            response = await _send(client, current, addresses)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    try:
                        current = parse_http_url(current.join(location))
                    except httpx.InvalidURL:
                        raise APIError(400, "The URL redirected to an invalid URL",
                                       "url_fetch_failed") from None
                    continue
                if not response.is_success:
                    raise APIError(400, f"The URL answered HTTP {response.status_code}",
                                   "url_fetch_failed")
                declared = response.headers.get("content-length", "")
                if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(max_bytes)
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(max_bytes)
                    dest.write(chunk)
                return FetchResult(final_url=str(current), size=size,
                                   content_type=response.headers.get("content-type"),
                                   filename=_filename_hint(response, current))
            finally:
                await response.aclose()
    raise APIError(400, f"Too many redirects (more than {max_redirects})", "url_too_many_redirects")


async def fetch_to_file(url: str, dest: BinaryIO, *, max_bytes: int, timeout_s: float,
                        max_redirects: int, allow_networks: Sequence[str] = ()) -> FetchResult:
    """Downloads ``url`` into ``dest`` (written from its current position, never more than
    ``max_bytes``), following at most ``max_redirects`` redirects, all within ``timeout_s``.

    Errors are ``APIError``: 400 ``url_invalid``, ``url_scheme_not_allowed``,
    ``url_not_allowed``, ``url_too_many_redirects``, ``url_timeout``, ``url_fetch_failed``;
    413 ``url_too_large``. On any error ``dest`` may hold part of the body: the caller must
    discard it. ``allow_networks`` are CIDRs the operator trusts even though non-public.
    """
    trusted = parse_networks(allow_networks)
    try:
        async with asyncio.timeout(timeout_s):
            return await _fetch(url, dest, max_bytes, timeout_s, max_redirects, trusted)
    except (TimeoutError, httpx.TimeoutException):
        raise APIError(400, "The URL did not finish downloading within the "
                            f"{timeout_s:g}-second limit", "url_timeout") from None
    except httpx.HTTPError:
        raise APIError(400, "Could not download the URL (the connection failed)",
                       "url_fetch_failed") from None
