"""Assets over HTTP, through both object stores (local directory; S3 on moto's server)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
from collections.abc import Iterator

import pytest
from PIL import Image

from coordinator.storage import make_object_store
from tests.conftest import create_campaign, create_client

# 127.0.0.2/.3 stand in for public hosts; 127.0.0.1 stays an internal address.
SETTINGS_OVERRIDES = {"url_import_allow_networks": ["127.0.0.2/32", "127.0.0.3/32"]}


def png_bytes(size=(32, 24), color=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def stored_keys(api) -> set[str]:
    """What is actually in the object store, read back through the store itself."""
    store = make_object_store(api.settings)
    if api.settings.s3_bucket:
        listing = store.client.list_objects_v2(Bucket=api.settings.s3_bucket)
        return {item["Key"] for item in listing.get("Contents", [])}
    root = api.settings.objects_dir
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def upload(http, content: bytes, filename="photo.png", **form):
    data = {key: value for key, value in form.items() if value is not None}
    return http.post("/api/v3/assets", files={"file": (filename, content, "image/png")}, data=data)


def test_upload_round_trip_with_range_and_etag(alice, api):
    client = create_client(alice)
    campaign = create_campaign(alice, client["id"])
    content = png_bytes()
    response = upload(alice, content, name="Hero", type="image", clientId=client["id"],
                      campaignId=campaign["id"], tags=json.dumps(["summer", "hero"]))
    assert response.status_code == 201, response.text
    asset = response.json()["data"]
    assert asset["format"] == "png" and asset["size"] == len(content) and asset["type"] == "image"
    assert asset["url"] == f"/api/v3/assets/{asset['id']}/data"
    assert asset["tags"] == ["summer", "hero"]
    assert asset["clientId"] == client["id"] and asset["campaignId"] == campaign["id"]
    assert f"assets/{asset['id']}" in stored_keys(api)

    data = alice.get(asset["url"])
    assert data.status_code == 200 and data.content == content
    assert data.headers["content-type"] == "image/png"
    assert data.headers["etag"] == f'"{hashlib.sha256(content).hexdigest()}"'
    assert data.headers["accept-ranges"] == "bytes"

    part = alice.get(asset["url"], headers={"Range": "bytes=8-15"})
    assert part.status_code == 206 and part.content == content[8:16]
    assert part.headers["content-range"] == f"bytes 8-15/{len(content)}"
    tail = alice.get(asset["url"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == content[-10:]
    unsatisfiable = alice.get(asset["url"], headers={"Range": f"bytes={len(content)}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == f"bytes */{len(content)}"
    cached = alice.get(asset["url"], headers={"If-None-Match": data.headers["etag"]})
    assert cached.status_code == 304

    assert alice.get(f"/api/v3/assets/{asset['id']}").json()["data"] == asset


def test_cookie_auth_serves_bytes_for_img_tags(alice, api):
    asset = upload(alice, png_bytes()).json()["data"]
    token = alice.headers["authorization"].split()[1]
    with api.client(user=None, cookies={"token": token}) as browser:
        assert browser.get(asset["url"]).status_code == 200


def test_list_filters_and_delete_removes_bytes(alice, api):
    client = create_client(alice)
    campaign = create_campaign(alice, client["id"])
    image = upload(alice, png_bytes(), clientId=client["id"]).json()["data"]
    in_campaign = upload(alice, png_bytes(color=(1, 2, 3)), campaignId=campaign["id"]).json()["data"]
    pdf = upload(alice, b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", filename="deck.pdf",
                 type="document").json()["data"]
    assert pdf["format"] == "pdf" and pdf["type"] == "document"
    # Naming a campaign files the asset under the campaign's client too.
    assert in_campaign["clientId"] == client["id"]

    def ids(**params):
        return {a["id"] for a in alice.get("/api/v3/assets", params=params).json()["data"]}

    assert ids() == {image["id"], in_campaign["id"], pdf["id"]}
    assert ids(client_id=client["id"]) == {image["id"], in_campaign["id"]}
    assert ids(campaign_id=campaign["id"]) == {in_campaign["id"]}
    assert ids(asset_type="document") == {pdf["id"]}
    assert alice.get("/api/v3/assets", params={"asset_type": "spreadsheet"}).status_code == 400

    assert alice.delete(f"/api/v3/assets/{image['id']}").status_code == 200
    assert alice.get(f"/api/v3/assets/{image['id']}").status_code == 404
    assert alice.get(image["url"]).status_code == 404
    assert f"assets/{image['id']}" not in stored_keys(api)

    # Deleting the client takes its campaign's assets and their bytes with it.
    assert alice.delete(f"/api/v3/clients/{client['id']}").status_code == 200
    assert f"assets/{in_campaign['id']}" not in stored_keys(api)
    assert ids() == {pdf["id"]}


def test_bad_uploads_store_nothing(alice, api):
    before = stored_keys(api)
    too_big = b"\x89PNG\r\n\x1a\n" + b"\0" * (api.settings.max_upload_size_mb * 1024 * 1024 + 1)
    cases = {
        "oversize": (upload(alice, too_big), 413, "payload_too_large"),
        "not a png": (upload(alice, b"hello, I am text pretending to be a PNG"), 400,
                      "unsupported_media_type"),
        "pdf claimed as image": (upload(alice, b"%PDF-1.7\n", filename="x.png", type="image"), 400,
                                 "asset_type_mismatch"),
        "svg": (upload(alice, b"<svg xmlns='http://www.w3.org/2000/svg'><script>x</script></svg>"),
                400, "unsupported_media_type"),
        "unknown type": (upload(alice, png_bytes(), type="hologram"), 400, "validation_error"),
        "bad tags": (upload(alice, png_bytes(), tags="not json"), 400, "validation_error"),
        "tags not strings": (upload(alice, png_bytes(), tags="[1, 2]"), 400, "validation_error"),
        "someone else's client": (upload(alice, png_bytes(), clientId="nope"), 400, "unknown_client"),
        "no file": (alice.post("/api/v3/assets", data={"name": "x"}), 400, "validation_error"),
    }
    for label, (response, status, code) in cases.items():
        assert response.status_code == status, (label, response.text)
        assert response.json()["code"] == code, label
        assert response.json()["data"] is None and response.json()["error"], label
    assert "not an image" in cases["pdf claimed as image"][0].json()["error"].lower() or \
        "pdf" in cases["pdf claimed as image"][0].json()["error"].lower()
    assert stored_keys(api) == before
    assert alice.get("/api/v3/assets").json()["meta"]["total"] == 0


def test_other_users_assets_are_invisible(alice, bob, api):
    content = png_bytes()
    asset = upload(alice, content).json()["data"]
    keys = stored_keys(api)
    for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/data")]:
        response = bob.request(method, f"/api/v3/assets/{asset['id']}{suffix}")
        assert response.status_code == 404, (method, suffix)
        assert response.json()["code"] == "asset_not_found"
    assert bob.get("/api/v3/assets").json()["data"] == []
    bobs_client = create_client(bob)
    response = upload(alice, png_bytes(), clientId=bobs_client["id"])
    assert response.status_code == 400
    # The owner's asset is exactly as it was (every field, updatedAt too), bytes included.
    assert alice.get(f"/api/v3/assets/{asset['id']}").json()["data"] == asset
    data = alice.get(f"/api/v3/assets/{asset['id']}/data")
    assert data.status_code == 200 and data.content == content
    assert stored_keys(api) == keys


# ---- import from URL --------------------------------------------------------------------------

class _Recorder(http.server.BaseHTTPRequestHandler):
    """Serves routes from a dict; counts every request it receives."""

    routes: dict = {}
    hits: list

    def do_GET(self):  # noqa: N802
        self.hits.append(self.path)
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


def _serve(host: str, routes: dict) -> tuple[http.server.ThreadingHTTPServer, list]:
    hits: list = []
    handler = type("Handler", (_Recorder,), {"routes": routes, "hits": hits})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture(scope="module")
def web() -> Iterator[dict]:
    internal, internal_hits = _serve("127.0.0.1", {"/secret": (200, {}, b"internal data")})
    internal_url = f"http://127.0.0.1:{internal.server_address[1]}/secret"
    public, _ = _serve("127.0.0.2", {
        "/logo.png": (200, {"Content-Type": "image/png"}, png_bytes(color=(9, 9, 9))),
        "/to-internal": (302, {"Location": internal_url}, b""),
        "/text.png": (200, {"Content-Type": "image/png"}, b"plain text"),
        "/huge.png": (200, {}, b"\x89PNG\r\n\x1a\n" + b"\0" * (1024 * 1024 + 10)),
    })
    yield {"public": f"http://127.0.0.2:{public.server_address[1]}",
           "internal_port": internal.server_address[1], "internal_hits": internal_hits}
    internal.shutdown()
    public.shutdown()


def test_import_from_url(alice, api, web):
    response = alice.post("/api/v3/assets/from-url", json={"url": web["public"] + "/logo.png",
                                                           "tags": ["logo"]})
    assert response.status_code == 201, response.text
    asset = response.json()["data"]
    assert asset["format"] == "png" and asset["name"] == "logo.png" and asset["tags"] == ["logo"]
    assert alice.get(asset["url"]).content == png_bytes(color=(9, 9, 9))


def test_import_refuses_internal_addresses(alice, api, web):
    port = web["internal_port"]
    before = stored_keys(api)
    refused = [
        f"http://127.0.0.1:{port}/secret", f"http://127.1:{port}/secret",
        f"http://2130706433:{port}/secret", f"http://0x7f000001:{port}/secret",
        f"http://[::ffff:127.0.0.1]:{port}/secret", f"http://localhost:{port}/secret",
        "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/",
        "file:///etc/passwd", "ftp://example.com/x", web["public"] + "/to-internal",
    ]
    for url in refused:
        response = alice.post("/api/v3/assets/from-url", json={"url": url})
        assert 400 <= response.status_code < 500, (url, response.text)
        assert response.json()["data"] is None and response.json()["error"], url
    assert web["internal_hits"] == []  # the stand-in internal service never saw a request
    for url, status in [(web["public"] + "/text.png", 400), (web["public"] + "/huge.png", 413),
                        (web["public"] + "/nope.png", 400)]:
        assert alice.post("/api/v3/assets/from-url", json={"url": url}).status_code == status, url
    assert stored_keys(api) == before
    assert alice.get("/api/v3/assets").json()["meta"]["total"] == 0
