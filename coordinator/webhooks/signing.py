"""Standard Webhooks signing (https://www.standardwebhooks.com): a ``whsec_<base64 key>``
secret per endpoint; ``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``,
space-separated when more than one secret signs (during a rotation's grace period).

Written with the standard library: it is a few lines, and the tests check it against the
reference ``standardwebhooks`` library rather than against itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
KEY_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """One ``v1,<signature>`` entry for ``body`` sent as ``message_id`` at ``timestamp``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(secrets_: list[str], message_id: str, timestamp: int,
                      body: str) -> dict[str, str]:
    """The three ``webhook-*`` headers, signed with every secret in ``secrets_``."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(secret, message_id, timestamp, body)
                                          for secret in secrets_)}
