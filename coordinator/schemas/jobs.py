"""Job shapes: the create body (spec 000), ``advanced`` options, the job and scene views
(spec 000/001/003: ``storyboard.scenes[].image_url``/``scene_idx`` stay snake_case), actions."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from coordinator.schemas.common import CamelModel, PartialUpdate, Id, RequestModel, UtcDatetime
from coordinator.schemas.stages import StageOut

BriefText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)]
# Every ad ends on a call-to-action card of this length, inside the requested duration.
CTA_CARD_SECONDS = 2.0

RequiredBriefText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                      max_length=2000)]


class AspectRatio(str, Enum):
    LANDSCAPE = "16:9"
    PORTRAIT = "9:16"
    SQUARE = "1:1"


class Transition(str, Enum):
    CUT = "cut"
    CROSSFADE = "crossfade"


class ShotType(str, Enum):
    WIDE = "wide"
    MEDIUM = "medium"
    CLOSE_UP = "close_up"
    EXTREME_CLOSE_UP = "extreme_close_up"
    OVERHEAD = "overhead"
    TRACKING = "tracking"
    PRODUCT = "product"


class Priority(str, Enum):
    """How urgently the renderers take a job's scenes (spec 002; actors.render_queue)."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class MusicSource(str, Enum):
    """Where the music bed comes from: the preset's music model, an audio asset, or nowhere."""

    GENERATED = "generated"
    ASSET = "asset"
    NONE = "none"


class JobContext(RequestModel):
    client_id: Id
    campaign_id: Id | None = None
    user_id: str | None = None  # accepted for compatibility (spec 001); the token decides


class AdBasics(RequestModel):
    product: RequiredBriefText
    target_audience: BriefText = ""
    key_message: BriefText = ""
    call_to_action: RequiredBriefText


class CreativeDirection(RequestModel):
    style: RequiredBriefText
    tone: BriefText | None = None
    visual_elements: list[Annotated[str, StringConstraints(max_length=200)]] | None = Field(
        default=None, max_length=20)


class Creative(RequestModel):
    direction: CreativeDirection


class AdvancedOptions(CamelModel):
    """Optional knobs; unknown keys are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")

    scene_count: int | None = Field(default=None, ge=1, le=12)
    duration_seconds: float | None = Field(default=None, ge=3, le=120)
    aspect_ratio: AspectRatio = AspectRatio.LANDSCAPE
    preset: Annotated[str, StringConstraints(max_length=64)] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    product_image_asset_id: Id | None = None
    # An image asset of yours (a product or character) every scene image is conditioned on.
    reference_asset_id: Id | None = None
    auto_approve: bool = False
    # Sound (README: audio). Languages and voices are the preset's: checked at job creation.
    voice_over: bool = True
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")] | None = None
    voice: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=32)] | None = None
    music: MusicSource = MusicSource.GENERATED
    music_asset_id: Id | None = None

    @model_validator(mode="after")
    def _music_asset_named(self) -> "AdvancedOptions":
        if self.music_asset_id and "music" not in self.model_fields_set:
            self.music = MusicSource.ASSET  # naming an asset chooses it
        if (self.music == MusicSource.ASSET) != bool(self.music_asset_id):
            raise ValueError('music "asset" and musicAssetId go together: name the audio asset '
                             'with musicAssetId, or choose music "generated" or "none"')
        return self

    @model_validator(mode="after")
    def _duration_fits_scenes(self) -> "AdvancedOptions":
        if (self.scene_count and self.duration_seconds
                and self.duration_seconds < self.scene_count + CTA_CARD_SECONDS):
            raise ValueError("durationSeconds must allow at least 1 second per scene plus "
                             f"{CTA_CARD_SECONDS:g} seconds for the call-to-action card")
        return self


class JobCreate(RequestModel):
    context: JobContext
    ad_basics: AdBasics
    creative: Creative
    advanced: AdvancedOptions = Field(default_factory=AdvancedOptions)
    priority: Priority = Priority.NORMAL
    # One of your webhook endpoints (/api/v3/webhooks) to notify of this job's events.
    webhook_id: Id | None = None


class JobProgress(CamelModel):
    stage: str
    percent: float | None = None
    message: str | None = None
    current_step: int | None = None
    total_steps: int | None = None
    # While the job renders (coordinator.eta): jobs served before it, and when it should finish.
    queue_position: int | None = None
    estimated_completion_at: UtcDatetime | None = None


class SceneOut(BaseModel):
    """A storyboard scene. The spec's three fields keep their snake_case names."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    scene_idx: int
    image_url: str | None
    description: str
    script: str
    shot_type: str = Field(alias="shotType")
    transition: str
    duration: float
    version: int
    status: str
    error: str | None = None
    created_at: UtcDatetime = Field(alias="createdAt")
    updated_at: UtcDatetime = Field(alias="updatedAt")


class Storyboard(BaseModel):
    scenes: list[SceneOut]


class JobOut(CamelModel):
    id: str
    status: str
    client_id: str
    campaign_id: str | None = None
    progress: JobProgress | None = None
    storyboard: Storyboard | None = None
    video_url: str | None = None
    thumbnail_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    estimated_cost: float | None = None
    actual_cost: float | None = None
    preset: str
    aspect_ratio: str
    priority: str = Priority.NORMAL.value
    webhook_id: str | None = None
    # The stage timeline (coordinator.stages), always all six stages in order.
    stages: list[StageOut] = Field(default_factory=list)
    created_at: UtcDatetime
    updated_at: UtcDatetime


class JobSummary(CamelModel):
    """The create response (spec 000): id, status and timestamps."""

    id: str
    status: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class CostBreakdown(BaseModel):
    storyboard_generation: float
    image_generation: float
    video_rendering: float


class CostEstimate(CamelModel):
    estimated_cost: float
    currency: str
    breakdown: CostBreakdown
    valid_until: str


class SceneUpdate(PartialUpdate):
    """Edits a person makes during review; only the fields sent change."""

    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                  max_length=2000)] | None = None
    script: Annotated[str, StringConstraints(max_length=500)] | None = None
    shot_type: ShotType | None = None
    transition: Transition | None = None
    duration: float | None = Field(default=None, ge=1, le=30)
    image_prompt: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                   max_length=2000)] | None = None


class RegenerateRequest(RequestModel):
    feedback: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None


class RegeneratePayload(RequestModel):
    scene_idx: int = Field(ge=0)
    feedback: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = None


class JobActionRequest(RequestModel):
    # ``retry`` extends the spec's actions: the owner reopens a failed job (see crud.retry_job).
    action: Literal["approve", "cancel", "regenerate_scene", "retry"]
    payload: dict[str, Any] | None = None


class ActionResult(CamelModel):
    message: str
    status: str
    updated_scene_idx: int | None = None

