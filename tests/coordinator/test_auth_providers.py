"""The two ways tokens come to exist: an external identity provider (RS256 against its JWKS,
with issuer and audience), and ``renderfarm token USER`` for the local service."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from coordinator.app import create_app
from coordinator.settings import Settings
from tests.conftest import LiveServer

ISSUER = "https://id.example.test/"
AUDIENCE = "renderfarm-api"


@pytest.fixture(scope="module")
def identity_provider():
    """A stand-in identity provider on loopback publishing its JWKS (the outside world)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = json.dumps({"keys": [public | {"kid": "key-1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"key": key, "jwks_url": f"http://127.0.0.1:{server.server_address[1]}/jwks.json"}
    server.shutdown()


@pytest.fixture(scope="module")
def idp_api(identity_provider, tmp_path_factory):
    settings = Settings(renderfarm_home=tmp_path_factory.mktemp("idp"),
                        auth_jwks_url=identity_provider["jwks_url"], auth_issuer=ISSUER,
                        auth_audience=AUDIENCE)
    with LiveServer(create_app(settings)) as server:
        yield server.url


def _token(key, **claims) -> str:
    now = int(time.time())
    body = {"sub": "idp-user", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now} | claims
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "key-1"})


def test_external_identity_provider_tokens(identity_provider, idp_api):
    import httpx

    def status(token: str) -> int:
        return httpx.get(f"{idp_api}/api/v3/clients",
                         headers={"Authorization": f"Bearer {token}"}).status_code

    key = identity_provider["key"]
    assert status(_token(key)) == 200
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert status(_token(other_key)) == 401  # not signed by the provider
    assert status(_token(key, iss="https://evil.test/")) == 401
    assert status(_token(key, aud="someone-else")) == 401
    assert status(_token(key, exp=int(time.time()) - 10)) == 401
    # A local HS256 token means nothing once an external provider is configured.
    assert status(jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "secret",
                             algorithm="HS256")) == 401


def test_cli_token_and_db_upgrade(tmp_path):
    import httpx

    home = tmp_path / "home"
    env = {"RENDERFARM_HOME": str(home), "PATH": "/usr/bin:/bin"}
    upgrade = subprocess.run([sys.executable, "-m", "coordinator.cli", "db", "upgrade"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    assert (home / "renderfarm.db").exists()
    minted = subprocess.run([sys.executable, "-m", "coordinator.cli", "token", "carol"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    # The running service reads the same RENDERFARM_HOME, so it accepts the token.
    with LiveServer(create_app(Settings(renderfarm_home=home))) as server:
        response = httpx.post(f"{server.url}/api/v3/clients", json={"name": "Carol's"},
                              headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 201
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "carol"
