"""Video production on the real farm: approve → clips on the clip renderer → ffmpeg composite →
object store → a playable ``videoUrl``, on SQLite + local objects and PostgreSQL + S3 (moto); and
revisions of a finished video."""

from __future__ import annotations

import html
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from actors import steps
from actors.media_probe import extract_frame, probe_media
from actors.sound_mix import MUSIC_FADE_S, TARGET_LUFS
from actors.timeline import plan_timeline
from coordinator.schemas.jobs import CTA_CARD_SECONDS
from coordinator.storage import make_object_store
from models.presets import get_preset
from tests.actors.test_sound import _audio_stream as audio_stream_line
from tests.actors.test_sound import _loudness as loudness
from tests.actors.test_sound import _samples as decoded_audio
from tests.jobs_helpers import (caption_match, database_rows, get_job, job_object_keys, start_job,
                                usage_rows, wait_actor_gone, wait_for, wait_for_status)

pytestmark = pytest.mark.ray

FPS = 24  # the delivered video's (actors.job_actor.OUTPUT_FPS)
FRAME = 1 / FPS


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
    # As planned, but a scene whose spoken line needs longer lasts its line plus a pad.
    _, composited = scene_windows(farm.settings, job["id"])
    assert planned <= composited + FRAME and abs(info.duration_s - composited) <= 2 * FRAME
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


# ---- the ad's sound -------------------------------------------------------------------------

AUDIO_RATE = 48_000
# Where a voice is heard: speech's band. The tiny voice (a 16 kHz VITS) has most of its energy
# here; the tiny music model almost none (its noise lies above 7 kHz), so a line cannot pass for
# the music under it, nor the music for a line.
VOICE_BAND = (80.0, 4000.0)
# A spoken line is heard at least this loud in its band (the ad sits at -14 LUFS)...
VOICE_FLOOR = 0.05
# ...and anything else, in that band, at most a tenth of its line.
NOT_VOICE = 0.1
# Music without a voice over it: every half second at least this loud (about -34 dBFS RMS).
MUSIC_FLOOR = 0.02
# The most DC offset a spoken line may carry (-40 dBFS): an offset clicks where a line starts
# and ends, and loudness meters cannot see it (the tiny voice's lines carry about -15 dBFS).
DC_LIMIT = 0.01


def band_rms(samples: np.ndarray, start_s: float, end_s: float,
             band: tuple[float, float] | None = None) -> float:
    """RMS amplitude of ``samples`` (48 kHz mono) between two times, only of the frequencies in
    ``band`` if given (Parseval over the window's spectrum)."""
    chunk = samples[round(start_s * AUDIO_RATE):round(end_s * AUDIO_RATE)]
    if band is None:
        return float(np.sqrt(np.mean(np.square(chunk))))
    spectrum = np.fft.rfft(chunk)
    freqs = np.fft.rfftfreq(len(chunk), 1 / AUDIO_RATE)
    inside = (freqs >= band[0]) & (freqs < band[1])
    return float(np.sqrt(2 * np.sum(np.abs(spectrum[inside]) ** 2)) / len(chunk))


def scene_windows(settings, job_id: str) -> tuple[list[tuple[float, float, float | None]], float]:
    """Each scene's (start, end, spoken line's length) on the finished video's timeline and the
    video's length, planned as the compositor plans them from the stored scenes: a scene lasts
    its planned duration or its line plus the pad if longer; the call-to-action card closes."""
    scenes = database_rows(settings, job_id)["scenes"]
    durations = [steps.spoken_scene_seconds(s["duration_s"], s["voice_duration_s"]) for s in scenes]
    timeline = plan_timeline(durations, [s["transition"] for s in scenes], CTA_CARD_SECONDS, FPS)
    ends = [frame / FPS for frame in timeline.boundaries[:len(scenes)]]
    starts = [0.0, *ends[:-1]]
    return ([(start, end, scene["voice_duration_s"])
             for start, end, scene in zip(starts, ends, scenes)], timeline.total_frames / FPS)


def downloaded_sound(alice: httpx.Client, job: dict, path) -> tuple[np.ndarray, float]:
    """The finished MP4 as its owner downloads it, checked to carry one AAC track, 48 kHz stereo,
    as long as the picture (to a frame); returns the track decoded (mono, 48 kHz) and the
    video's length."""
    path.write_bytes(fetched(alice, job["videoUrl"]))
    stream = audio_stream_line(path)
    assert "aac" in stream and "48000 Hz" in stream and "stereo" in stream, stream
    length = probe_media(path, exact=True).duration_s
    samples = decoded_audio(path)
    assert abs(len(samples) / AUDIO_RATE - length) <= FRAME
    return samples, length


def assert_broadcast_loudness(path) -> None:
    """-14 LUFS integrated (±1 LU), true peak at most -1 dBTP, by ffmpeg's ebur128=peak=true."""
    integrated, true_peak = loudness(path)
    assert abs(integrated - TARGET_LUFS) <= 1.0 and true_peak <= -1.0, (integrated, true_peak)


def sound_rows(settings, job_id: str) -> list[tuple[str, str]]:
    """The ledger's voice and music rows: (kind, scene id; "" for the job's music)."""
    return sorted((row["kind"], row["scene_id"] or "") for row in usage_rows(settings, job_id)
                  if row["kind"] in ("voice", "music"))


# The sound pass is the same on either backend; S3-stored voice lines are covered by the
# revision test, which runs on both.
@pytest.mark.backends("sqlite-local")
def test_the_ad_speaks_every_scene_over_its_music(alice, farm, tmp_path):
    """Three small jobs at once, probed as their owner downloads them: the default (every
    scene's line spoken over generated music), the voice-over off (music only), and neither
    (a silent track)."""
    settings = farm.settings
    options = {"voiced": {}, "music": {"voiceOver": False},
               "silent": {"voiceOver": False, "music": "none"}}
    ids = {name: start_job(alice, sceneCount=2, durationSeconds=6, autoApprove=True,
                           **advanced)["id"] for name, advanced in options.items()}
    done = {name: wait_for_status(alice, job_id, "completed", timeout=300)
            for name, job_id in ids.items()}

    # The default: one line per scene and one bed made, each heard where it belongs.
    voiced, length = downloaded_sound(alice, done["voiced"], tmp_path / "voiced.mp4")
    assert_broadcast_loudness(tmp_path / "voiced.mp4")
    windows, planned = scene_windows(settings, ids["voiced"])
    assert abs(length - planned) <= FRAME  # scenes as long as their lines need, then the card
    scenes = done["voiced"]["storyboard"]["scenes"]
    assert sound_rows(settings, ids["voiced"]) == sorted(
        [("music", ""), *(("voice", scene["id"]) for scene in scenes)])
    lines = []
    for start, end, spoken in windows:
        assert spoken is not None and spoken > 0.2
        line = band_rms(voiced, start + 0.05, start + spoken - 0.05, VOICE_BAND)
        assert line >= VOICE_FLOOR, (start, spoken, line)
        offset = np.mean(voiced[round(start * AUDIO_RATE):round((start + spoken) * AUDIO_RATE)])
        assert abs(offset) <= DC_LIMIT, offset
        # Its own line, placed at its scene's start: quiet once it has ended.
        if end - (start + spoken) > 0.3:
            assert band_rms(voiced, start + spoken + 0.15, end, VOICE_BAND) <= NOT_VOICE * line
        lines.append(line)
    # Under the card nothing is spoken; the music is still heard.
    card = (windows[-1][1] + 0.1, length - MUSIC_FADE_S)
    assert band_rms(voiced, *card, VOICE_BAND) <= NOT_VOICE * min(lines)
    assert band_rms(voiced, *card) >= MUSIC_FLOOR / 2

    # The voice-over off: no line spoken, nothing in speech's band where the default spoke, the
    # music heard in every half second (its fades included).
    music, length = downloaded_sound(alice, done["music"], tmp_path / "music.mp4")
    assert_broadcast_loudness(tmp_path / "music.mp4")
    assert sound_rows(settings, ids["music"]) == [("music", "")]
    windows, planned = scene_windows(settings, ids["music"])
    assert abs(length - planned) <= FRAME
    for start, end, spoken in windows:
        assert spoken is None
        assert band_rms(music, start, end, VOICE_BAND) <= NOT_VOICE * min(lines)
    for start in np.arange(0.0, length - 0.25, 0.5):
        assert band_rms(music, start, min(start + 0.5, length)) >= MUSIC_FLOOR, start

    # Neither: a silent AAC track, still as long as the video; no audio model was called.
    silent, _ = downloaded_sound(alice, done["silent"], tmp_path / "silent.mp4")
    assert not np.any(silent)
    assert sound_rows(settings, ids["silent"]) == []


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
    """One scene of a finished job changed: only its image, clip and line are made again, the
    other clips and lines are reused, the previous video is served until the revised one
    replaces it and is then deleted; a revision cancelled while it renders leaves the job
    completed with the video it had."""
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
    # Only the changed line is spoken again; the music is the job's, made once.
    assert sorted((row["kind"], row["scene_id"]) for row in added
                  if row["kind"] in ("voice", "music")) == [("voice", changed["id"])]
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
    replaced = {old["video_key"], old["thumbnail_key"], old_scene["image_key"],
                old_scene["clip_key"], old_scene["voice_key"]}
    added_keys = {new["video_key"], new["thumbnail_key"], new_scene["image_key"],
                  new_scene["clip_key"], new_scene["voice_key"]}
    assert None not in replaced | added_keys
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
    # The revised ad sounds like the first: the new line heard in its scene, the others in theirs.
    revised, length = downloaded_sound(alice, done, tmp_path / "revised-sound.mp4")
    assert_broadcast_loudness(video)
    windows, planned = scene_windows(settings, job_id)
    assert abs(length - planned) <= FRAME
    for start, _end, spoken in windows:
        assert band_rms(revised, start + 0.05, start + spoken - 0.05, VOICE_BAND) >= VOICE_FLOOR
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
