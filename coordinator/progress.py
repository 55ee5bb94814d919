"""The job ``progress`` object (spec 001): ``stage``, ``percent``, ``message``, ``currentStep``,
``totalSteps``. Stages are the steps of a job, in order; percent is the whole job's."""

from __future__ import annotations

from typing import Any

# The steps a whole job walks through, in order (currentStep is 1-based).
STEPS = ("storyboard_generation", "image_generation", "clip_rendering", "compositing", "uploading")
# Share of the whole job's percent each step ends at.
STEP_END_PERCENT = {"storyboard_generation": 10, "image_generation": 40, "clip_rendering": 85,
                    "compositing": 95, "uploading": 100}


# Stages between the steps, and the step they sit at.
PAUSES = {"queued": None, "storyboard_ready": "image_generation",
          "regenerating_scene": "image_generation"}
# Work done alongside a step, sharing its span of the whole job's percent: the voice-over lines
# and the music are made while the clips render (spec 002 calls it ``generating_audio``).
ALONGSIDE = {"generating_audio": "clip_rendering"}
# While the storyboard waits for review, the whole job is this far along.
REVIEW_PERCENT = STEP_END_PERCENT["image_generation"]


def progress(stage: str, percent: float, message: str) -> dict[str, Any]:
    body: dict[str, Any] = {"stage": stage, "percent": round(max(0.0, min(100.0, percent)), 1),
                            "message": message, "totalSteps": len(STEPS)}
    step = stage if stage in STEPS else ALONGSIDE.get(stage) or PAUSES.get(stage)
    if step:
        body["currentStep"] = STEPS.index(step) + 1
    return body


def step_percent(stage: str, done: int, total: int) -> float:
    """Overall percent when ``done`` of ``total`` units of ``stage`` are finished."""
    stage = ALONGSIDE.get(stage, stage)
    end = STEP_END_PERCENT[stage]
    index = STEPS.index(stage)
    start = STEP_END_PERCENT[STEPS[index - 1]] if index else 0
    fraction = done / total if total else 1.0
    return start + (end - start) * fraction
