"""Riding out short outages of the database and the object store in the job actor: a call
that fails in a way that says "try again" (a dropped or refused connection, a locked SQLite
file, an S3 5xx or throttling) is retried a bounded number of times with exponential backoff;
then the failure stands and the job fails with a clear code."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Awaitable, Callable, TypeVar

import botocore.exceptions
import sqlalchemy.exc

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 6
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0  # six attempts span about 15 s of outage

_S3_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                   "RequestLimitExceeded", "ServiceUnavailable", "InternalError"}
_BOTO_NETWORK = (botocore.exceptions.EndpointConnectionError,
                 botocore.exceptions.ConnectionClosedError, botocore.exceptions.ReadTimeoutError,
                 botocore.exceptions.ConnectTimeoutError)
# OSErrors that are answers, not outages (a missing object, a bad path).
_PERMANENT_OS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return bool(exc.connection_invalidated)
    if isinstance(exc, _BOTO_NETWORK):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _S3_RETRY_CODES
    return isinstance(exc, OSError) and not isinstance(exc, _PERMANENT_OS)


async def retry_transient(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Awaits ``call()``, calling it again after transient failures (see ``is_transient``)."""
    delay = FIRST_DELAY_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt == ATTEMPTS or not is_transient(exc):
                raise
            log.warning("%s failed (%s: %s); retry %d/%d in %.1f s", what, type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "", attempt,
                        ATTEMPTS - 1, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
    raise AssertionError("unreachable")


def retried(what: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorates an async method so each call rides out transient failures."""
    def decorate(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> T:
            return await retry_transient(lambda: method(*args, **kwargs), what)
        return wrapper
    return decorate
