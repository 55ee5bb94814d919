"""Authentication and the envelope on every kind of response, including framework errors."""

from __future__ import annotations

import time

import jwt
import pytest


@pytest.fixture
def anonymous(api):
    with api.client(user=None) as client:
        yield client


def _headers(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_health_needs_no_auth(anonymous):
    body = anonymous.get("/health").json()
    assert body["data"]["status"] == "healthy" and body["error"] is None


def test_rejected_tokens(api, anonymous):
    now = int(time.time())
    secret = api.settings.jwt_secret
    tokens = {
        "missing": None,
        "garbage": "not-a-jwt",
        "bad signature": jwt.encode({"sub": "u", "exp": now + 60}, "wrong-secret", algorithm="HS256"),
        "expired": jwt.encode({"sub": "u", "exp": now - 60}, secret, algorithm="HS256"),
        "no exp": jwt.encode({"sub": "u"}, secret, algorithm="HS256"),
        "no sub": jwt.encode({"exp": now + 60}, secret, algorithm="HS256"),
        "alg none": jwt.encode({"sub": "u", "exp": now + 60}, None, algorithm="none"),
        "other hmac alg": jwt.encode({"sub": "u", "exp": now + 60}, secret, algorithm="HS512"),
    }
    for label, token in tokens.items():
        headers = _headers(token) if token else {}
        response = anonymous.get("/api/v3/clients", headers=headers)
        assert response.status_code == 401, label
        body = response.json()
        assert body["data"] is None and body["code"] == "unauthorized" and body["error"], label
    assert "expired" in anonymous.get("/api/v3/clients", headers=_headers(tokens["expired"])).json()["error"]
    assert anonymous.get("/api/v3/clients", headers={"Authorization": "Basic abc"}).status_code == 401


def test_token_cookie_is_accepted_for_reads_only(api):
    with api.client(user=None, cookies={"token": api.token("cookie-user")}) as client:
        assert client.get("/api/v3/clients").status_code == 200
        # A cookie comes along with requests other sites make: it must not change anything.
        forged = client.post("/api/v3/clients", json={"name": "via a hostile page"})
        assert forged.status_code == 401
        assert client.get("/api/v3/clients").json()["meta"]["total"] == 0


def test_framework_errors_wear_the_envelope(alice):
    unknown = alice.get("/api/v3/nope")
    assert unknown.status_code == 404 and unknown.json()["data"] is None
    assert unknown.json()["error"] == "Not found" and "timestamp" in unknown.json()["meta"]
    wrong_method = alice.patch("/api/v3/clients")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


def test_oversized_json_body_is_413(alice, api):
    big = "x" * (api.settings.max_json_body_kb * 1024 + 10)
    response = alice.post("/api/v3/clients", json={"name": "x", "description": big})
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert alice.get("/api/v3/clients").json()["meta"]["total"] == 0


def test_cors_preflight_allows_configured_origin(anonymous):
    response = anonymous.options("/api/v3/clients", headers={
        "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert response.headers["access-control-allow-credentials"] == "true"
    denied = anonymous.options("/api/v3/clients", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in denied.headers


def test_openapi_shows_camel_case(anonymous):
    schema = anonymous.get("/openapi.json").json()
    client_out = schema["components"]["schemas"]["ClientOut"]["properties"]
    assert {"brandGuidelines", "createdAt", "updatedAt"} <= set(client_out)
    assert anonymous.get("/docs").status_code == 200
