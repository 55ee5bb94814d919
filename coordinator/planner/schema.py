"""The planner's shapes: the brief it reads, the scenes it writes, and what a plan cost.

``PlannedScene`` and ``Storyboard`` double as the JSON schema the LLM must answer with, so
their constraints stay within what strict structured output accepts (types, enums, numeric
bounds, array lengths); checks beyond that (non-blank text) are validators that do not show in
the schema but still reject a bad answer.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coordinator.schemas.jobs import AspectRatio, ShotType, Transition

MAX_SCENES = 12
MIN_SCENE_SECONDS = 1.0

__all__ = ["AspectRatio", "MAX_SCENES", "MIN_SCENE_SECONDS", "PlanResult", "PlannedScene",
           "PlanningBrief", "ShotType", "Storyboard", "Transition"]


def _clean_list(values: list[str] | None) -> list[str]:
    return [" ".join(v.split()) for v in values or [] if v and v.strip()]


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())
    return value or None


class PlanningBrief(BaseModel):
    """Everything the planner knows about the ad: request, creative direction, brand, timing.

    Text is normalised (whitespace collapsed, blank optional fields become ``None``); the
    planner copes with empty strings where the request allowed them.
    """

    model_config = ConfigDict(frozen=True)

    product: str
    target_audience: str = ""
    key_message: str = ""
    call_to_action: str
    style: str
    tone: str | None = None
    visual_elements: list[str] = Field(default_factory=list)
    brand_colors: list[str] = Field(default_factory=list)  # hex like "#1a2b3c"; names pass too
    brand_tone: str | None = None
    brand_restrictions: list[str] = Field(default_factory=list)
    campaign_brief: str | None = None
    scene_count: int = Field(default=4, ge=1, le=MAX_SCENES)
    # Seconds of scenes; the job adds its call-to-action card on top. At least 1 s per scene.
    total_duration_s: float = Field(default=12.0, ge=MIN_SCENE_SECONDS, le=600.0)
    aspect_ratio: AspectRatio = AspectRatio.LANDSCAPE

    @field_validator("product", "target_audience", "key_message", "call_to_action", "style",
                     mode="before")
    @classmethod
    def _collapse(cls, value: object) -> object:
        return " ".join(value.split()) if isinstance(value, str) else value

    @field_validator("tone", "brand_tone", "campaign_brief", mode="before")
    @classmethod
    def _optional_text(cls, value: object) -> object:
        return _blank_to_none(value) if isinstance(value, str) else value

    @field_validator("visual_elements", "brand_colors", "brand_restrictions", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        if value is None:
            return []
        return _clean_list(value) if isinstance(value, list) else value

    @model_validator(mode="after")
    def _time_for_every_scene(self) -> "PlanningBrief":
        if self.total_duration_s < self.scene_count * MIN_SCENE_SECONDS:
            raise ValueError(f"total_duration_s ({self.total_duration_s:g} s) must allow at least "
                             f"{MIN_SCENE_SECONDS:g} s for each of the {self.scene_count} scenes")
        return self


class PlannedScene(BaseModel):
    """One scene of a video ad storyboard."""

    description: str = Field(description="What the viewer sees, in one or two sentences.")
    script: str = Field(description="The voice-over or on-screen caption line; short, at most "
                                    "about 120 characters.")
    shot_type: ShotType = Field(description="Camera framing of the scene.")
    transition: Transition = Field(description="Transition into the next scene; ignored for the "
                                               "last scene.")
    duration_s: float = Field(gt=0, description="Length of the scene in seconds.")
    image_prompt: str = Field(description="A text-to-image prompt for the scene's key frame: "
                                          "subject, setting, lighting, composition, style. No "
                                          "text, letters or logos in the image.")

    @field_validator("description", "script", "image_prompt", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # A model can emit U+0000; PostgreSQL cannot store it in text, and no one means it.
        return value.replace("\x00", "") if isinstance(value, str) else value

    @field_validator("description", "image_prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("script")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class Storyboard(BaseModel):
    """The scenes of one ad, in playing order."""

    scenes: list[PlannedScene] = Field(min_length=1, max_length=MAX_SCENES)


class PlanResult(BaseModel):
    storyboard: Storyboard
    model: str  # "offline" or the LLM's model name
    prompt_tokens: int = 0
    completion_tokens: int = 0
