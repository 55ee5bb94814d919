"""The storyboard planner: an ad brief in, N scenes out.

``plan_storyboard`` / ``replan_scene`` pick the LLM (``AI_API_KEY`` set) or the deterministic
offline planner; failures of the LLM path are ``PlannerError`` with a machine-readable ``code``.
"""

from coordinator.planner.llm import (PLANNER_INVALID_OUTPUT, PLANNER_REFUSED, PLANNER_TIMEOUT,
                                     PLANNER_UNAVAILABLE, PlannerError, plan_with_llm,
                                     replan_scene_with_llm)
from coordinator.planner.offline import (OFFLINE_MODEL, allocate_durations, negative_prompt_terms,
                                         plan_offline, replan_scene_offline)
from coordinator.planner.planning import PlannerSettings, plan_storyboard, replan_scene, uses_llm
from coordinator.planner.schema import (AspectRatio, PlannedScene, PlanningBrief, PlanResult,
                                        ShotType, Storyboard, Transition)

__all__ = [
    "OFFLINE_MODEL", "PLANNER_INVALID_OUTPUT", "PLANNER_REFUSED", "PLANNER_TIMEOUT",
    "PLANNER_UNAVAILABLE", "AspectRatio", "PlanResult", "PlannedScene", "PlannerError",
    "PlannerSettings", "PlanningBrief", "ShotType", "Storyboard", "Transition",
    "allocate_durations", "negative_prompt_terms", "plan_offline", "plan_storyboard",
    "plan_with_llm", "replan_scene", "replan_scene_offline", "replan_scene_with_llm", "uses_llm",
]
