"""What a file is, judged from its first bytes (magic numbers), never from its name or a claim.

Only formats the farm can use are recognised. Text formats a browser may execute when served
inline (SVG, HTML, XML) are deliberately never recognised, so they cannot be stored as assets.

Images are also measured from their headers (``check_image``) before anything decodes them: a
few kilobytes of PNG can declare a 13000×13000 canvas that takes a gigabyte to decode.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from coordinator.envelope import APIError
from coordinator.settings import Settings

# How many leading bytes ``sniff_media`` wants. Enough for an ISO BMFF ``ftyp`` box with its
# compatible brands and for a Matroska EBML header with its DocType.
SNIFF_BYTES = 512


@dataclass(frozen=True)
class DetectedMedia:
    format: str  # short name, e.g. "png", "mp4"
    content_type: str  # the MIME type to store and serve it with
    asset_type: str  # "image", "video", "audio" or "document"


PNG = DetectedMedia("png", "image/png", "image")
JPEG = DetectedMedia("jpeg", "image/jpeg", "image")
GIF = DetectedMedia("gif", "image/gif", "image")
WEBP = DetectedMedia("webp", "image/webp", "image")
MP4 = DetectedMedia("mp4", "video/mp4", "video")
M4V = DetectedMedia("m4v", "video/mp4", "video")
MOV = DetectedMedia("mov", "video/quicktime", "video")
WEBM = DetectedMedia("webm", "video/webm", "video")
MKV = DetectedMedia("mkv", "video/x-matroska", "video")
MP3 = DetectedMedia("mp3", "audio/mpeg", "audio")
WAV = DetectedMedia("wav", "audio/wav", "audio")
OGG = DetectedMedia("ogg", "audio/ogg", "audio")
M4A = DetectedMedia("m4a", "audio/mp4", "audio")
PDF = DetectedMedia("pdf", "application/pdf", "document")

ACCEPTED_FORMATS = "PNG, JPEG, GIF, WebP, MP4, M4V, MOV, WebM, MKV, MP3, WAV, OGG, M4A, PDF"

_DESCRIPTIONS = {
    "png": "a PNG image", "jpeg": "a JPEG image", "gif": "a GIF image", "webp": "a WebP image",
    "mp4": "an MP4 video", "m4v": "an M4V video", "mov": "a QuickTime (MOV) video",
    "webm": "a WebM video", "mkv": "a Matroska (MKV) video", "mp3": "an MP3 audio file",
    "wav": "a WAV audio file", "ogg": "an Ogg audio file", "m4a": "an M4A audio file",
    "pdf": "a PDF document",
}
_ARTICLE = {"image": "an image", "video": "a video", "audio": "an audio file",
            "document": "a document"}

# ISO BMFF (``ftyp``) brands, by what they say the file is.
_MP4_BRANDS = {b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42",
               b"avc1", b"dash", b"mmp4"}
_M4V_BRANDS = {b"M4V ", b"M4VH", b"M4VP"}
_MOV_BRANDS = {b"qt  "}
_M4A_BRANDS = {b"M4A "}


def sniff_media(head: bytes) -> DetectedMedia | None:
    """The format the leading bytes show (pass at least ``SNIFF_BYTES`` of them when the file
    is that long), or None when they are not one we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head[4:8] == b"ftyp":
        return _sniff_iso_bmff(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _sniff_ebml(head)
    if head[:4] == b"OggS" and head[4:5] == b"\x00":
        return OGG
    if _is_id3(head) or _is_mpeg_layer3_frame(head):
        return MP3
    if head.startswith(b"%PDF-"):
        return PDF
    return None


def _sniff_iso_bmff(head: bytes) -> DetectedMedia | None:
    """``[size:4][b"ftyp"][major brand:4][minor version:4][compatible brands:4 each...]``."""
    box_size = int.from_bytes(head[:4], "big")
    if box_size < 16 or len(head) < 12:
        return None
    major = head[8:12]
    for brands, media in ((_M4A_BRANDS, M4A), (_M4V_BRANDS, M4V), (_MOV_BRANDS, MOV),
                          (_MP4_BRANDS, MP4)):
        if major in brands:
            return media
    # An unfamiliar major brand: the compatible brands say what a reader may treat it as.
    body = head[16:min(box_size, len(head))]
    compatible = {body[i:i + 4] for i in range(0, len(body) - 3, 4)}
    for brands, media in ((_MP4_BRANDS, MP4), (_M4V_BRANDS, M4V), (_MOV_BRANDS, MOV),
                          (_M4A_BRANDS, M4A)):
        if compatible & brands:
            return media
    return None


def _read_vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``pos``: (value, position after it)."""
    if pos >= len(data) or data[pos] == 0:
        return None
    length = 9 - data[pos].bit_length()  # leading zero bits + 1
    if pos + length > len(data):
        return None
    value = int.from_bytes(data[pos:pos + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, pos + length


def _sniff_ebml(head: bytes) -> DetectedMedia | None:
    """Matroska/WebM: walk the EBML header's children looking for DocType (ID 0x4282)."""
    size = _read_vint(head, 4, keep_marker=False)
    if size is None:
        return MKV  # header cut short: an EBML file whose DocType we cannot see
    pos = size[1]
    end = min(len(head), pos + size[0])
    while pos < end:
        element = _read_vint(head, pos, keep_marker=True)
        if element is None:
            break
        element_id, pos = element
        length = _read_vint(head, pos, keep_marker=False)
        if length is None:
            break
        value_size, pos = length
        if element_id == 0x4282:
            if pos + value_size > len(head):
                break
            doc_type = head[pos:pos + value_size].rstrip(b"\x00")
            return {b"webm": WEBM, b"matroska": MKV}.get(doc_type)
        pos += value_size
    return MKV


def _is_id3(head: bytes) -> bool:
    """An ID3v2 tag: ``ID3``, major version 2-4, flags, and a 4-byte syncsafe size."""
    return (head[:3] == b"ID3" and len(head) >= 10 and 2 <= head[3] <= 4
            and all(b < 0x80 for b in head[6:10]))


def _is_mpeg_layer3_frame(head: bytes) -> bool:
    """An MPEG audio Layer III frame header: 11 sync bits, then no reserved field values."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    bitrate = head[2] >> 4
    sample_rate = (head[2] >> 2) & 0b11
    return version != 0b01 and layer == 0b01 and bitrate not in (0, 0xF) and sample_rate != 0b11


def describe(detected: DetectedMedia) -> str:
    """"a PDF document", "an MP4 video", ..."""
    return _DESCRIPTIONS.get(detected.format, f"a {detected.format.upper()} file")


def check_claimed_type(claimed: str | None, detected: DetectedMedia) -> None:
    """Refuses a client's claimed asset type (image, video, audio, document) that the bytes
    contradict. No claim means the detected type is used."""
    if not claimed or claimed == detected.asset_type:
        return
    what = _ARTICLE.get(claimed, repr(claimed))
    text = describe(detected)
    raise APIError(400, f"The file is {text}, not {what}. Send type \"{detected.asset_type}\" "
                        "or leave type out", "asset_type_mismatch")


def unsupported_media() -> APIError:
    """The error for bytes ``sniff_media`` does not recognise (the caller raises it)."""
    return APIError(400, f"Unsupported file type: the contents are not a format we accept. "
                         f"Accepted: {ACCEPTED_FORMATS}", "unsupported_media_type")


def require_media(head: bytes) -> DetectedMedia:
    """``sniff_media``, raising the unsupported-type error when it finds nothing."""
    detected = sniff_media(head)
    if detected is None:
        raise unsupported_media()
    return detected


# ---- image dimensions -------------------------------------------------------------------------

# Pillow's own bomb guard, set deliberately for every process that imports this module (the API
# and the job actors): it warns above this many pixels and refuses twice as many when an image
# is opened, before decoding (for WebP, before its decoder allocates the canvas). It is also the
# most ``Settings.max_image_pixels`` may be set to; that configured limit is checked first.
PILLOW_MAX_IMAGE_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = PILLOW_MAX_IMAGE_PIXELS

_PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int  # width × height of one frame
    max_side: int  # the longer side
    max_frames: int  # frames of an animated GIF, WebP or PNG

    @classmethod
    def from_settings(cls, settings: Settings) -> "ImageLimits":
        return cls(max_pixels=min(settings.max_image_pixels, PILLOW_MAX_IMAGE_PIXELS),
                   max_side=settings.max_image_side, max_frames=settings.max_image_frames)


class ImageRejected(Exception):
    """An image over the limits (``image_too_large``) or with a header that cannot be read
    (``invalid_image``). Callers turn it into their own kind of error."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code

    def as_api_error(self, field: str | None = None) -> APIError:
        return APIError(400, f"{field}: {self.message}" if field else self.message, self.code)


def check_image_size(width: int, height: int, frames: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ImageRejected(
            f"The image is {width}×{height} pixels ({_megapixels(width * height)}); images may "
            f"have at most {_megapixels(limits.max_pixels)} and {limits.max_side} pixels a side",
            "image_too_large")
    if frames > limits.max_frames:  # counting may stop there, so "more than" is all we know
        raise ImageRejected(f"The animated image has more than {limits.max_frames} frames, "
                            "the most accepted", "image_too_large")


def check_image(source: BinaryIO, image_format: str, limits: ImageLimits) -> None:
    """Raises ``ImageRejected`` unless the image in ``source`` (of the sniffed ``image_format``:
    png, jpeg, gif or webp) is within ``limits``. Only headers are read (frame headers too, for
    the frame count); no pixel is decoded. ``source`` is left at its start."""
    try:
        source.seek(0)
        if image_format == "webp":  # opening it allocates the canvas: measure it first
            size = _webp_canvas_size(source.read(30))
            if size:
                check_image_size(*size, frames=1, limits=limits)
            source.seek(0)
        try:
            with Image.open(source, formats=[_PILLOW_FORMATS[image_format]]) as image:
                width, height = image.size
                # Pillow's GIF frame count walks every frame; ours stops past the limit.
                frames = (_gif_frames_up_to(source, limits.max_frames) if image_format == "gif"
                          else getattr(image, "n_frames", 1))
            check_image_size(width, height, frames, limits)
        except Image.DecompressionBombError:
            raise ImageRejected(
                f"The image has more than {_megapixels(2 * PILLOW_MAX_IMAGE_PIXELS)}; images may "
                f"have at most {_megapixels(limits.max_pixels)}", "image_too_large") from None
        except (OSError, SyntaxError, ValueError, EOFError):  # how Pillow says "cannot read this"
            raise ImageRejected(f"The file looks like {_DESCRIPTIONS[image_format]}, but its header could "
                                "not be read (damaged or truncated)", "invalid_image") from None
    finally:
        source.seek(0)


def open_checked_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Opens image bytes for decoding, once their sniffed format and ``check_image`` allow it
    (so not even a WebP canvas is allocated for an image over the limits)."""
    detected = sniff_media(data[:SNIFF_BYTES])
    if detected is None or detected.asset_type != "image":
        raise ImageRejected("The file is not an image in a format we accept", "invalid_image")
    check_image(io.BytesIO(data), detected.format, limits)
    return Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[detected.format]])


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:g} megapixels"


def _gif_frames_up_to(source: BinaryIO, cap: int) -> int:
    """A GIF's frame count, found by walking its blocks (GIF89a spec) without decoding, and
    stopping once past ``cap``: thousands of tiny frames cost Pillow's count seconds."""
    source.seek(0)
    screen = source.read(13)  # signature and logical screen descriptor
    if len(screen) < 13:
        return 1
    if screen[10] & 0x80:  # global colour table
        source.seek(3 << ((screen[10] & 7) + 1), io.SEEK_CUR)
    frames = 0
    while frames <= cap:
        introducer = source.read(1)
        if introducer == b"\x2c":  # image descriptor: one frame
            descriptor = source.read(9)
            if len(descriptor) < 9:
                break
            if descriptor[8] & 0x80:  # local colour table
                source.seek(3 << ((descriptor[8] & 7) + 1), io.SEEK_CUR)
            source.seek(1, io.SEEK_CUR)  # LZW minimum code size
            frames += 1
        elif introducer == b"\x21":  # extension: its label, then data sub-blocks
            source.seek(1, io.SEEK_CUR)
        else:  # trailer, end of file or junk
            break
        while (size := source.read(1)) not in (b"", b"\0"):  # skip the sub-blocks
            source.seek(size[0], io.SEEK_CUR)
    return max(frames, 1)


def _webp_canvas_size(head: bytes) -> tuple[int, int] | None:
    """The canvas size a WebP file declares in its first 30 bytes (RFC 9649: the VP8X extended
    header, or a simple file's VP8L or VP8 frame header)."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        return (int.from_bytes(head[24:27], "little") + 1,
                int.from_bytes(head[27:30], "little") + 1)
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                int.from_bytes(head[28:30], "little") & 0x3FFF)
    return None


# ---- audio ------------------------------------------------------------------------------------

# The longest audio asset accepted (a music bed is looped to the ad; minutes are plenty), and
# how long ffmpeg may take to read one through.
MAX_AUDIO_SECONDS = 600.0
AUDIO_CHECK_TIMEOUT_S = 30.0


class AudioRejected(ImageRejected):
    """Audio bytes ffmpeg cannot decode (``invalid_audio``) or over the length limit
    (``audio_too_long``)."""


def check_audio(path: str, audio_format: str) -> float:
    """Decodes the whole audio file at ``path`` with the bundled ffmpeg (an argument list, a
    hard time limit) and returns its duration; raises ``AudioRejected`` unless it is audio
    ffmpeg can read through, of at most ``MAX_AUDIO_SECONDS``."""
    from actors.media_probe import MediaError, probe_media, run_ffmpeg  # ffmpeg only, no Ray

    what = _DESCRIPTIONS.get(audio_format, "an audio file")
    try:
        info = probe_media(path, timeout_s=AUDIO_CHECK_TIMEOUT_S)
    except MediaError:
        info = None
    if info is None or not info.has_audio:
        raise AudioRejected(f"The file looks like {what}, but ffmpeg finds no audio stream in "
                            "it (damaged, truncated or not audio)", "invalid_audio")
    if info.duration_s > MAX_AUDIO_SECONDS:
        raise AudioRejected(f"The audio lasts {info.duration_s:.0f} s; audio assets may last at "
                            f"most {MAX_AUDIO_SECONDS:.0f} s", "audio_too_long")
    try:  # a header can lie: read every packet through the decoder, past the limit at most
        run_ffmpeg(["-nostdin", "-v", "error", "-i", path, "-map", "0:a:0",
                    "-t", f"{MAX_AUDIO_SECONDS + 1:g}", "-f", "null", "-"],
                   timeout_s=AUDIO_CHECK_TIMEOUT_S, what="ffmpeg audio check")
    except MediaError:
        raise AudioRejected(f"The file looks like {what}, but its audio could not be decoded "
                            "(damaged or truncated)", "invalid_audio") from None
    return info.duration_s
