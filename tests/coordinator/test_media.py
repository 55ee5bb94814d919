"""File types are judged from the bytes: real files where we can make them, hand-built headers
for the rest, and the things we must never accept (SVG, HTML, text dressed up as an image)."""

from __future__ import annotations

import io
import random
import subprocess
import wave
from pathlib import Path

import pytest
from PIL import Image

from coordinator.envelope import APIError
from coordinator.media import (SNIFF_BYTES, DetectedMedia, check_claimed_type, require_media,
                               sniff_media, unsupported_media)


def _image(fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x00" * 80)
    return buffer.getvalue()


def _sniff(data: bytes) -> tuple[str, str, str] | None:
    found = sniff_media(data[:SNIFF_BYTES])
    return None if found is None else (found.format, found.content_type, found.asset_type)


def test_sniff_bytes_is_small():
    assert 16 <= SNIFF_BYTES <= 4096


@pytest.mark.parametrize(("data", "expected"), [
    (_image("PNG"), ("png", "image/png", "image")),
    (_image("JPEG"), ("jpeg", "image/jpeg", "image")),
    (_image("GIF"), ("gif", "image/gif", "image")),
    (_image("WEBP"), ("webp", "image/webp", "image")),
    (_wav(), ("wav", "audio/wav", "audio")),
], ids=["png", "jpeg", "gif", "webp", "wav"])
def test_real_files(data: bytes, expected: tuple[str, str, str]):
    assert _sniff(data) == expected


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = b"ftyp" + major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (len(body) + 4).to_bytes(4, "big") + body + b"\x00\x00\x00\x08free"


def _ebml(doc_type: bytes | None) -> bytes:
    children = b"\x42\x86\x81\x01" + b"\x42\xf7\x81\x01" + b"\x42\xf2\x81\x04" + b"\x42\xf3\x81\x08"
    if doc_type is not None:
        children += b"\x42\x82" + bytes([0x80 | len(doc_type)]) + doc_type
    children += b"\x42\x87\x81\x04" + b"\x42\x85\x81\x02"
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(children)]) + children + b"\x18\x53\x80\x67"


@pytest.mark.parametrize(("data", "expected"), [
    (_ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), ("mp4", "video/mp4", "video")),
    (_ftyp(b"mp42", b"mp42", b"isom"), ("mp4", "video/mp4", "video")),
    (_ftyp(b"dash", b"iso6", b"avc1"), ("mp4", "video/mp4", "video")),
    (_ftyp(b"XAVC", b"XAVC", b"mp42", b"iso2"), ("mp4", "video/mp4", "video")),  # via compatible
    (_ftyp(b"M4V ", b"M4V ", b"M4A ", b"mp42", b"isom"), ("m4v", "video/mp4", "video")),
    (_ftyp(b"qt  ", b"qt  "), ("mov", "video/quicktime", "video")),
    (_ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), ("m4a", "audio/mp4", "audio")),
    (_ebml(b"webm"), ("webm", "video/webm", "video")),
    (_ebml(b"matroska"), ("mkv", "video/x-matroska", "video")),
    (_ebml(None), ("mkv", "video/x-matroska", "video")),
    (b"ID3\x04\x00\x00\x00\x00\x00\x22TSSE", ("mp3", "audio/mpeg", "audio")),
    (b"\xff\xfb\x90\x64" + bytes(60), ("mp3", "audio/mpeg", "audio")),  # MPEG-1 Layer III frame
    (b"\xff\xf3\x40\xc4" + bytes(60), ("mp3", "audio/mpeg", "audio")),  # MPEG-2 Layer III frame
    (b"OggS\x00\x02" + bytes(20) + b"\x01\x1e\x01vorbis", ("ogg", "audio/ogg", "audio")),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", ("pdf", "application/pdf", "document")),
], ids=["mp4-isom", "mp4-mp42", "mp4-dash", "mp4-compatible", "m4v", "mov", "m4a", "webm",
        "mkv", "mkv-no-doctype", "mp3-id3", "mp3-frame", "mp3-mpeg2-frame", "ogg", "pdf"])
def test_headers(data: bytes, expected: tuple[str, str, str]):
    assert _sniff(data) == expected


def _ffmpeg() -> str:
    import imageio_ffmpeg  # a project dependency: the real ffmpeg binary ships in the wheel

    return imageio_ffmpeg.get_ffmpeg_exe()


_VIDEO = ["-f", "lavfi", "-i", "color=c=red:s=16x16:d=0.04"]
_AUDIO = ["-f", "lavfi", "-i", "sine=d=0.05"]


@pytest.mark.parametrize(("name", "args", "expected"), [
    ("a.mp4", _VIDEO + ["-c:v", "mpeg4"], "mp4"),
    ("a.m4v", _VIDEO + ["-c:v", "mpeg4"], "m4v"),
    ("a.mov", _VIDEO + ["-c:v", "mpeg4"], "mov"),
    ("a.webm", _VIDEO + ["-c:v", "libvpx"], "webm"),
    ("a.mkv", _VIDEO + ["-c:v", "mpeg4"], "mkv"),
    ("a.mp3", _AUDIO, "mp3"),
    ("b.mp3", _AUDIO + ["-id3v2_version", "0", "-write_xing", "0"], "mp3"),  # bare frames
    ("a.ogg", _AUDIO, "ogg"),
    ("a.m4a", _AUDIO, "m4a"),
    ("a.wav", _AUDIO, "wav"),
])
def test_files_made_by_ffmpeg(tmp_path: Path, name: str, args: list[str], expected: str):
    exe = _ffmpeg()
    out = tmp_path / name
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args, str(out)],
                   check=True, timeout=30)
    found = sniff_media(out.read_bytes()[:SNIFF_BYTES])
    assert found is not None and found.format == expected


@pytest.mark.parametrize("data", [
    b"",
    b"\x89PN",
    b"hello, this is just text pretending to be a PNG\n",
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
    b"\xef\xbb\xbf<!DOCTYPE html><html><script>alert(1)</script></html>",
    b"  \n<html><body>hi</body></html>",
    b"<script>alert(1)</script>",
    b"RIFF\x24\x00\x00\x00AVI LIST",                    # AVI: not a format we accept
    _ftyp(b"heic", b"mif1", b"heic"),                    # HEIF image: not accepted
    _ebml(b"something"),                                 # EBML but not Matroska
    b"\xff\xf1\x50\x80\x02\x1f\xfc",                     # AAC ADTS: sync bits, but not Layer III
    b"\xff\xfb\xf0\x64" + bytes(60),                     # "Layer III" with a reserved bitrate
    b"PK\x03\x04\x14\x00\x00\x00",                       # zip
    b"MZ\x90\x00\x03\x00",                               # executable
    b"#!/bin/sh\nrm -rf /\n",
], ids=["empty", "short-png", "text", "svg", "svg-xml", "html-bom", "html", "script", "avi",
        "heic", "ebml-other", "aac-adts", "bad-mp3-frame", "zip", "exe", "shell"])
def test_not_recognised(data: bytes):
    assert sniff_media(data) is None


def test_random_bytes_never_raise():
    rng = random.Random(1234)
    prefixes = [b"", b"\x1a\x45\xdf\xa3", b"\x00\x00\x00\x20ftyp", b"RIFF", b"\xff\xfb", b"ID3"]
    for _ in range(3000):
        head = rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 80))
        result = sniff_media(head)
        assert result is None or isinstance(result, DetectedMedia)


def test_text_claiming_png_is_unsupported():
    text = b"definitely a png, trust me\n" * 10
    with pytest.raises(APIError) as caught:
        require_media(text)
    assert caught.value.status == 400
    assert caught.value.code == "unsupported_media_type"
    assert caught.value.message.startswith("Unsupported file type")
    assert "PNG, JPEG" in caught.value.message and "SVG" not in caught.value.message
    assert unsupported_media().code == "unsupported_media_type"


def test_pdf_claimed_as_image_is_a_mismatch():
    pdf = sniff_media(b"%PDF-1.4\n")
    assert pdf is not None
    with pytest.raises(APIError) as caught:
        check_claimed_type("image", pdf)
    assert caught.value.status == 400
    assert caught.value.code == "asset_type_mismatch"
    assert "The file is a PDF document, not an image" in caught.value.message


@pytest.mark.parametrize(("claimed", "data"), [
    ("video", b"ID3\x04\x00\x00\x00\x00\x00\x22"),
    ("audio", _image("PNG")),
    ("document", _image("JPEG")),
    ("image", _ftyp(b"isom", b"isom")),
])
def test_other_mismatches(claimed: str, data: bytes):
    detected = sniff_media(data)
    assert detected is not None
    with pytest.raises(APIError) as caught:
        check_claimed_type(claimed, detected)
    assert caught.value.code == "asset_type_mismatch"
    assert detected.asset_type in caught.value.message


@pytest.mark.parametrize("claimed", [None, "", "image"])
def test_matching_or_missing_claim_is_fine(claimed: str | None):
    detected = sniff_media(_image("PNG"))
    assert detected is not None
    check_claimed_type(claimed, detected)


def test_detected_media_is_frozen():
    detected = sniff_media(_image("GIF"))
    assert detected is not None
    with pytest.raises(AttributeError):
        detected.format = "svg"  # type: ignore[misc]
