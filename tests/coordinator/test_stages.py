"""The stage timeline on ``GET /jobs/{id}``: the rows are written by the job actor's own
``JobStore`` (no Ray), in the actor's order, and read back over HTTP on both backends."""

from __future__ import annotations

import asyncio
from datetime import datetime

from actors import steps
from actors.job_store import JobStore
from coordinator.job_states import JobStatus
from coordinator.progress import REVIEW_PERCENT, progress, step_percent
from coordinator.storage import make_object_store
from tests.jobs_helpers import _png, advance_job, get_job, start_job

STAGES = ["storyboard", "images", "review", "clips", "compositing", "upload"]


def actor_writes(settings, job_id: str, *writes) -> None:
    """Runs the job actor's writes in order: ``("progress", dict)`` or ``("to", status, changes)``."""
    async def run() -> None:
        store = JobStore(settings, job_id)
        try:
            for write in writes:
                if write[0] == "progress":
                    await store.set_progress(write[1])
                elif write[0] == "fail":
                    await store.fail(write[1], "render_failed")
                elif write[0] == "images":  # the scenes still without an image get theirs
                    for scene in await store.scenes():
                        if scene.image_key is None:
                            key = steps.scene_image_key(job_id, scene.id, scene.version)
                            make_object_store(settings).put_bytes(key, _png(), "image/png")
                            await store.record_image(scene.id, key=key, version=scene.version,
                                                     seconds=0.1, cost=0.001)
                else:
                    await store.transition(write[1], **(write[2] if len(write) > 2 else {}))
        finally:
            await store.close()

    asyncio.run(run())


def timeline(http, job_id: str) -> dict[str, dict]:
    stages = get_job(http, job_id)["stages"]
    assert [stage["name"] for stage in stages] == STAGES
    return {stage["name"]: stage for stage in stages}


def statuses(stages: dict[str, dict]) -> list[str]:
    return [stages[name]["status"] for name in STAGES]


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_new_job_has_every_stage_pending(alice):
    job = start_job(alice)
    stages = timeline(alice, job["id"])
    assert statuses(stages) == ["pending"] * 6
    assert all(s["startedAt"] is None and s["completedAt"] is None and s["error"] is None
               and s["percent"] == 0 for s in stages.values())


def test_the_timeline_follows_the_job_from_storyboard_to_video(alice, api):
    job_id = start_job(alice)["id"]
    # The storyboard is written with its scenes (and the first image), the actor's way.
    advance_job(api.settings, job_id, "storyboard_processing")
    assert timeline(alice, job_id)["storyboard"]["status"] == "running"
    actor_writes(api.settings, job_id,
                 ("progress", progress("image_generation", step_percent("image_generation", 1, 2),
                                       "Rendering scene images (1/2)")))
    stages = timeline(alice, job_id)
    assert statuses(stages) == ["completed", "running", "pending", "pending", "pending", "pending"]
    assert stages["images"]["percent"] == 50.0  # half the scenes, whatever the job's share
    assert stages["storyboard"]["completedAt"] == stages["images"]["startedAt"]

    # Review starts when the storyboard is ready and ends at the owner's approval.
    actor_writes(api.settings, job_id, ("images",), ("to", JobStatus.STORYBOARD_READY, {
        "progress": progress("storyboard_ready", REVIEW_PERCENT, "Storyboard ready for review")}))
    stages = timeline(alice, job_id)
    assert statuses(stages) == ["completed", "completed", "running", "pending", "pending", "pending"]
    assert stages["images"]["percent"] == 100.0 and stages["review"]["startedAt"] is not None
    review_started = stages["review"]["startedAt"]

    approve = alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "approve"})
    assert approve.status_code == 200, approve.text
    stages = timeline(alice, job_id)
    assert stages["review"]["status"] == "completed"
    approved_at = stages["review"]["completedAt"]
    assert moment(approved_at) >= moment(review_started)
    assert statuses(stages)[3:] == ["pending", "pending", "pending"]

    actor_writes(api.settings, job_id,
                 ("progress", progress("clip_rendering", step_percent("clip_rendering", 1, 4),
                                       "Rendering scene clips (1/4)")))
    stages = timeline(alice, job_id)
    # The job's percent is kept to one decimal, so the stage's is within a fraction of 25.
    assert stages["clips"]["status"] == "running" and abs(stages["clips"]["percent"] - 25) < 0.5
    # The actor noticing the approval later does not move the review's end.
    assert stages["review"]["completedAt"] == approved_at

    actor_writes(api.settings, job_id,
                 ("progress", progress("compositing", step_percent("compositing", 0, 1), "Compositing")),
                 ("progress", progress("uploading", step_percent("uploading", 0, 1), "Uploading")),
                 ("to", JobStatus.COMPLETED, {"progress": progress("uploading", 100, "Video ready")}))
    stages = timeline(alice, job_id)
    assert statuses(stages) == ["completed"] * 6
    assert all(s["percent"] == 100.0 and s["error"] is None for s in stages.values())
    ends = [moment(stages[name]["completedAt"]) for name in STAGES]
    starts = [moment(stages[name]["startedAt"]) for name in STAGES]
    assert ends == sorted(ends) and all(start <= end for start, end in zip(starts, ends))


def test_a_failed_stage_carries_the_error_and_a_retry_runs_it_again(alice, api):
    job_id = start_job(alice)["id"]
    advance_job(api.settings, job_id, "video_processing")
    actor_writes(api.settings, job_id,
                 ("progress", progress("clip_rendering", step_percent("clip_rendering", 0, 3),
                                       "Rendering scene clips (0/3)")),
                 ("fail", "Rendering the clip of scene 0 failed: out of memory"))
    stages = timeline(alice, job_id)
    # (advance_job writes no image progress, so the images stage shows as skipped.)
    assert statuses(stages)[2:] == ["completed", "failed", "pending", "pending"]
    assert stages["clips"]["error"] == "Rendering the clip of scene 0 failed: out of memory"
    assert stages["clips"]["completedAt"] is not None

    retried = alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "retry"})
    assert retried.status_code == 200, retried.text
    actor_writes(api.settings, job_id,
                 ("progress", progress("clip_rendering", step_percent("clip_rendering", 0, 3),
                                       "Rendering scene clips (0/3)")))
    stages = timeline(alice, job_id)
    assert stages["clips"]["status"] == "running" and stages["clips"]["error"] is None


def test_cancelling_skips_what_had_not_finished(alice, api):
    job_id = start_job(alice)["id"]
    advance_job(api.settings, job_id, "storyboard_ready")
    stages = timeline(alice, job_id)
    assert stages["review"]["status"] == "running"

    assert alice.post(f"/api/v3/jobs/{job_id}/actions", json={"action": "cancel"}).status_code == 200
    stages = timeline(alice, job_id)
    assert stages["storyboard"]["status"] == "completed"
    assert statuses(stages)[2:] == ["skipped"] * 4
    assert stages["review"]["completedAt"] is not None and stages["clips"]["startedAt"] is None
