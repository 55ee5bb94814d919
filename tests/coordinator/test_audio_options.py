"""Sound options through the API, without rendering: what the preset offers is checked at job
creation (400 in the envelope, nothing stored), settled values are stored, the quote counts
the voice and music, and audio assets are decoded through before they are accepted."""

from __future__ import annotations

import io
import json
import wave

import numpy as np

from tests.conftest import create_client
from tests.jobs_helpers import database_rows, job_body


def _wav(seconds: float = 1.0, rate: int = 22_050) -> bytes:
    tone = (0.3 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * rate)) / rate) * 32767)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(tone.astype("<i2").tobytes())
    return buffer.getvalue()


def _upload(http, content: bytes, filename: str, content_type: str):
    return http.post("/api/v3/assets", files={"file": (filename, content, content_type)})


def _counts(http) -> tuple[int, int]:
    return (http.get("/api/v3/jobs").json()["meta"]["total"],
            http.get("/api/v3/assets").json()["meta"]["total"])


def test_defaults_are_settled_and_stored(alice, api):
    client = create_client(alice)
    job = alice.post("/api/v3/jobs", json=job_body(client["id"])).json()["data"]
    advanced = _stored_advanced(api, job["id"])
    assert {key: advanced[key] for key in ("voiceOver", "language", "voice", "music")} == {
        "voiceOver": True, "language": "en", "voice": "narrator", "music": "generated"}
    chosen = alice.post("/api/v3/jobs", json=job_body(client["id"], language="de", voice="warm",
                                                      music="none")).json()["data"]
    advanced = _stored_advanced(api, chosen["id"])
    assert (advanced["language"], advanced["voice"], advanced["music"]) == ("de", "warm", "none")

    dry = alice.post("/api/v3/jobs/dry-run", json=job_body(client["id"])).json()["data"]
    silent = alice.post("/api/v3/jobs/dry-run", json=job_body(
        client["id"], voiceOver=False, music="none")).json()["data"]
    # The voice lines and the music are part of rendering the video; nothing else moves.
    assert dry["breakdown"]["video_rendering"] > silent["breakdown"]["video_rendering"]
    assert dry["breakdown"]["image_generation"] == silent["breakdown"]["image_generation"]
    assert set(dry["breakdown"]) == {"storyboard_generation", "image_generation", "video_rendering"}
    assert alice.get(f"/api/v3/jobs/{job['id']}").json()["data"]["estimatedCost"] == dry["estimatedCost"]


def _stored_advanced(api, job_id: str) -> dict:
    advanced = database_rows(api.settings, job_id)["job"][0]["advanced"]
    return json.loads(advanced) if isinstance(advanced, str) else advanced  # SQLite: text


def test_bad_sound_options_are_400_and_store_nothing(alice):
    client = create_client(alice)
    image = alice.post("/api/v3/assets", files={"file": ("p.png", _png(), "image/png")}).json()["data"]
    before = _counts(alice)
    cases = [
        ({"language": "xx"}, "valid languages: de, en, es, fr"),
        ({"language": "english"}, "language"),
        ({"voice": "nobody"}, "valid voices: bright, narrator, warm"),
        ({"language": "de", "voice": "Nobody!"}, "voice"),
        ({"music": "loud"}, "music"),
        ({"music": "asset"}, "musicAssetId"),
        ({"music": "none", "musicAssetId": image["id"]}, "musicAssetId"),
        ({"musicAssetId": "missing"}, "no asset"),
        ({"musicAssetId": image["id"]}, "must be an audio asset"),
        ({"voiceOver": "loud"}, "voiceOver"),
    ]
    for advanced, message in cases:
        for path in ("/api/v3/jobs", "/api/v3/jobs/dry-run"):
            response = alice.post(path, json=job_body(client["id"], **advanced))
            if path.endswith("dry-run") and "musicAssetId" in advanced and message in (
                    "no asset", "must be an audio asset"):
                continue  # a quote does not look at assets
            assert response.status_code == 400, (advanced, response.text)
            body = response.json()
            assert body["data"] is None and message in body["error"], (advanced, body)
            assert body["code"] and body["meta"]["timestamp"]
    assert _counts(alice) == before


def test_audio_asset_is_decoded_before_it_is_accepted(alice):
    client = create_client(alice)
    before = _counts(alice)
    # A WAV header over bytes that are not audio: sniffed as WAV, refused by the decoder.
    fake = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200
    refused = _upload(alice, fake, "song.wav", "audio/wav")
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_audio", refused.text
    assert "WAV" in refused.json()["error"]
    assert _counts(alice) == before

    song = _upload(alice, _wav(), "song.wav", "audio/wav")
    assert song.status_code == 201, song.text
    asset = song.json()["data"]
    assert asset["type"] == "audio" and asset["format"] == "wav"
    job = alice.post("/api/v3/jobs", json=job_body(client["id"], musicAssetId=asset["id"]))
    assert job.status_code == 201, job.text
    other = alice.post("/api/v3/jobs", json=job_body(client["id"], music="asset",
                                                      musicAssetId=asset["id"], voiceOver=False))
    assert other.status_code == 201, other.text


def test_someone_elses_audio_asset_is_refused(alice, bob):
    song = _upload(alice, _wav(), "song.wav", "audio/wav").json()["data"]
    client = create_client(bob)
    response = bob.post("/api/v3/jobs", json=job_body(client["id"], musicAssetId=song["id"]))
    assert response.status_code == 400 and response.json()["code"] == "unknown_asset"
    assert bob.get("/api/v3/jobs").json()["meta"]["total"] == 0


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()
