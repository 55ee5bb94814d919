"""Reference images on the real farm (tiny preset, SQLite + local objects): a character
reference generated through the image renderers and kept as the owner's asset, used by a job
whose every scene image is conditioned on it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from actors import steps
from coordinator.db.models import Job, Scene
from coordinator.storage import make_object_store
from models.pipelines import load_image_model
from models.presets import apply_prompt_template, get_preset
from tests.conftest import create_client
from tests.jobs_helpers import fetch_image, job_body, wait_for_status

pytestmark = pytest.mark.ray


def scene_renders(settings, job_id: str) -> list[dict]:
    """Each scene's image request as the job actor builds it (prompt, seed, negative prompt,
    size), from the stored rows, and the scene's image URL key."""
    engine = create_engine(settings.sync_database_url)
    try:
        with Session(engine) as session:
            job = session.get(Job, job_id)
            scenes = session.scalars(select(Scene).where(Scene.job_id == job_id)
                                     .order_by(Scene.scene_idx)).all()
            preset = get_preset(job.preset)
            width, height = preset.image_size[job.aspect_ratio]
            brief = steps.planning_brief(job)
            return [{"prompt": apply_prompt_template(preset, scene.image_prompt, steps.style_unless_present(
                        brief.style, scene.image_prompt)),
                     "seed": steps.scene_seed(job.seed, scene.id, scene.image_version),
                     "negative": steps.negative_prompt(preset, brief), "width": width,
                     "height": height, "scene_idx": scene.scene_idx} for scene in scenes]
    finally:
        engine.dispose()


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


def test_generated_reference_conditions_every_scene_of_its_owners_job(local_farm, ray_session):
    with local_farm.client("ref-alice") as alice, local_farm.client("ref-bob") as bob:
        generated = alice.post("/api/v3/assets/character-reference", json={
            "characterDescription": "Silver metallic humanoid robot", "seed": 11,
            "tags": ["hero"]})
        assert generated.status_code == 201, generated.text
        asset = generated.json()["data"]
        assert asset["type"] == "image" and asset["format"] == "png"
        assert asset["tags"] == ["hero", "character-reference"]
        assert asset["name"] == "Character reference: Silver metallic humanoid robot"
        _, reference = fetch_image(alice, asset["url"])
        assert reference.size == tuple(get_preset("tiny").image_size["1:1"])

        # Another user can neither see it nor use it; trying stores no job.
        assert bob.get(f"/api/v3/assets/{asset['id']}").status_code == 404
        assert bob.get("/api/v3/assets").json()["meta"]["total"] == 0
        refused = bob.post("/api/v3/jobs", json=job_body(create_client(bob)["id"],
                                                         referenceAssetId=asset["id"]))
        assert refused.status_code == 400 and refused.json()["code"] == "unknown_asset"
        assert bob.get("/api/v3/jobs").json()["meta"]["total"] == 0

        created = alice.post("/api/v3/jobs", json=job_body(
            create_client(alice)["id"], sceneCount=2, durationSeconds=6,
            referenceAssetId=asset["id"]))
        assert created.status_code == 201, created.text
        job = wait_for_status(alice, created.json()["data"]["id"], "storyboard_ready")
        stored = {scene["scene_idx"]: fetch_image(alice, scene["image_url"])[1]
                  for scene in job["storyboard"]["scenes"]}

    # Every scene's image is the render of its request with the reference, not without it:
    # re-rendered here with the same tiny model, each way.
    model = load_image_model(get_preset("tiny"), ray_session["models_dir"])
    objects = make_object_store(local_farm.settings)
    for request in scene_renders(local_farm.settings, job["id"]):
        framed = steps.product_image_png(objects, f"assets/{asset['id']}", request["width"],
                                         request["height"])
        args = ([request["prompt"]], [request["seed"]], request["width"], request["height"],
                request["negative"])
        (with_reference,) = model.render(*args, reference=Image.open(io.BytesIO(framed)))
        (without,) = model.render(*args)
        scene_image = stored[request["scene_idx"]].convert("RGB")
        # Batched kernels may round a few pixels one level apart (models.pipelines).
        assert mean_difference(scene_image, with_reference) < 1.0, request["scene_idx"]
        assert mean_difference(scene_image, without) > 5.0, request["scene_idx"]


def test_one_batch_keeps_each_requests_own_reference(local_farm, ray_session):
    """Requests for the same scene text and seed, without a reference and with two different
    ones, sent together: the renderer may batch them, but each image is its own request's."""
    from ray import serve

    from actors.messages import ImageRequest

    width, height = get_preset("tiny").image_size["16:9"]

    def png(fill) -> bytes:
        buffer = io.BytesIO()
        image = (Image.fromarray(fill) if isinstance(fill, np.ndarray)
                 else Image.new("RGB", (width, height), fill))
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    references = [None, png((230, 30, 30)), png(noise)]
    requests = [ImageRequest(preset="tiny", prompt="a can of lime soda, advertising photo", seed=21,
                             width=width, height=height, reference_png=reference, owner="ref-batch")
                for reference in references]
    images = serve.get_deployment_handle("ImageRenderer", app_name=local_farm.app_name)
    images = images.options(multiplexed_model_id="tiny")
    responses = [images.render.remote(request) for request in requests]  # all in flight at once
    rendered = [Image.open(io.BytesIO(response.result(timeout_s=120).png)).convert("RGB")
                for response in responses]

    model = load_image_model(get_preset("tiny"), ray_session["models_dir"])
    alone = []
    for request in requests:
        reference = Image.open(io.BytesIO(request.reference_png)) if request.reference_png else None
        alone += model.render([request.prompt], [request.seed], width, height, reference=reference)
    for index, image in enumerate(rendered):
        distances = [mean_difference(image, single) for single in alone]
        # Its own request's image (batched kernels may round a few pixels one level apart),
        # and nearer to it than to the image of either other request.
        assert distances[index] < 1.0, distances
        assert distances[index] < min(d for i, d in enumerate(distances) if i != index), distances
