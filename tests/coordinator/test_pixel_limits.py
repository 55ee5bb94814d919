"""Pixel bombs (issue 8, item 4): images are measured from their headers at upload, at import
from a URL and when a job would use one as its product photo, against the documented limits
(``MAX_IMAGE_PIXELS``, ``MAX_IMAGE_SIDE``, ``MAX_IMAGE_FRAMES``); the product photo decode in
the job actor refuses them too. The bombs are real, valid files of a few kilobytes."""

from __future__ import annotations

import http.server
import io
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import replace

import pytest
from PIL import Image

from actors import steps
from coordinator.app import create_app
from coordinator.media import ImageLimits, ImageRejected, check_image
from coordinator.settings import Settings
from coordinator.storage import LocalObjectStore
from tests.conftest import LiveServer, create_client
from tests.coordinator.test_assets import png_bytes, stored_keys, upload
from tests.jobs_helpers import job_body

# 127.0.0.2 stands in for a public host (as in test_assets).
SETTINGS_OVERRIDES = {"url_import_allow_networks": ["127.0.0.2/32"]}
DEFAULTS = Settings()  # the documented limits: the tests run against them


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def empty_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, compressed row by row so its pixels are never held in
    memory: 13000×13000 is about 20 KB."""
    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def animation(image_format: str, frames: int) -> bytes:
    images = [Image.new("L", (2, 2), 255 * (i % 2)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format=image_format, save_all=True, append_images=images[1:],
                   duration=40, **({"lossless": True} if image_format == "WEBP" else {}))
    with Image.open(io.BytesIO(buffer.getvalue())) as check:
        assert check.n_frames == frames
    return buffer.getvalue()


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP whose header declares ``width``×``height`` (its data is 2×2)."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="WEBP", lossless=True)
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
    data[21:25] = (bits | (width - 1) | ((height - 1) << 14)).to_bytes(4, "little")
    return bytes(data)


def assert_refused(response, code: str = "image_too_large") -> dict:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == code and body["data"] is None
    return body


BOMBS = {
    "13000x13000 PNG": lambda: empty_png(13000, 13000),
    "20000x20000 PNG (past Pillow's own guard)": lambda: empty_png(20000, 20000),
    "longer side over the limit": lambda: empty_png(DEFAULTS.max_image_side + 1, 8),
    "GIF with too many frames": lambda: animation("GIF", DEFAULTS.max_image_frames + 1),
    "WebP with too many frames": lambda: animation("WEBP", DEFAULTS.max_image_frames + 1),
    "WebP declaring a 9000x9000 canvas": lambda: webp_declaring(9000, 9000),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_upload_refuses_pixel_bombs_and_stores_nothing(alice, api, name):
    content = BOMBS[name]()
    assert len(content) < 200 * 1024  # each is a small file
    before = stored_keys(api)
    body = assert_refused(upload(alice, content, filename="bomb.png"))
    assert "image" in body["error"]
    assert alice.get("/api/v3/assets").json()["meta"]["total"] == 0
    assert stored_keys(api) == before


def test_upload_message_names_the_size_and_the_limit(alice):
    body = assert_refused(upload(alice, empty_png(13000, 13000)))
    assert "13000×13000" in body["error"] and "40 megapixels" in body["error"]


def test_images_within_the_limits_are_accepted(alice):
    largest = upload(alice, empty_png(DEFAULTS.max_image_side, 3000))  # 36 MP
    assert largest.status_code == 201, largest.text
    animated = upload(alice, animation("GIF", DEFAULTS.max_image_frames), filename="a.gif")
    assert animated.status_code == 201, animated.text


def test_an_unreadable_image_header_is_refused(alice):
    assert_refused(upload(alice, b"\x89PNG\r\n\x1a\n" + b"\0" * 64), code="invalid_image")


@pytest.fixture(scope="module")
def bomb_site() -> Iterator[str]:
    bomb = empty_png(13000, 13000)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_address[1]}/product.png"
    server.shutdown()


def test_import_from_url_refuses_a_pixel_bomb(alice, api, bomb_site):
    before = stored_keys(api)
    assert_refused(alice.post("/api/v3/assets/from-url", json={"url": bomb_site}))
    assert alice.get("/api/v3/assets").json()["meta"]["total"] == 0
    assert stored_keys(api) == before


def test_a_job_refuses_a_product_image_stored_under_looser_limits(api):
    """An image stored before the limits were lowered (here: by a replica with looser ones) is
    refused when a job would decode it, with no job created."""
    user = f"pixels-{uuid.uuid4().hex[:8]}"
    loose = api.settings.model_copy(update={"max_image_pixels": 100_000_000,
                                            "max_image_side": 20_000})
    with api.client(user) as http, LiveServer(create_app(loose)) as loose_replica:
        stored = http.post(loose_replica.url + "/api/v3/assets",
                           files={"file": ("big.png", empty_png(9000, 9000), "image/png")})
        assert stored.status_code == 201, stored.text
        client = create_client(http)
        body = job_body(client["id"], productImageAssetId=stored.json()["data"]["id"])

        for path in ("/api/v3/jobs", "/api/v3/jobs/dry-run"):
            refused = assert_refused(http.post(path, json=body))
            assert refused["error"].startswith("advanced.productImageAssetId: The image is 9000×9000")
        assert http.get("/api/v3/jobs").json()["meta"]["total"] == 0

        fine = upload(http, png_bytes(size=(640, 480))).json()["data"]
        accepted = http.post("/api/v3/jobs", json=job_body(client["id"], productImageAssetId=fine["id"]))
        assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize("frames", [1, 2, 40])
def test_gif_frames_are_counted_exactly_at_the_limit(frames):
    """GIFs with comments, a loop extension and a palette per frame: accepted with exactly
    their frame count as the limit, refused with one less."""
    images = [Image.new("RGB", (3, 2), (i * 37 % 256, 10, 200)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   comment=b"made for a test", duration=40)
    limits = ImageLimits.from_settings(DEFAULTS)
    check_image(io.BytesIO(buffer.getvalue()), "gif", replace(limits, max_frames=frames))
    if frames > 1:
        with pytest.raises(ImageRejected):
            check_image(io.BytesIO(buffer.getvalue()), "gif", replace(limits, max_frames=frames - 1))


# ---- the decode in the job actor --------------------------------------------------------------

def test_product_photo_decode_refuses_a_bomb(tmp_path):
    objects = LocalObjectStore(tmp_path)
    objects.put_bytes("assets/bomb", empty_png(13000, 13000), "image/png")
    with pytest.raises(steps.StepFailed) as caught:
        steps.product_image_png(objects, "assets/bomb", 256, 144,
                                limits=ImageLimits.from_settings(DEFAULTS))
    assert caught.value.code == "image_too_large" and "13000×13000" in caught.value.message


def test_product_photo_decode_keeps_orientation_and_colours_when_shrinking(tmp_path):
    """A large JPEG shot sideways (EXIF orientation 6) is decoded at a reduced scale and still
    comes out upright: what is left in the stored pixels is at the top once turned."""
    photo = Image.new("RGB", (4000, 2000), (220, 20, 20))
    photo.paste((20, 20, 220), (2000, 0, 4000, 2000))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    objects = LocalObjectStore(tmp_path)
    objects.put_bytes("assets/photo", buffer.getvalue(), "image/jpeg")

    png = steps.product_image_png(objects, "assets/photo", 144, 256,
                                  limits=ImageLimits.from_settings(DEFAULTS))
    with Image.open(io.BytesIO(png)) as framed:
        assert framed.size == (144, 256)
        top, bottom = framed.getpixel((72, 10)), framed.getpixel((72, 245))
    assert top[0] > 180 and top[2] < 60  # red: the left half, turned to the top
    assert bottom[2] > 180 and bottom[0] < 60
