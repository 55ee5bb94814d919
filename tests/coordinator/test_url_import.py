"""URL import against real HTTP servers on loopback aliases, with nothing leaving the machine.

Content is served from 127.0.0.2 and 127.0.0.3 (trusted via ``allow_networks``) while an
"internal service" on 127.0.0.1 counts every connection it accepts: it must see none. Every
test runs under ``offline_guard``, which refuses (and records) any socket connect to a
non-loopback address and any name lookup that would need real DNS.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from coordinator.envelope import APIError
from coordinator.url_import import (FetchResult, _too_large, check_address, fetch_to_file,
                                    resolve_checked)

ALLOW = ["127.0.0.2/32", "127.0.0.3/32"]
BODY = bytes(range(256)) * 40  # 10 KiB, every byte value
CAP = 64 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- servers ------------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    peer = ""  # base URL of the other content server, for cross-host redirects

    def __init__(self, address: tuple[str, int]):
        super().__init__(address, _Handler)
        self.hits: Counter[str] = Counter()
        self.connections = 0
        self.hosts: list[str] = []
        self.stop = threading.Event()

    def verify_request(self, request, client_address) -> bool:  # noqa: ANN001
        self.connections += 1  # every accepted connection, before any request is read
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *_args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              length: bool = True) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802, C901 - one small router for all scenarios
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        self.server.hits[path] += 1
        self.server.hosts.append(self.headers.get("Host", ""))
        try:
            if path in ("/file", "/files/My%20Ad.bin"):
                self._send(200, BODY, {"Content-Type": "application/octet-stream"})
            elif path == "/exact":
                self._send(200, b"x" * CAP)
            elif path == "/named":
                self._send(200, BODY, {"Content-Disposition":
                                       'attachment; filename="../../etc/evil name.png"'})
            elif path == "/host":
                self._send(200, self.headers.get("Host", "").encode())
            elif path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]), b"nope")
            elif path == "/declared-huge":
                self.send_response(200)
                self.send_header("Content-Length", str(CAP * 100))
                self.end_headers()
                self.wfile.write(b"y" * CAP * 2)
            elif path == "/liar":  # no Content-Length, streams far past the cap, then closes
                self.send_response(200)
                self.end_headers()
                for _ in range(40):
                    self.wfile.write(b"z" * 16384)
            elif path == "/drip":  # well within every per-read timeout, but never finishes
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                while not self.server.stop.wait(0.05):
                    self.wfile.write(b".")
                    self.wfile.flush()
            elif path == "/stall":
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                self.wfile.flush()
                self.server.stop.wait(10)
            elif path.startswith("/hop/"):  # /hop/N bounces to the other server until N = 0
                n = int(path.rsplit("/", 1)[1])
                if n == 0:
                    self._send(200, BODY)
                else:
                    self._send(302, headers={"Location": f"{self.server.peer}/hop/{n - 1}"})
            elif path == "/dir/relative":
                self._send(301, headers={"Location": "../file"})
            elif path == "/loop":
                self._send(302, headers={"Location": "/loop"})
            elif path == "/to":
                code = int(query.get("code", ["302"])[0])
                self._send(code, headers={"Location": query["u"][0]})
            else:
                self._send(404, b"unknown")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up, as it should when it refuses a response


@dataclass
class Servers:
    a: _Server
    b: _Server
    internal: _Server
    base_a: str = ""
    base_b: str = ""
    internal_port: int = 0
    threads: list[threading.Thread] = field(default_factory=list)


def _start(host: str) -> tuple[_Server, threading.Thread]:
    server = _Server((host, 0))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    (a, ta), (b, tb), (internal, ti) = _start("127.0.0.2"), _start("127.0.0.3"), _start("127.0.0.1")
    found = Servers(a, b, internal, threads=[ta, tb, ti])
    found.base_a = f"http://127.0.0.2:{a.server_address[1]}"
    found.base_b = f"http://127.0.0.3:{b.server_address[1]}"
    found.internal_port = internal.server_address[1]
    a.peer, b.peer = found.base_b, found.base_a
    yield found
    for server in (a, b, internal):
        server.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _internal_untouched(servers: Servers) -> Iterator[None]:
    yield
    assert servers.internal.connections == 0, "the internal service was reached"


# --- the offline guard --------------------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def _numeric(host: str) -> bool:
    try:
        socket.inet_aton(host)  # also the shorthand spellings: 127.1, 2130706433, 0x7f000001
        return True
    except OSError:
        pass
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])
        return True
    except ValueError:
        return False


@dataclass
class Guard:
    connects: list[object] = field(default_factory=list)  # every connect attempt, any target
    refused: list[object] = field(default_factory=list)  # attempts at non-loopback targets
    lookups: list[str] = field(default_factory=list)  # names (not numbers) looked up
    names: dict[str, list[list[str]]] = field(default_factory=dict)  # fake DNS: answers in turn
    sends: int = 0


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[Guard]:
    """No byte may leave the machine: connects off loopback and real DNS are refused."""
    state = Guard()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo
    real_send = httpx.AsyncClient.send

    def check_target(address: object) -> None:
        state.connects.append(address)
        if isinstance(address, tuple) and not _is_loopback(str(address[0])):
            state.refused.append(address)
            raise OSError(f"test guard: connect to non-loopback {address!r} refused")

    def connect(sock: socket.socket, address: object) -> None:
        check_target(address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        check_target(address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN202
        if isinstance(host, bytes):
            host = host.decode()
        if host is None or _numeric(host):
            return real_getaddrinfo(host, port, *args, **kwargs)
        state.lookups.append(host)
        answers = state.names.get(host)
        if not answers:
            raise socket.gaierror(socket.EAI_NONAME, "test guard: no real DNS in tests")
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        return [info for address in addresses
                for info in real_getaddrinfo(address, port, *args, **kwargs)]

    async def send(client: httpx.AsyncClient, request: httpx.Request, **kwargs):  # noqa: ANN202
        state.sends += 1
        return await real_send(client, request, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    yield state
    assert state.refused == [], f"tried to connect off loopback: {state.refused}"


async def _fetch(url: str, *, max_bytes: int = CAP, timeout_s: float = 5.0, max_redirects: int = 3,
                 allow: list[str] | None = None) -> tuple[FetchResult, bytes]:
    dest = io.BytesIO()
    result = await fetch_to_file(url, dest, max_bytes=max_bytes, timeout_s=timeout_s,
                                 max_redirects=max_redirects,
                                 allow_networks=ALLOW if allow is None else allow)
    return result, dest.getvalue()


async def _refused(url: str, **kwargs) -> APIError:  # noqa: ANN003
    with pytest.raises(APIError) as caught:
        await _fetch(url, **kwargs)
    return caught.value


# --- happy paths --------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_fetches_the_bytes_exactly(servers: Servers, guard: Guard):
    result, data = await _fetch(f"{servers.base_a}/file")
    assert data == BODY
    assert result.size == len(BODY)
    assert result.content_type == "application/octet-stream"
    assert result.final_url == f"{servers.base_a}/file"
    assert result.filename == "file"
    assert guard.connects and all(addr[0] == "127.0.0.2" for addr in guard.connects)


@pytest.mark.anyio
async def test_body_of_exactly_the_cap_is_fine(servers: Servers):
    result, data = await _fetch(f"{servers.base_a}/exact", max_bytes=CAP)
    assert result.size == CAP == len(data)


@pytest.mark.anyio
async def test_filename_hint_is_only_a_name(servers: Servers):
    named, _ = await _fetch(f"{servers.base_a}/named")
    assert named.filename == "evil name.png"
    from_path, _ = await _fetch(f"{servers.base_b}/files/My%20Ad.bin")
    assert from_path.filename == "My Ad.bin"


@pytest.mark.anyio
async def test_name_is_resolved_once_and_sent_as_host(servers: Servers, guard: Guard):
    """The checked address is the one connected to: a second answer (DNS rebinding to
    127.0.0.1) is never asked for, and the original name still goes out as ``Host``."""
    port = servers.a.server_address[1]
    guard.names["cdn.example.test"] = [["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]]
    result, data = await _fetch(f"http://cdn.example.test:{port}/host")
    assert data == f"cdn.example.test:{port}".encode()
    assert result.final_url == f"http://cdn.example.test:{port}/host"
    assert guard.lookups == ["cdn.example.test"]
    assert all(addr[0] == "127.0.0.2" for addr in guard.connects)


@pytest.mark.anyio
async def test_redirect_chain_across_hosts_within_bound(servers: Servers):
    result, data = await _fetch(f"{servers.base_a}/hop/3", max_redirects=3)
    assert data == BODY
    assert result.final_url == f"{servers.base_b}/hop/0"


@pytest.mark.anyio
async def test_relative_redirect(servers: Servers):
    result, data = await _fetch(f"{servers.base_a}/dir/relative", max_redirects=1)
    assert data == BODY and result.final_url == f"{servers.base_a}/file"


def _self_signed(tmp_path: Path, name: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.mark.anyio
async def test_https_sends_the_host_name_as_sni_and_verifies_it(tmp_path: Path, guard: Guard):
    """TLS goes to the checked address but names the original host (SNI), and the certificate
    is verified: this self-signed one is refused, so nothing is downloaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_self_signed(tmp_path, "secure.example.test"))
    seen: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: seen.append(name)
    server, _thread = _start("127.0.0.3")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    try:
        guard.names["secure.example.test"] = [["127.0.0.3"]]
        port = server.server_address[1]
        error = await _refused(f"https://secure.example.test:{port}/file")
    finally:
        server.shutdown()
        server.server_close()
    assert (error.status, error.code) == (400, "url_fetch_failed")
    assert seen == ["secure.example.test"]
    assert server.hits == Counter()  # no request was sent over the unverified connection
    assert all(addr[0] == "127.0.0.3" for addr in guard.connects)


# --- redirects that must end ----------------------------------------------------------------------

@pytest.mark.anyio
async def test_one_redirect_too_many(servers: Servers):
    error = await _refused(f"{servers.base_a}/hop/3", max_redirects=2)
    assert (error.status, error.code) == (400, "url_too_many_redirects")


@pytest.mark.anyio
async def test_redirect_loop_ends(servers: Servers):
    before = servers.b.hits["/loop"]
    error = await _refused(f"{servers.base_b}/loop", max_redirects=4)
    assert (error.status, error.code) == (400, "url_too_many_redirects")
    assert "Too many redirects" in error.message
    assert servers.b.hits["/loop"] - before == 5  # the first request and four redirects


@pytest.mark.anyio
async def test_zero_redirects_allowed_means_none_followed(servers: Servers):
    error = await _refused(f"{servers.base_a}/dir/relative", max_redirects=0)
    assert error.code == "url_too_many_redirects"


@pytest.mark.anyio
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirect_to_internal_service_is_refused(servers: Servers, guard: Guard, code: int):
    target = f"http://127.0.0.1:{servers.internal_port}/admin"
    error = await _refused(f"{servers.base_a}/to?code={code}&u={quote(target, safe='')}")
    assert (error.status, error.code) == (400, "url_not_allowed")
    assert "127.0.0.1" in error.message
    assert all(addr[0] == "127.0.0.2" for addr in guard.connects)
    assert servers.internal.connections == 0


@pytest.mark.anyio
@pytest.mark.parametrize(("target", "code"), [
    ("file:///etc/passwd", "url_scheme_not_allowed"),
    ("gopher://127.0.0.3:70/_", "url_scheme_not_allowed"),
    ("http://user:pw@127.0.0.3/file", "url_not_allowed"),
    ("http://169.254.169.254/latest/meta-data/", "url_not_allowed"),
    ("http://[::ffff:127.0.0.1]:{internal}/", "url_not_allowed"),
])
async def test_redirect_targets_are_checked_like_the_first_url(servers: Servers, guard: Guard,
                                                               target: str, code: str):
    target = target.format(internal=servers.internal_port)
    error = await _refused(f"{servers.base_a}/to?u={quote(target, safe='')}")
    assert error.code == code
    assert all(addr[0] == "127.0.0.2" for addr in guard.connects)


# --- size and time --------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_declared_length_over_cap_is_refused_before_reading(servers: Servers):
    dest = io.BytesIO()
    with pytest.raises(APIError) as caught:
        await fetch_to_file(f"{servers.base_a}/declared-huge", dest, max_bytes=CAP, timeout_s=5,
                            max_redirects=0, allow_networks=ALLOW)
    assert (caught.value.status, caught.value.code) == (413, "url_too_large")
    assert "larger than the 64 KB import limit" in caught.value.message
    assert dest.getvalue() == b""


@pytest.mark.anyio
async def test_lying_server_is_cut_off_at_the_cap(servers: Servers):
    dest = io.BytesIO()
    with pytest.raises(APIError) as caught:
        await fetch_to_file(f"{servers.base_b}/liar", dest, max_bytes=CAP, timeout_s=5,
                            max_redirects=0, allow_networks=ALLOW)
    assert (caught.value.status, caught.value.code) == (413, "url_too_large")
    assert len(dest.getvalue()) <= CAP


def test_limit_is_described_in_megabytes():
    assert "larger than the 25 MB import limit" in _too_large(25 * 1024 * 1024).message


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/drip", "/stall"])
async def test_slow_server_hits_the_deadline(servers: Servers, path: str):
    started = time.monotonic()
    error = await _refused(f"{servers.base_a}{path}", timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert (error.status, error.code) == (400, "url_timeout")
    assert "1-second limit" in error.message
    assert elapsed < 2.0


@pytest.mark.anyio
async def test_error_status_is_reported(servers: Servers):
    error = await _refused(f"{servers.base_a}/status/404")
    assert (error.status, error.code, error.message) == (400, "url_fetch_failed",
                                                         "The URL answered HTTP 404")


@pytest.mark.anyio
async def test_connection_refused_is_a_fetch_failure():
    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.3", 0))
        port = sock.getsockname()[1]
    error = await _refused(f"http://127.0.0.3:{port}/")
    assert (error.status, error.code) == (400, "url_fetch_failed")


# --- refused before any connection ----------------------------------------------------------------

REFUSED = [
    ("http://127.0.0.1:{internal}/", "url_not_allowed"),
    ("http://127.1:{internal}/", "url_not_allowed"),
    ("http://2130706433:{internal}/", "url_not_allowed"),
    ("http://0x7f000001:{internal}/", "url_not_allowed"),
    ("http://017700000001:{internal}/", "url_not_allowed"),
    ("http://[::ffff:127.0.0.1]:{internal}/", "url_not_allowed"),
    ("http://[::ffff:7f00:1]:{internal}/", "url_not_allowed"),
    ("http://[::1]/", "url_not_allowed"),
    ("http://[::1]:{internal}/", "url_not_allowed"),
    ("http://0.0.0.0:{internal}/", "url_not_allowed"),
    ("http://0.0.0.0/", "url_not_allowed"),
    ("http://0:{internal}/", "url_not_allowed"),
    ("http://localhost:{internal}/", "url_not_allowed"),
    ("http://10.0.0.1/", "url_not_allowed"),
    ("http://172.16.5.4/", "url_not_allowed"),
    ("http://192.168.1.1/", "url_not_allowed"),
    ("http://169.254.169.254/latest/meta-data/", "url_not_allowed"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "url_not_allowed"),
    ("http://100.64.0.1/", "url_not_allowed"),
    ("http://[64:ff9b::a9fe:a9fe]/", "url_not_allowed"),
    ("http://mixed.example.test/", "url_not_allowed"),
    ("http://127.0.0.2/file", "url_not_allowed"),  # allowed only when an operator says so
    ("https://127.0.0.1:{internal}/", "url_not_allowed"),
    ("file:///etc/passwd", "url_scheme_not_allowed"),
    ("ftp://x/", "url_scheme_not_allowed"),
    ("gopher://127.0.0.1:{internal}/_", "url_scheme_not_allowed"),
    ("data:text/plain,hello", "url_scheme_not_allowed"),
    ("javascript:alert(1)", "url_scheme_not_allowed"),
    ("//127.0.0.1:{internal}/", "url_scheme_not_allowed"),
    ("http://user:pw@127.0.0.2/", "url_not_allowed"),
    ("http://[not-an-address]/", "url_invalid"),
    ("http://127.0.0.2:99999/", "url_invalid"),
    ("http:///nohost", "url_invalid"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("url", "code"), REFUSED, ids=[url for url, _ in REFUSED])
async def test_refused_before_any_connection(servers: Servers, guard: Guard, url: str, code: str):
    guard.names["localhost"] = [["127.0.0.1", "::1"]]
    guard.names["mixed.example.test"] = [["8.8.8.8", "10.0.0.1"]]  # one public is not enough
    url = url.format(internal=servers.internal_port)
    error = await _refused(url, allow=[])
    assert (error.status, error.code) == (400, code)
    assert guard.connects == [] and guard.sends == 0
    assert servers.internal.connections == 0


@pytest.mark.anyio
async def test_refusal_names_the_host_not_the_address(guard: Guard):
    guard.names["intranet.example.test"] = [["10.1.2.3"]]
    error = await _refused("http://intranet.example.test/report.pdf", allow=[])
    assert error.message.startswith("URL points at a non-public address")
    assert "intranet.example.test" in error.message and "10.1.2.3" not in error.message


@pytest.mark.anyio
async def test_unresolvable_host(guard: Guard):
    error = await _refused("http://nowhere.example.test/", allow=[])
    assert (error.status, error.code) == (400, "url_fetch_failed")
    assert guard.connects == []


@pytest.mark.anyio
async def test_resolve_checked_needs_every_address_public(guard: Guard):
    guard.names["both.example.test"] = [["8.8.8.8", "2606:4700:4700::1111"]]
    assert set(await resolve_checked("both.example.test", 443)) == {"8.8.8.8",
                                                                    "2606:4700:4700::1111"}
    guard.names["half.example.test"] = [["8.8.8.8", "127.0.0.1"]]
    with pytest.raises(APIError):
        await resolve_checked("half.example.test", 443)
    assert guard.connects == []


# --- the address policy itself (no traffic) -------------------------------------------------------

PUBLIC = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "172.15.255.255", "172.32.0.1", "100.63.255.255",
    "100.128.0.1", "198.17.255.255", "198.20.0.1", "192.169.0.1", "169.253.255.255",
    "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001::1",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
]
NON_PUBLIC = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255",
    "172.16.0.1", "172.31.255.255", "192.168.0.1", "192.168.255.255", "169.254.169.254",
    "169.254.0.1", "100.64.0.1", "100.127.255.255", "198.18.0.1", "198.19.255.255",
    "192.0.0.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "192.88.99.1", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::", "::1", "fe80::1", "fe80::1%lo", "febf::1", "fc00::1", "fd00:ec2::254", "fec0::1",
    "ff02::1", "ff0e::1", "2001:db8::1", "3fff::1", "100::1", "5f00::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0",
    "::127.0.0.1", "::8.8.8.8",                       # IPv4-compatible (deprecated)
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808",  # NAT64
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:0a00:0001::",  # 6to4
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::1",  # Teredo
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str):
    check_address(address)
    check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_are_refused(address: str):
    with pytest.raises(APIError) as caught:
        check_address(address)
    assert (caught.value.status, caught.value.code) == (400, "url_not_allowed")


@pytest.mark.parametrize(("address", "allow", "allowed"), [
    ("127.0.0.2", ["127.0.0.2/32"], True),
    ("127.0.0.1", ["127.0.0.2/32"], False),
    ("::ffff:127.0.0.2", ["127.0.0.2/32"], True),
    ("10.20.30.40", ["10.20.0.0/16"], True),
    ("10.21.0.1", ["10.20.0.0/16"], False),
    ("fd12::5", ["fd12::/16"], True),
    ("169.254.169.254", ["10.0.0.0/8"], False),
    ("8.8.8.8", ["10.0.0.0/8"], True),
])
def test_allow_networks(address: str, allow: list[str], allowed: bool):
    if allowed:
        check_address(address, allow)
    else:
        with pytest.raises(APIError):
            check_address(address, allow)


def test_bad_allow_network_is_a_configuration_error():
    with pytest.raises(ValueError):
        check_address("8.8.8.8", ["not-a-network"])
