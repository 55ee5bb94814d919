"""What a delivered video is (``GET /jobs/{id}/metadata``), worked out from what is stored,
without reading the video: cheap on every request and on every backend.

The compositor guarantees the facts it is asked for: it writes H.264 MP4 with an AAC track at
``DELIVERED_FPS`` and the preset's output size for the job's aspect ratio, and refuses to
deliver a file that is not exactly that (``actors.compositor.composite_video`` probes its own
output). Its measured duration is stored as ``jobs.video_duration_s`` and the file size comes
from the object store. (A preset file edited after delivery would change the reported size:
presets are deployment configuration, not per-job data.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator.db.models import Job
from coordinator.envelope import not_found
from coordinator.schemas.common import as_utc
from coordinator.storage import ObjectStore
from models.presets import UnknownPreset, get_preset

# The job actor's OUTPUT_FPS (actors.job_actor, which imports Ray, so not imported here);
# tests/coordinator/test_metadata_and_presets.py keeps the two equal.
DELIVERED_FPS = 24
VIDEO_CODEC = "h264"
# Every ad has an AAC track (silent when it has neither voice nor music): actors.sound_mix.
AUDIO_CODEC = "aac"
CONTAINER = "mp4"


async def video_metadata(store: ObjectStore, job: Job) -> dict[str, Any]:
    """The metadata of a completed job's video (the caller checks the job is completed)."""
    if not job.video_key or not await asyncio.to_thread(store.exists, job.video_key):
        raise not_found("Video file")
    size = (await asyncio.to_thread(store.info, job.video_key)).size
    try:
        width, height = get_preset(job.preset).output_size[job.aspect_ratio]
    except (UnknownPreset, KeyError):  # the preset was removed from this deployment
        width = height = None
    return {"jobId": job.id, "duration": job.video_duration_s, "width": width, "height": height,
            "fps": DELIVERED_FPS, "codecs": {"video": VIDEO_CODEC, "audio": AUDIO_CODEC},
            "format": CONTAINER, "fileSize": size,
            "createdAt": as_utc(job.completed_at or job.updated_at)}
