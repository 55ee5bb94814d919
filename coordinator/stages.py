"""The job's stage timeline (``jobs.stages``): storyboard, images, review, clips, compositing,
upload, each ``{name, status, percent, startedAt, completedAt, error}``.

One function, ``fold``, turns a progress report and/or a status change into the next
timeline. The job actor folds every write it makes (``actors.job_store``); the API folds the
job's current status once more when it shows the timeline, so changes the API itself makes
(an approval, a cancel) show at once, before the actor writes again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from coordinator.job_states import JobStatus
from coordinator.progress import STEP_END_PERCENT, STEPS
from coordinator.schemas.common import as_utc

STAGES = ("storyboard", "images", "review", "clips", "compositing", "upload")
STAGE_STATUSES = ("pending", "running", "completed", "failed", "skipped")

# Progress stage (coordinator.progress) -> timeline stage. Regenerating a scene happens while
# the storyboard is under review; the voice-over and music are made alongside the clips, so
# the clips stage spans them too.
_FROM_PROGRESS = {"storyboard_generation": "storyboard", "image_generation": "images",
                  "storyboard_ready": "review", "regenerating_scene": "review",
                  "clip_rendering": "clips", "generating_audio": "clips",
                  "compositing": "compositing", "uploading": "upload"}
# Timeline stage -> the progress step whose share of the whole job's percent it spans.
_STEP_OF = {"storyboard": "storyboard_generation", "images": "image_generation",
            "clips": "clip_rendering", "compositing": "compositing", "upload": "uploading"}
# The stage a status puts the job in, when no progress report says more.
_FROM_STATUS = {JobStatus.STORYBOARD_PROCESSING.value: "storyboard",
                JobStatus.STORYBOARD_READY.value: "review",
                JobStatus.VIDEO_PROCESSING.value: "clips"}
_UNFINISHED = ("pending", "running")


def _iso(moment: datetime) -> str:
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def empty_timeline() -> list[dict[str, Any]]:
    return [{"name": name, "status": "pending", "percent": 0.0, "startedAt": None,
             "completedAt": None, "error": None} for name in STAGES]


def _stage_percent(stage: str, overall: float | None) -> float | None:
    """The stage's own percent from the whole job's (its step spans a share of it)."""
    step = _STEP_OF.get(stage)
    if step is None or overall is None:
        return None
    index = STEPS.index(step)
    start = STEP_END_PERCENT[STEPS[index - 1]] if index else 0
    end = STEP_END_PERCENT[step]
    return round(max(0.0, min(100.0, (overall - start) * 100 / (end - start))), 1)


def fold(stages: list[dict[str, Any]] | None, *, at: datetime, status: str | None = None,
         progress: dict[str, Any] | None = None, error: str | None = None,
         approved_at: datetime | None = None, start_from_status: bool = True) -> list[dict[str, Any]]:
    """The timeline after the job reported ``progress`` and/or moved to ``status`` at ``at``.
    ``approved_at`` dates the end of the review (the approval, not the actor noticing it).
    Without ``start_from_status`` a status only ends stages; the actor's writes start them."""
    timeline = empty_timeline()
    known = {entry.get("name"): entry for entry in stages or []}
    for entry in timeline:
        entry.update({key: value for key, value in known.get(entry["name"], {}).items()
                      if key in entry})
    by_name = {entry["name"]: entry for entry in timeline}
    now = _iso(at)

    current = _FROM_PROGRESS.get((progress or {}).get("stage", ""))
    if current is not None:
        _start(timeline, current, now, approved_at)
        percent = _stage_percent(current, (progress or {}).get("percent"))
        if percent is not None:
            by_name[current]["percent"] = percent
    elif start_from_status and status in _FROM_STATUS:
        stage = _FROM_STATUS[status]
        index = STAGES.index(stage)
        # Only forwards: a status never undoes what later stages already did (a retry of a
        # failed compositing keeps its clips; the actor's own reports restart what it redoes).
        if (by_name[stage]["status"] in ("pending", "failed")
                and all(e["status"] == "pending" for e in timeline[index + 1:])):
            _start(timeline, stage, now, approved_at)

    if status == JobStatus.VIDEO_PROCESSING.value and by_name["review"]["status"] == "running":
        _finish(by_name["review"], "completed", _iso(approved_at) if approved_at else now)
    elif status == JobStatus.COMPLETED.value:
        for entry in timeline:
            if entry["status"] == "running":
                _finish(entry, "completed", now)
            elif entry["status"] in ("pending", "failed"):
                entry["status"] = "skipped"
    elif status == JobStatus.FAILED.value:
        running = [e for e in timeline if e["status"] == "running"]
        if not any(e["status"] == "failed" for e in timeline) or running:
            target = running[-1] if running else next(
                (e for e in timeline if e["status"] == "pending"), timeline[-1])
            _finish(target, "failed", now)
            target["error"] = error
    elif status == JobStatus.CANCELLED.value:
        for entry in timeline:
            if entry["status"] in _UNFINISHED:
                if entry["status"] == "running":
                    entry["completedAt"] = now
                entry["status"] = "skipped"
    return timeline


def _start(timeline: list[dict[str, Any]], stage: str, now: str,
           approved_at: datetime | None) -> None:
    index = STAGES.index(stage)
    for entry in timeline[:index]:
        if entry["status"] == "running":
            ended = _iso(approved_at) if entry["name"] == "review" and approved_at else now
            _finish(entry, "completed", ended)
        elif entry["status"] == "pending":
            entry["status"] = "skipped"
    entry = timeline[index]
    if entry["status"] != "running":
        entry.update(status="running", percent=0.0, startedAt=now, completedAt=None, error=None)
    for later in timeline[index + 1:]:
        if later["status"] == "failed":  # a retry redoes it
            later.update(status="pending", percent=0.0, startedAt=None, completedAt=None, error=None)


def _finish(entry: dict[str, Any], status: str, now: str) -> None:
    entry["status"] = status
    entry["completedAt"] = now
    entry["startedAt"] = entry["startedAt"] or now
    if status == "completed":
        entry["percent"] = 100.0
