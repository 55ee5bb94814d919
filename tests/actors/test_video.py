"""Video production on the real farm: approve → clips on the clip renderer → ffmpeg composite →
object store → a playable ``videoUrl``, on SQLite + local objects and PostgreSQL + S3 (moto); and
revisions of a finished video."""

from __future__ import annotations

import html
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from actors.media_probe import extract_frame, probe_media
from coordinator.storage import make_object_store
from models.presets import get_preset
from tests.jobs_helpers import (caption_match, database_rows, get_job, job_object_keys, start_job,
                                usage_rows, wait_actor_gone, wait_for, wait_for_status)

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


# ---- revising a finished video --------------------------------------------------------------

NEW_LINE = "Now in lemon too"
RENDERS = ("image", "clip")


def fetched(alice: httpx.Client, url: str) -> bytes:
    response = download(alice, url)
    assert response.status_code == 200, response.text
    return response.content


def same_url(first: str, second: str) -> bool:
    """The same object: a presigned URL's path names it (its query is signed anew on every
    read); this API's URL names the revision in its query (``?r=1``)."""
    if first.startswith("http"):
        return urlsplit(first).path == urlsplit(second).path
    return first == second


def renders(ledger: list[dict]) -> list[tuple[str, str]]:
    return sorted((row["kind"], row["scene_id"]) for row in ledger if row["kind"] in RENDERS)


def test_revising_one_scene_renders_only_that_scene(alice, farm, tmp_path):
    """One scene of a finished job changed: only its image and clip are rendered again, the
    other clips are reused, the previous video is served until the revised one replaces it and
    is then deleted; a revision cancelled while it renders leaves the job completed with the
    video it had."""
    settings = farm.settings
    job_id = start_job(alice, sceneCount=3, durationSeconds=9, autoApprove=True)["id"]
    first = wait_for_status(alice, job_id, "completed", timeout=300)
    scenes = first["storyboard"]["scenes"]
    changed = scenes[0]
    before = database_rows(settings, job_id)
    objects_before = job_object_keys(settings, job_id)
    ledger_before = usage_rows(settings, job_id)
    first_video = fetched(alice, first["videoUrl"])
    first_meta = alice.get(f"/api/v3/jobs/{job_id}/metadata").json()["data"]
    old = before["job"][0]
    old_scene = before["scenes"][0]
    scene_url = f"/api/v3/jobs/{job_id}/scenes/{changed['id']}"

    # Only the owner revises: to anyone else the job does not exist, and nothing changes.
    with farm.client("bob") as bob:
        assert bob.put(scene_url, json={"script": NEW_LINE}).status_code == 404
        assert bob.post(f"{scene_url}/regenerate", json={}).status_code == 404
    assert database_rows(settings, job_id) == before

    # Change the first scene's line and picture: the job reopens for review.
    edited = alice.put(scene_url, json={"script": NEW_LINE})
    assert edited.status_code == 200, edited.text
    assert alice.post(f"{scene_url}/regenerate", json={"feedback": "a lemon"}).status_code == 202
    review = wait_for(lambda job: job["storyboard"]["scenes"][0]["version"] == 2
                      and job["storyboard"]["scenes"][0]["status"] == "image_ready",
                      alice, job_id, what="the regenerated image")
    assert review["status"] == "storyboard_ready"
    # Meanwhile the delivered video stays: same URL, same bytes, same metadata.
    assert same_url(review["videoUrl"], first["videoUrl"])
    assert fetched(alice, review["videoUrl"]) == first_video
    assert alice.get(f"/api/v3/jobs/{job_id}/video").content == first_video
    assert alice.get(f"/api/v3/jobs/{job_id}/thumbnail").status_code == 200
    assert alice.get(f"/api/v3/jobs/{job_id}/metadata").json()["data"] == first_meta

    approved = alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "approve"})
    assert approved.status_code == 200 and approved.json()["data"]["status"] == "video_processing"
    done = wait_for_status(alice, job_id, "completed", timeout=300)

    # The ledger: one image and one clip more, both of the changed scene.
    ledger = usage_rows(settings, job_id)
    assert ledger[:len(ledger_before)] == ledger_before
    added = ledger[len(ledger_before):]
    assert renders(added) == [("clip", changed["id"]), ("image", changed["id"])]
    assert [row["kind"] for row in added].count("composite") == 1
    assert done["actualCost"] == pytest.approx(sum(row["cost"] for row in ledger), abs=1e-5)
    assert done["actualCost"] > first["actualCost"]

    # The other scenes' clips are reused as they were; the changed scene has new ones.
    after = database_rows(settings, job_id)
    assert after["scenes"][1:] == before["scenes"][1:]
    new_scene, new = after["scenes"][0], after["job"][0]
    assert (new_scene["version"], new_scene["image_version"], new_scene["clip_version"]) == (2, 2, 2)
    assert new["revision"] == 1
    # The revised video replaced the previous one, which is deleted with the replaced artifacts.
    replaced = {old["video_key"], old["thumbnail_key"], old_scene["image_key"], old_scene["clip_key"]}
    added_keys = {new["video_key"], new["thumbnail_key"], new_scene["image_key"],
                  new_scene["clip_key"]}
    assert not replaced & added_keys
    objects = job_object_keys(settings, job_id)
    assert added_keys <= objects and not replaced & objects
    # Everything else is kept as it was: the other scenes' objects and the job's own.
    unchanged = {key for key in objects_before if f"/scenes/{changed['id']}/" not in key} - replaced
    assert {key for key in objects if f"/scenes/{changed['id']}/" not in key} == \
        unchanged | {new["video_key"], new["thumbnail_key"]}
    assert not same_url(done["videoUrl"], first["videoUrl"])

    video = tmp_path / "revised.mp4"
    video.write_bytes(fetched(alice, done["videoUrl"]))
    info = probe_media(video, exact=True)
    meta = alice.get(f"/api/v3/jobs/{job_id}/metadata").json()["data"]
    assert meta["fileSize"] == video.stat().st_size and abs(meta["duration"] - info.duration_s) < 0.1
    assert meta["createdAt"] > first_meta["createdAt"]  # delivered anew
    assert video.read_bytes() != first_video
    assert done["progress"]["message"] == "Video ready"

    # A second revision, cancelled while it renders: the job is completed again with the
    # revised video, and no video of the abandoned one is kept, even after the actor stopped.
    second_url = f"/api/v3/jobs/{job_id}/scenes/{scenes[1]['id']}"
    assert alice.post(f"{second_url}/regenerate", json={}).status_code == 202
    wait_for(lambda job: job["storyboard"]["scenes"][1]["status"] == "image_ready", alice, job_id,
             what="the second regenerated image")
    assert alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "approve"}).status_code == 200
    cancelled = alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "cancel"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["data"]["status"] == "completed"
    wait_actor_gone(job_id)
    final = get_job(alice, job_id)
    assert final["status"] == "completed" and same_url(final["videoUrl"], done["videoUrl"])
    assert fetched(alice, final["videoUrl"]) == video.read_bytes()
    row = database_rows(settings, job_id)["job"][0]
    assert (row["revision"], row["video_key"]) == (2, new["video_key"])
    objects = job_object_keys(settings, job_id)
    assert {new["video_key"], new["thumbnail_key"]} <= objects
    assert not [key for key in objects if "-r2." in key]
