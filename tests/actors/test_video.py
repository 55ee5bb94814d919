"""Video production on the real farm: approve → clips on the clip renderer → ffmpeg composite →
object store → a playable ``videoUrl``, on SQLite + local objects and PostgreSQL + S3 (moto)."""

from __future__ import annotations

import html

import httpx
import numpy as np
import pytest

from actors.media_probe import extract_frame, probe_media
from coordinator.storage import make_object_store
from models.presets import get_preset
from tests.jobs_helpers import (caption_match, get_job, start_job, usage_rows, wait_actor_gone,
                                wait_for_status)

pytestmark = pytest.mark.ray

FRAME = 1 / 24


@pytest.fixture
def alice(farm):
    with farm.client("alice") as client:
        yield client


def download(alice: httpx.Client, url: str, **headers) -> httpx.Response:
    """A presigned S3 URL is fetched as a browser would: without our token."""
    if url.startswith("http"):
        return httpx.get(url, headers=headers, timeout=60)
    return alice.get(url, headers=headers)


def test_approve_to_completed_video(alice, farm, tmp_path):
    created = start_job(alice, sceneCount=3, durationSeconds=9, aspectRatio="16:9")
    job = wait_for_status(alice, created["id"], "storyboard_ready")
    assert alice.get(f"/api/v3/jobs/{job['id']}/video").status_code == 409
    approved = alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "approve"})
    assert approved.status_code == 200 and approved.json()["data"]["status"] == "video_processing"
    twice = alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "approve"})
    assert twice.status_code == 409 and twice.json()["code"] == "illegal_state"
    scene_edit = alice.put(f"/api/v3/jobs/{job['id']}/scenes/{job['storyboard']['scenes'][0]['id']}",
                           json={"script": "too late"})
    assert scene_edit.status_code == 409

    stages = set()
    done = wait_for_status(alice, job["id"], "completed", timeout=300)
    stages.add(done["progress"]["stage"])
    assert done["progress"]["percent"] == 100
    assert done["videoUrl"] and done["thumbnailUrl"]
    if farm.settings.s3_bucket:
        assert done["videoUrl"].startswith(farm.settings.s3_endpoint_url) and "Signature" in done["videoUrl"]
    else:
        assert done["videoUrl"] == f"/api/v3/jobs/{job['id']}/video"

    video = download(alice, done["videoUrl"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = tmp_path / "ad.mp4"
    path.write_bytes(video.content)
    info = probe_media(path, exact=True)
    width, height = get_preset("tiny").output_size["16:9"]
    planned = sum(s["duration"] for s in done["storyboard"]["scenes"]) + 2.0  # + the CTA card
    assert info.video_codec == "h264" and (info.width, info.height) == (width, height)
    assert planned == pytest.approx(9.0, abs=0.05)
    assert abs(info.duration_s - planned) <= 2 * FRAME
    assert video.content.index(b"moov") < video.content.index(b"mdat")  # +faststart

    part = download(alice, done["videoUrl"], Range="bytes=100-199")
    assert part.status_code == 206 and part.content == video.content[100:200]
    thumbnail = download(alice, done["thumbnailUrl"])
    assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"

    # Cost: measured from the ledger, stored on the job, counted in the stats.
    ledger = usage_rows(farm.settings, job["id"])
    assert {"image", "clip", "composite"} <= {row["kind"] for row in ledger}
    assert done["actualCost"] > 0
    assert done["actualCost"] == pytest.approx(sum(row["cost"] for row in ledger), abs=1e-5)
    client_id = done["clientId"]
    stats = alice.get(f"/api/v3/clients/{client_id}/stats").json()["data"]
    assert stats["videoCount"] == 1 and stats["totalSpend"] == pytest.approx(done["actualCost"])
    # A finished job is not approved again (changing its scenes starts a revision instead:
    # tests/actors/test_revision.py).
    again = alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "approve"})
    assert again.status_code == 409

    # Deleting the client deletes the job and every object it made.
    store = make_object_store(farm.settings)
    assert store.exists(f"jobs/{job['id']}/video.mp4")
    assert alice.delete(f"/api/v3/clients/{client_id}").status_code == 200
    assert alice.get(f"/api/v3/jobs/{job['id']}").status_code == 404
    for scene in done["storyboard"]["scenes"]:
        assert not store.exists(f"jobs/{job['id']}/scenes/{scene['id']}/image-v1.png")
    assert not store.exists(f"jobs/{job['id']}/video.mp4")


def test_auto_approve_runs_without_a_person(alice, farm, tmp_path):
    created = start_job(alice, sceneCount=2, durationSeconds=6, aspectRatio="1:1", autoApprove=True)
    done = wait_for_status(alice, created["id"], "completed", timeout=300)
    assert done["videoUrl"] and done["actualCost"] > 0 and done["aspectRatio"] == "1:1"
    # The video the API serves is square, at the preset's 1:1 output size.
    served = alice.get(f"/api/v3/jobs/{done['id']}/video")
    assert served.status_code == 200 and served.headers["content-type"] == "video/mp4"
    path = tmp_path / "square.mp4"
    path.write_bytes(served.content)
    info = probe_media(path)
    side, _ = get_preset("tiny").output_size["1:1"]
    assert info.video_codec == "h264" and info.width == info.height == side
    # Every stage of the timeline ran, in order (the review too, ended by the auto-approval).
    stages = done["stages"]
    assert [s["name"] for s in stages] == ["storyboard", "images", "review", "clips",
                                           "compositing", "upload"]
    assert all(s["status"] == "completed" and s["percent"] == 100 for s in stages), stages
    ends = [s["completedAt"] for s in stages]
    assert ends == sorted(ends) and all(s["startedAt"] <= s["completedAt"] for s in stages)
    # The metadata endpoint says what the delivered file is.
    meta = alice.get(f"/api/v3/jobs/{done['id']}/metadata").json()["data"]
    assert (meta["width"], meta["height"], meta["fps"]) == (info.width, info.height, info.fps)
    assert meta["codecs"] == {"video": info.video_codec, "audio": "aac"} and info.has_audio
    assert meta["fileSize"] == len(served.content)
    assert abs(meta["duration"] - info.duration_s) < 0.1


def test_hostile_scripts_render_literally(alice, farm, tmp_path):
    created = start_job(alice, sceneCount=2, durationSeconds=6, aspectRatio="9:16")
    job = wait_for_status(alice, created["id"], "storyboard_ready")
    hostile = "It's \"100%\" real: no; really!\n[in] %{pts} \\ drawtext=text='x' $(rm -rf /) {}"
    scene = job["storyboard"]["scenes"][0]
    edited = alice.put(f"/api/v3/jobs/{job['id']}/scenes/{scene['id']}", json={"script": hostile})
    assert edited.status_code == 200 and edited.json()["data"]["script"] == hostile
    alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "approve"})
    done = wait_for_status(alice, job["id"], "completed", timeout=300)
    path = tmp_path / "ad.mp4"
    path.write_bytes(download(alice, done["videoUrl"]).content)
    width, height = get_preset("tiny").output_size["9:16"]
    info = probe_media(path, exact=True)
    assert (info.width, info.height) == (width, height)

    # The caption in the middle of the first scene is the script drawn as written: the text
    # pixels of the compositor's own rendering of the literal script are all bright in the
    # frame, and renderings of what escaping or ffmpeg's text expansion would have shown
    # are not.
    middle = done["storyboard"]["scenes"][0]["duration"] / 2
    frame = np.asarray(extract_frame(path, middle).convert("L"))
    literal = caption_match(frame, hostile, tmp_path)
    assert literal >= 0.95, literal
    lookalikes = {
        "escaped for drawtext": hostile.replace("\\", "\\\\").replace("'", "\\'")
                                       .replace(":", "\\:").replace("%", "\\%"),
        "%{pts} expanded": hostile.replace("%{pts}", "0.000000"),
        "HTML-escaped": html.escape(hostile),
        "cut at the first quote": hostile.split("'")[0],
    }
    for what, text in lookalikes.items():
        assert caption_match(frame, text, tmp_path) <= literal - 0.1, what


def test_cancel_during_video_processing_leaves_no_video(alice, farm):
    created = start_job(alice, sceneCount=3, durationSeconds=9, preset="tiny-slow")
    job = wait_for_status(alice, created["id"], "storyboard_ready")
    alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "approve"})
    wait_for_status(alice, job["id"], "video_processing")
    cancelled = alice.post(f"/api/v3/jobs/{job['id']}/actions", json={"action": "cancel"})
    assert cancelled.status_code == 200
    final = get_job(alice, job["id"])
    assert final["status"] == "cancelled" and final["videoUrl"] is None
    assert alice.get(f"/api/v3/jobs/{job['id']}/video").status_code == 409
    store = make_object_store(farm.settings)
    assert not store.exists(f"jobs/{job['id']}/video.mp4")
    # Nothing finishes behind the cancel's back.
    wait_actor_gone(job["id"])
    assert get_job(alice, job["id"])["status"] == "cancelled"
    assert not store.exists(f"jobs/{job['id']}/video.mp4")
