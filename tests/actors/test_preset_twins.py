"""A whole job on the farm per shipped GPU preset, through its random-weight twin.

conftest's ``ray_session`` writes the twin presets (``models.twin_presets``) where the farm reads
extra presets; this module builds the twins before the first job. The renderers load them with
the preset's own pipeline classes, variants and settings, so these jobs run the production code
path on a CPU, from the API to the composited MP4.
"""

from __future__ import annotations

import pytest

from actors.media_probe import probe_media
from models.presets import PRESETS_DIR, get_preset
from models.twin_presets import twin_preset_name
from models.twins import ensure_twins
from tests.jobs_helpers import start_job, wait_for_status

pytestmark = pytest.mark.ray

# Every shipped preset but ``tiny``, which is its own twin and runs in every other farm test.
GPU_PRESETS = sorted(path.stem for path in PRESETS_DIR.glob("*.yaml") if twin_preset_name(path.stem) != path.stem)


@pytest.fixture(scope="module")
def alice(local_farm, ray_session):
    ensure_twins(ray_session["models_dir"], GPU_PRESETS)
    with local_farm.client("alice") as client:
        yield client


@pytest.mark.parametrize("preset", GPU_PRESETS)
def test_gpu_preset_twin_completes_a_job(alice, preset, tmp_path):
    twin = twin_preset_name(preset)
    created = start_job(alice, sceneCount=2, durationSeconds=6, aspectRatio="16:9", preset=twin,
                        autoApprove=True)
    done = wait_for_status(alice, created["id"], "completed", timeout=600)
    assert done["preset"] == twin

    video = alice.get(f"/api/v3/jobs/{done['id']}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = tmp_path / f"{twin}.mp4"
    path.write_bytes(video.content)
    info = probe_media(path)
    assert info.video_codec == "h264"
    assert (info.width, info.height) == get_preset(twin).output_size["16:9"]
