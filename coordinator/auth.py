"""Bearer-JWT authentication.

A request carries ``Authorization: Bearer <jwt>`` or the ``token`` cookie (so ``<img>`` and
``<video>`` tags work). The algorithm is pinned, ``exp`` and ``sub`` are required, and the
signature is checked: HS256 with the local secret by default, or RS256 against an external
identity provider's JWKS when ``AUTH_JWKS_URL`` is set. ``sub`` is the user id.
"""

from __future__ import annotations

import time
from functools import cached_property

import jwt
from starlette.concurrency import run_in_threadpool

from coordinator.envelope import APIError
from coordinator.settings import Settings

LOCAL_ALGORITHM = "HS256"
JWKS_ALGORITHM = "RS256"
_REQUIRED_CLAIMS = ["exp", "sub"]


def unauthorized(message: str) -> APIError:
    return APIError(401, message, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


class TokenVerifier:
    """Verifies tokens for one ``Settings``; the JWKS client caches the provider's keys."""

    def __init__(self, settings: Settings):
        self.settings = settings

    @cached_property
    def _jwks_client(self) -> jwt.PyJWKClient:
        return jwt.PyJWKClient(self.settings.auth_jwks_url, cache_keys=True, lifespan=3600,
                               timeout=10)

    async def user_id(self, token: str) -> str:
        """Return the ``sub`` of a valid token, or raise a 401 ``APIError``."""
        try:
            if self.settings.auth_jwks_url:
                # Fetching keys is blocking network I/O: keep it off the event loop.
                signing_key = await run_in_threadpool(
                    self._jwks_client.get_signing_key_from_jwt, token)
                key, algorithm = signing_key.key, JWKS_ALGORITHM
            else:
                key, algorithm = self.settings.jwt_secret, LOCAL_ALGORITHM
            claims = jwt.decode(
                token, key, algorithms=[algorithm],
                audience=self.settings.auth_audience, issuer=self.settings.auth_issuer,
                options={"require": _REQUIRED_CLAIMS, "verify_aud": bool(self.settings.auth_audience)},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("Token has expired; sign in again") from None
        except jwt.PyJWKClientError:
            raise unauthorized("Token signing key could not be resolved") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"Invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise unauthorized("Invalid token: 'sub' must be a non-empty string")
        return subject


# A cookie rides along with any request a browser makes, including ones a hostile page
# triggers; so it is accepted only for reads (``<img>``, ``<video>``), never for changes.
COOKIE_METHODS = frozenset({"GET", "HEAD"})


def bearer_token(headers, cookies, *, cookie_allowed: bool) -> str | None:  # noqa: ANN001
    """The token of a request: ``Authorization: Bearer`` (any request) or the ``token`` cookie
    (where allowed). A malformed Authorization header is a 401, not a fallback to the cookie."""
    header = headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Authorization header must be 'Bearer <token>'")
        return token.strip()
    return cookies.get("token") if cookie_allowed else None


def issue_local_token(settings: Settings, user_id: str, ttl_seconds: int | None = None) -> str:
    """A token the local service accepts (``renderfarm token USER``)."""
    now = int(time.time())
    ttl = ttl_seconds if ttl_seconds is not None else settings.auth_token_ttl_seconds
    claims = {"sub": user_id, "iat": now, "exp": now + ttl}
    if settings.auth_issuer:
        claims["iss"] = settings.auth_issuer
    if settings.auth_audience:
        claims["aud"] = settings.auth_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm=LOCAL_ALGORITHM)
