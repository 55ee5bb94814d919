"""Storyboard review on the real farm: HTTP → Serve ingress → job actor → image renderer, with
the tiny preset on CPU, on SQLite + local objects and PostgreSQL + S3."""

from __future__ import annotations

import io
import json
import threading

import pytest
from PIL import Image, ImageStat

from models.presets import get_preset
from tests.jobs_helpers import (fetch_image, get_job, renders_per_scene, start_job, wait_for,
                                wait_for_status)

pytestmark = pytest.mark.ray


@pytest.fixture
def alice(farm):
    with farm.client("alice") as client:
        yield client


@pytest.fixture
def bob(farm):
    with farm.client("bob") as client:
        yield client


def test_storyboard_ready_with_a_rendered_image_per_scene(alice, farm):
    created = start_job(alice, sceneCount=3, aspectRatio="9:16")
    job = wait_for_status(alice, created["id"], "storyboard_ready")
    scenes = job["storyboard"]["scenes"]
    assert [s["scene_idx"] for s in scenes] == [0, 1, 2]
    # The whole job's progress: the storyboard is done, the video is not.
    # Under review nothing renders: no queue position, no estimate.
    assert job["progress"] == {"stage": "storyboard_ready", "percent": 40.0, "currentStep": 2,
                               "totalSteps": 5, "message": "Storyboard ready for review",
                               "queuePosition": None, "estimatedCompletionAt": None}
    width, height = get_preset("tiny").image_size["9:16"]
    images = set()
    for scene in scenes:
        assert scene["description"] and scene["script"] and scene["version"] == 1
        assert scene["status"] == "image_ready"
        content, image = fetch_image(alice, scene["image_url"])
        assert image.format == "PNG" and image.size == (width, height)
        images.add(content)
    assert len(images) == 3  # each scene is its own render
    assert "Grab a can today" in scenes[-1]["script"]  # the call to action closes the ad
    listed = alice.get(f"/api/v3/jobs/{job['id']}/scenes").json()
    assert [s["id"] for s in listed["data"]] == [s["id"] for s in scenes]
    assert alice.get("/api/v3/jobs", params={"status": "storyboard_ready"}).json()["meta"]["total"] >= 1


def test_review_edit_delete_regenerate(alice, farm):
    created = start_job(alice, sceneCount=3)
    job = wait_for_status(alice, created["id"], "storyboard_ready")
    base = f"/api/v3/jobs/{job['id']}/scenes"
    first, second, third = job["storyboard"]["scenes"]
    originals = {s["id"]: fetch_image(alice, s["image_url"])[0] for s in (first, second, third)}

    edited = alice.put(f"{base}/{first['id']}", json={"script": "Cold. Crisp. Lime.",
                                                      "transition": "crossfade", "duration": 2.5})
    assert edited.status_code == 200, edited.text
    assert edited.json()["data"]["script"] == "Cold. Crisp. Lime."
    assert edited.json()["data"]["transition"] == "crossfade" and edited.json()["data"]["duration"] == 2.5
    assert alice.put(f"{base}/{first['id']}", json={"transition": "wipe"}).status_code == 400
    assert alice.put(f"{base}/{first['id']}", json={"duration": 0}).status_code == 400

    # Regenerate the middle scene with feedback: only its image changes, its version goes up.
    response = alice.post(f"{base}/{second['id']}/regenerate", json={"feedback": "show the can up close"})
    assert response.status_code == 202, response.text
    job = wait_for(lambda j: all(s["status"] == "image_ready" for s in j["storyboard"]["scenes"])
                   and j["storyboard"]["scenes"][1]["version"] >= 2, alice, job["id"],
                   what="regenerated scene")
    scenes = {s["id"]: s for s in job["storyboard"]["scenes"]}
    assert "show the can up close" in scenes[second["id"]]["description"].lower()
    assert fetch_image(alice, scenes[second["id"]]["image_url"])[0] != originals[second["id"]]
    for unchanged in (first["id"], third["id"]):
        assert scenes[unchanged]["version"] == 1
        assert fetch_image(alice, scenes[unchanged]["image_url"])[0] == originals[unchanged]
    counts = renders_per_scene(farm.settings, job["id"], "image")
    assert counts[first["id"]] == 1 and counts[third["id"]] == 1 and counts[second["id"]] >= 2

    # The action form of the same thing (spec 001): payload.sceneIdx.
    action = alice.post(f"/api/v3/jobs/{job['id']}/actions",
                        json={"action": "regenerate_scene", "payload": {"sceneIdx": 2}})
    assert action.status_code == 200 and action.json()["data"]["updatedSceneIdx"] == 2
    bad = alice.post(f"/api/v3/jobs/{job['id']}/actions",
                     json={"action": "regenerate_scene", "payload": {"sceneIdx": 9}})
    assert bad.status_code == 400
    job = wait_for(lambda j: j["storyboard"]["scenes"][2]["version"] == 2
                   and j["storyboard"]["scenes"][2]["status"] == "image_ready", alice, job["id"],
                   what="regenerate_scene action")

    # Delete the first scene: the others move up.
    assert alice.delete(f"{base}/{first['id']}").status_code == 200
    remaining = alice.get(base).json()["data"]
    assert [(s["id"], s["scene_idx"]) for s in remaining] == [(second["id"], 0), (third["id"], 1)]
    assert alice.get(f"{base}/{first['id']}").status_code == 404
    assert get_job(alice, job["id"])["status"] == "storyboard_ready"


def test_other_users_get_404_on_every_scene_route(alice, bob, farm):
    job = wait_for_status(alice, start_job(alice, sceneCount=1, durationSeconds=4)["id"],
                          "storyboard_ready")
    scene = job["storyboard"]["scenes"][0]
    base = f"/api/v3/jobs/{job['id']}/scenes/{scene['id']}"
    for method, path, body in [("GET", base, None), ("PUT", base, {"script": "x"}),
                               ("DELETE", base, None), ("POST", f"{base}/regenerate", {}),
                               ("GET", f"{base}/image", None)]:
        assert bob.request(method, path, json=body).status_code == 404, (method, path)
    assert get_job(alice, job["id"])["storyboard"]["scenes"][0]["script"] == scene["script"]



def test_product_shot_uses_the_clients_product_photo(alice, farm):
    photo = io.BytesIO()
    Image.new("RGB", (300, 200), (220, 20, 20)).save(photo, format="PNG")
    asset = alice.post("/api/v3/assets", files={"file": ("can.png", photo.getvalue(), "image/png")},
                       data={"type": "image"}).json()["data"]
    created = start_job(alice, sceneCount=3, productImageAssetId=asset["id"])
    job = wait_for_status(alice, created["id"], "storyboard_ready")
    by_shot = {s["shotType"]: s for s in job["storyboard"]["scenes"]}
    assert "product" in by_shot
    for shot, scene in by_shot.items():
        _, image = fetch_image(alice, scene["image_url"])
        red, green, blue = ImageStat.Stat(image.convert("RGB")).mean
        is_photo = red > 200 and green < 40 and blue < 40
        assert is_photo == (shot == "product"), shot


def test_progress_stream_to_several_clients(alice, bob, farm):
    """WS /jobs/{id}/ws pushes each change of the job to every connected client."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    created = start_job(alice, sceneCount=3)
    url = farm.url.replace("http://", "ws://") + f"/api/v3/jobs/{created['id']}/ws"
    headers = {"Authorization": f"Bearer {farm.token('alice')}"}

    def watch(sink: list) -> None:
        with connect(url, additional_headers=headers, open_timeout=30) as socket:
            for raw in socket:
                sink.append(json.loads(raw))
                if sink[-1]["status"] == "storyboard_ready":
                    return

    streams: list[list] = [[], []]
    watchers = [threading.Thread(target=watch, args=(sink,)) for sink in streams]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.join(timeout=180)
    for messages in streams:
        assert messages and messages[-1]["status"] == "storyboard_ready"
        assert messages[-1]["jobId"] == created["id"]
        assert messages[-1]["progress"]["stage"] == "storyboard_ready"
        percents = [m["progress"]["percent"] for m in messages if m["progress"]]
        assert percents == sorted(percents)  # progress never goes backwards
    # Someone else's job, or no token: the handshake is refused.
    for refused_headers in ({"Authorization": f"Bearer {farm.token('bob')}"}, {}):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=refused_headers, open_timeout=30)
        assert refused.value.response.status_code == 403


def test_api_replica_loads_no_model_libraries(farm):
    """The ingress replica serves HTTP only: torch, diffusers and transformers stay out of it
    (hundreds of MB per replica), while the renderers beside it hold them."""
    from ray import serve

    api = serve.get_deployment_handle("Api", app_name=farm.app_name)
    assert api.heavy_modules_loaded.remote().result(timeout_s=60) == []
