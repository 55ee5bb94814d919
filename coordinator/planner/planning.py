"""Which planner runs: the LLM when an API key is configured, the offline planner otherwise."""

from __future__ import annotations

from typing import Protocol

from coordinator.planner.llm import plan_with_llm, replan_scene_with_llm
from coordinator.planner.offline import plan_offline, replan_scene_offline
from coordinator.planner.schema import PlannedScene, PlanningBrief, PlanResult


class PlannerSettings(Protocol):
    """What the planner reads from settings (``coordinator.settings.Settings`` has it all)."""

    ai_api_key: str | None
    ai_model: str
    ai_base_url: str | None
    ai_timeout_seconds: float


def uses_llm(settings: PlannerSettings) -> bool:
    return bool((getattr(settings, "ai_api_key", None) or "").strip())


async def plan_storyboard(brief: PlanningBrief, settings: PlannerSettings) -> PlanResult:
    """The storyboard for ``brief``. Raises ``PlannerError`` (LLM path only)."""
    if not uses_llm(settings):
        return plan_offline(brief)
    return await plan_with_llm(brief, api_key=settings.ai_api_key.strip(), model=settings.ai_model,
                               base_url=settings.ai_base_url or None,
                               timeout_s=settings.ai_timeout_seconds)


async def replan_scene(brief: PlanningBrief, scenes: list[PlannedScene], scene_idx: int,
                       feedback: str | None,
                       settings: PlannerSettings) -> tuple[PlannedScene, int, int]:
    """Scene ``scene_idx`` of ``scenes`` rewritten with ``feedback``:
    ``(scene, prompt_tokens, completion_tokens)``. Raises ``PlannerError`` (LLM path only)."""
    if not 0 <= scene_idx < len(scenes):
        raise ValueError(f"scene_idx {scene_idx} is outside the storyboard ({len(scenes)} scenes)")
    if not uses_llm(settings):
        return replan_scene_offline(brief, scenes[scene_idx], scene_idx, feedback), 0, 0
    return await replan_scene_with_llm(brief, scenes, scene_idx, feedback,
                                       api_key=settings.ai_api_key.strip(),
                                       model=settings.ai_model,
                                       base_url=settings.ai_base_url or None,
                                       timeout_s=settings.ai_timeout_seconds)
