"""Object storage: a local directory by default, S3 (or any S3-compatible server) via boto3.

Keys are built by us from ids (``assets/<id>``, ``jobs/<job>/scenes/<scene>/image-v2.png``),
never from anything a client sent. The methods are synchronous (boto3 is); async callers run
them in a thread so the event loop never blocks.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from coordinator.settings import Settings

CHUNK_SIZE = 256 * 1024
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")


class ObjectNotFound(Exception):
    pass


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (ours are built from ids; this is a backstop)."""
    if not _SAFE_KEY.match(key) or ".." in key.split("/") or "//" in key:
        raise ValueError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    size: int


class ObjectStore(Protocol):
    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None: ...
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]: ...
    def info(self, key: str) -> ObjectInfo: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def download_to(self, key: str, path: Path) -> None: ...
    def presigned_url(self, key: str, expires_s: int) -> str | None: ...


class LocalObjectStore:
    """Objects as files under one directory; writes land atomically via rename."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK_SIZE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        import io

        self.put_file(key, io.BytesIO(data), content_type)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` inclusive, in chunks."""
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        with handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = handle.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def info(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(size=self._path(key).stat().st_size)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Everything under ``prefix`` (which ends in ``/``)."""
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    def download_to(self, key: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return None  # served through the API


class S3ObjectStore:
    """Objects in an S3 bucket (AWS, or any S3-compatible server through ``endpoint_url``)."""

    def __init__(self, settings: Settings):
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"},
                          signature_version="s3v4", connect_timeout=10, read_timeout=60),
        )

    def _not_found(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        # upload_fileobj streams in parts; it never reads the whole file into memory.
        self.client.upload_fileobj(source, self.bucket, check_key(key),
                                   ExtraArgs={"ContentType": content_type})

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data,
                               ContentType=content_type)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectNotFound(key) from None
            raise

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=check_key(key),
                                          Range=f"bytes={start}-{end}")["Body"]
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectNotFound(key) from None
            raise
        try:
            yield from body.iter_chunks(CHUNK_SIZE)
        finally:
            body.close()

    def info(self, key: str) -> ObjectInfo:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectNotFound(key) from None
            raise
        return ObjectInfo(size=head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def delete_prefix(self, prefix: str) -> None:
        """Everything under ``prefix`` (which ends in ``/``), a page of 1000 keys at a time."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=check_key(prefix.rstrip("/")) + "/"):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    def download_to(self, key: str, path: Path) -> None:
        try:
            self.client.download_file(self.bucket, check_key(key), str(path))
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectNotFound(key) from None
            raise

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": check_key(key)},
            ExpiresIn=expires_s)


def make_object_store(settings: Settings) -> ObjectStore:
    if settings.s3_bucket:
        return S3ObjectStore(settings)
    return LocalObjectStore(settings.objects_dir)
