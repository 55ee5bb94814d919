"""``GET /jobs/{id}/metadata`` (what the compositor delivered, from the stored rows and object)
and ``GET /presets`` (from the preset files, with the default job creation uses)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from actors import steps
from coordinator.storage import make_object_store
from coordinator.video_metadata import DELIVERED_FPS
from models.presets import TINY_PRESET, get_preset, list_presets
from tests.conftest import create_client
from tests.jobs_helpers import advance_job, database_rows, get_job, job_body, start_job


def completed_job(http, settings, **advanced) -> str:
    job_id = start_job(http, **advanced)["id"]
    advance_job(settings, job_id, "completed")  # stores an 8 s video of placeholder bytes
    return job_id


@pytest.mark.parametrize("ratio", ["16:9", "9:16"])
def test_metadata_describes_the_delivered_video(alice, api, ratio):
    job_id = completed_job(alice, api.settings, aspectRatio=ratio)
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    make_object_store(api.settings).put_bytes(steps.video_key(job_id), data, "video/mp4")

    response = alice.get(f"/api/v3/jobs/{job_id}/metadata")
    assert response.status_code == 200, response.text
    meta = response.json()["data"]
    width, height = get_preset(TINY_PRESET).output_size[ratio]
    assert meta["jobId"] == job_id
    assert (meta["width"], meta["height"]) == (width, height)
    assert meta["fps"] == DELIVERED_FPS and meta["duration"] == 8.0
    assert meta["codecs"] == {"video": "h264", "audio": "aac"}  # every ad has a sound track
    assert meta["format"] == "mp4" and meta["fileSize"] == len(data)
    job = get_job(alice, job_id)
    # When the video was delivered: after the job was created.
    assert datetime.fromisoformat(meta["createdAt"].replace("Z", "+00:00")) > \
        datetime.fromisoformat(job["createdAt"].replace("Z", "+00:00"))


def test_the_frame_rate_is_the_one_the_job_actor_renders_at():
    from actors.job_actor import OUTPUT_FPS

    assert DELIVERED_FPS == OUTPUT_FPS


def test_a_video_missing_from_the_store_is_a_404(alice, api):
    job_id = completed_job(alice, api.settings)
    make_object_store(api.settings).delete(steps.video_key(job_id))
    response = alice.get(f"/api/v3/jobs/{job_id}/metadata")
    assert response.status_code == 404 and response.json()["code"] == "video_file_not_found"


@pytest.mark.parametrize("status", ["pending", "storyboard_ready", "video_processing", "failed",
                                    "cancelled"])
def test_no_metadata_until_the_video_exists(alice, api, status):
    job_id = start_job(alice)["id"]
    advance_job(api.settings, job_id, status)
    response = alice.get(f"/api/v3/jobs/{job_id}/metadata")
    assert response.status_code == 409
    assert response.json()["code"] == "video_not_ready"


def test_metadata_is_the_owners_only(alice, bob, api):
    job_id = completed_job(alice, api.settings)
    response = bob.get(f"/api/v3/jobs/{job_id}/metadata")
    assert response.status_code == 404 and response.json()["code"] == "job_not_found"


def test_presets_list_every_preset_with_its_output_sizes_and_the_default(alice):
    response = alice.get("/api/v3/presets")
    assert response.status_code == 200, response.text
    listing = response.json()["data"]
    names = [preset["name"] for preset in listing["presets"]]
    assert names == list_presets() and TINY_PRESET in names
    for preset in listing["presets"]:
        files = get_preset(preset["name"])
        assert preset["description"] == files.description
        assert preset["outputSizes"] == {ratio: {"width": w, "height": h}
                                         for ratio, (w, h) in files.output_size.items()}
        assert set(preset["outputSizes"]) == {"16:9", "9:16", "1:1"}
    # Without renderers (this API has none) a job that names no preset gets tiny: so says the list.
    assert listing["defaultPreset"] == TINY_PRESET
    assert [p["name"] for p in listing["presets"] if p["default"]] == [TINY_PRESET]
    assert get_job(alice, start_job(alice)["id"])["preset"] == TINY_PRESET


def test_presets_list_the_voices_and_music_a_job_may_choose(alice, api):
    """What a frontend offers from the listing is what job creation accepts, and a job that
    chooses nothing gets the listed defaults."""
    listing = alice.get("/api/v3/presets").json()["data"]["presets"]
    client_id = create_client(alice)["id"]

    def quoted(**advanced):
        return alice.post("/api/v3/jobs/dry-run", json=job_body(client_id, **advanced))

    for preset in listing:
        files = get_preset(preset["name"])
        assert preset["music"] == (files.music is not None)
        if files.voice is None:
            assert preset["voice"] is None
            continue
        offer = preset["voice"]
        assert set(offer["languages"]) == set(files.voice.languages)
        assert offer["defaultLanguage"] in offer["languages"]
        for language, voices in offer["languages"].items():
            assert voices["defaultVoice"] in voices["voices"]
            for voice in voices["voices"]:
                answer = quoted(preset=preset["name"], language=language, voice=voice)
                assert answer.status_code == 200, answer.text
            refused = quoted(preset=preset["name"], language=language, voice="nobody")
            assert refused.status_code == 400 and refused.json()["code"] == "validation_error"

    tiny = next(preset for preset in listing if preset["name"] == TINY_PRESET)
    assert tiny["music"] is True
    assert tiny["voice"]["defaultLanguage"] == "en"
    assert tiny["voice"]["languages"]["en"] == {"voices": ["bright", "narrator", "warm"],
                                                "defaultVoice": "narrator"}
    job = alice.post("/api/v3/jobs", json=job_body(client_id)).json()["data"]
    stored = database_rows(api.settings, job["id"])["job"][0]["advanced"]
    stored = json.loads(stored) if isinstance(stored, str) else stored  # SQLite: text
    assert (stored["language"], stored["voice"]) == ("en", "narrator")


def test_presets_need_a_token(api):
    with api.client(None) as anonymous:
        response = anonymous.get("/api/v3/presets")
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
