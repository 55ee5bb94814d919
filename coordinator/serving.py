"""Serving stored bytes over HTTP the way players expect: ETag, conditional GET and a single
HTTP Range (206), so a ``<video>`` can seek. Reads run in a thread (boto3 and file I/O block)."""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from coordinator.envelope import APIError
from coordinator.storage import ObjectNotFound, ObjectStore

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Bigger than any object we store; a position past it is clamped to it. RFC 9110 lets a
# last-pos past the end mean "to the end", and Python refuses int() of over 4300 digits.
_BEYOND_ANY_OBJECT = 2**63


def _position(digits: str) -> int:
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) < 19 else _BEYOND_ANY_OBJECT


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for one satisfiable range; None means "send it all".

    Several ranges, or a malformed header, are ignored (RFC 9110 allows serving the whole
    representation); a well-formed range outside the object is a 416. Positions of any length
    are read (a huge last-pos means "to the end").
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = _position(last)
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if start >= size or (last and _position(last) < start):
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> APIError:
    return APIError(416, f"Requested range not satisfiable (object is {size} bytes)",
                    "range_not_satisfiable", headers={"Content-Range": f"bytes */{size}"})


async def serve_object(request: Request, store: ObjectStore, key: str, *, content_type: str,
                       etag: str | None, filename: str | None = None) -> Response:
    try:
        size = (await run_in_threadpool(store.info, key)).size
    except ObjectNotFound:
        raise APIError(404, "The stored file is missing", "object_missing") from None
    headers = {
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=3600",
    }
    if etag:
        headers["ETag"] = f'"{etag}"'
        if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', f'W/"{etag}"', "*"):
            return Response(status_code=304, headers=headers)
    if filename:
        headers["Content-Disposition"] = f'inline; filename="{filename}"'
    byte_range = parse_range(request.headers.get("range"), size)
    if request.headers.get("if-range") and etag and request.headers["if-range"].strip() != f'"{etag}"':
        byte_range = None  # the client's partial copy is stale: send everything
    if size == 0:
        return Response(b"", media_type=content_type, headers=headers)
    start, end = byte_range if byte_range else (0, size - 1)
    headers["Content-Length"] = str(end - start + 1)
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if request.method == "HEAD":
        return Response(status_code=206 if byte_range else 200, media_type=content_type,
                        headers=headers)
    # A sync iterator: Starlette pulls each chunk in a worker thread.
    return StreamingResponse(store.iter_range(key, start, end), status_code=206 if byte_range else 200,
                             media_type=content_type, headers=headers)
