"""The storyboard planner: the offline planner's rules, and the LLM path against a real
OpenAI-compatible HTTP server on loopback (the actual SDK, the actual wire format)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from coordinator.planner import (PlannedScene, PlannerError, PlanningBrief, ShotType, Transition,
                                 allocate_durations, negative_prompt_terms, plan_offline,
                                 plan_storyboard, plan_with_llm, replan_scene,
                                 replan_scene_offline, replan_scene_with_llm)
from coordinator.settings import Settings
from tests.fake_openai import REFUSAL, FakeOpenAI


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_brief(**changes: Any) -> PlanningBrief:
    values: dict[str, Any] = dict(
        product="Acme Sparkling Water",
        target_audience="busy young professionals",
        key_message="Zero sugar, all the fizz.",
        call_to_action="Grab a can at acme.com",
        style="bright cinematic",
        tone="upbeat",
        visual_elements=["sunlit office", "beer bottles on a bar counter", "city rooftop at dusk"],
        brand_colors=["#1a2b3c", "#ff7f50"],
        brand_tone="playful",
        brand_restrictions=["No alcohol or beer", "Never show competitor logos"],
        campaign_brief="Summer launch of the new lime flavour.",
        scene_count=5,
        total_duration_s=15.0,
        aspect_ratio="16:9",
    )
    values.update(changes)
    return PlanningBrief(**values)


# ---- offline -------------------------------------------------------------------------------

def test_offline_is_deterministic() -> None:
    first = plan_offline(make_brief())
    second = plan_offline(make_brief())
    assert first == second
    assert first.model_dump_json() == second.model_dump_json()
    assert (first.model, first.prompt_tokens, first.completion_tokens) == ("offline", 0, 0)


@pytest.mark.parametrize("scene_count,total", [(1, 5.0), (3, 9.0), (5, 15.0), (12, 12.0),
                                               (12, 60.0), (4, 7.25), (2, 2.0)])
def test_offline_scales_to_any_scene_count(scene_count: int, total: float) -> None:
    brief = make_brief(scene_count=scene_count, total_duration_s=total)
    scenes = plan_offline(brief).storyboard.scenes
    assert len(scenes) == scene_count
    assert abs(sum(s.duration_s for s in scenes) - total) < 0.05
    assert all(s.duration_s >= 1.0 for s in scenes)
    # Every scene but the last is on the 0.1 s grid; the last takes the remainder.
    assert all(abs(s.duration_s * 10 - round(s.duration_s * 10)) < 1e-6 for s in scenes[:-1])
    for scene in scenes:
        assert scene.description and scene.image_prompt
        assert 0 < len(scene.script) <= 120
        assert "bright cinematic style" in scene.image_prompt
        # Brand colours by name (a hex code means nothing to a text encoder).
        assert "navy" in scene.image_prompt and "#1a2b3c" not in scene.image_prompt
    # The call to action closes the ad; the product is on screen.
    assert "Grab a can at acme.com" in scenes[-1].script
    assert any("Acme Sparkling Water" in s.description for s in scenes)
    assert any("Acme Sparkling Water" in s.image_prompt for s in scenes)


def test_offline_arc_has_hook_use_message_hero_and_cta() -> None:
    scenes = plan_offline(make_brief(scene_count=5)).storyboard.scenes
    assert "busy young professionals" in scenes[0].description.lower()  # the hook
    assert "using Acme Sparkling Water" in scenes[1].description  # in use
    assert scenes[2].script == "Zero sugar, all the fizz."  # the key message
    assert scenes[3].shot_type == ShotType.PRODUCT and "hero" in scenes[3].description.lower()
    assert scenes[4].script == "Grab a can at acme.com."
    # Cuts, with a crossfade into the hero shot and into the call to action.
    assert [s.transition for s in scenes[:-1]] == [Transition.CUT, Transition.CUT,
                                                    Transition.CROSSFADE, Transition.CROSSFADE]
    # The key message is said even when there is no room for its own scene.
    for count in (1, 2, 3, 4):
        scripts = " ".join(s.script for s in plan_offline(make_brief(scene_count=count))
                           .storyboard.scenes)
        assert "Zero sugar, all the fizz." in scripts, count


def test_offline_framing_follows_the_aspect_ratio() -> None:
    vertical = plan_offline(make_brief(aspect_ratio="9:16")).storyboard.scenes
    assert all("vertical" in s.image_prompt for s in vertical)
    wide = plan_offline(make_brief(aspect_ratio="16:9")).storyboard.scenes
    assert all("16:9" in s.image_prompt and "vertical" not in s.image_prompt for s in wide)
    square = plan_offline(make_brief(aspect_ratio="1:1")).storyboard.scenes
    assert all("square" in s.image_prompt for s in square)


def test_offline_never_names_a_restricted_thing() -> None:
    """Decision: a restricted term never appears in an image prompt or description, not even as
    "avoid ...", because image models draw what a prompt names. The terms are offered as a
    negative prompt instead."""
    brief = make_brief(scene_count=12, total_duration_s=30.0,
                       target_audience="beer lovers", key_message="Better than beer.")
    scenes = plan_offline(brief).storyboard.scenes
    for scene in scenes:
        for word in ("alcohol", "beer", "competitor", "logo"):
            assert word not in scene.image_prompt.lower(), scene.image_prompt
            assert word not in scene.description.lower(), scene.description
        assert "avoid" not in scene.image_prompt.lower()
    # The harmless visual elements are kept, the restricted one dropped.
    assert any("sunlit office" in s.image_prompt for s in scenes)
    assert not any("bar counter" in s.image_prompt for s in scenes)
    assert negative_prompt_terms(brief) == "competitor logos, alcohol, beer"
    assert negative_prompt_terms(make_brief(brand_restrictions=[])) is None
    # A rule to follow is not a thing to leave out.
    assert negative_prompt_terms(make_brief(brand_restrictions=["Always show the can"])) is None


def test_offline_brand_tone_sets_the_mood() -> None:
    luxury = plan_offline(make_brief(brand_tone="luxurious", tone=None)).storyboard.scenes
    assert all("luxurious mood" in s.image_prompt for s in luxury)
    assert all("rich shadows" in s.image_prompt for s in luxury)
    playful = plan_offline(make_brief()).storyboard.scenes
    assert all("playful and upbeat mood" in s.image_prompt for s in playful)


def test_offline_copes_with_a_sparse_brief() -> None:
    brief = PlanningBrief(product="Widget", call_to_action="Buy now", style="minimal",
                          scene_count=6, total_duration_s=6.0)
    scenes = plan_offline(brief).storyboard.scenes
    assert len(scenes) == 6 and all(s.duration_s == 1.0 for s in scenes)
    assert scenes[-1].script == "Buy now."
    assert all("{" not in s.description + s.script + s.image_prompt for s in scenes)


def test_brief_needs_a_second_per_scene() -> None:
    with pytest.raises(ValueError, match="at least 1 s"):
        make_brief(scene_count=6, total_duration_s=5.0)


def test_allocate_durations_keeps_proportions_and_the_minimum() -> None:
    assert allocate_durations([2, 2, 2], 12.0) == [4.0, 4.0, 4.0]
    durations = allocate_durations([0.1, 1, 10], 12.0)
    assert durations[0] == 1.0 and durations[1] == 1.0 and durations[2] == pytest.approx(10.0)
    durations = allocate_durations([1, 1, 1], 10.0)
    assert sum(durations) == pytest.approx(10.0) and min(durations) >= 1.0
    with pytest.raises(ValueError):
        allocate_durations([1, 1], 1.5)


def test_offline_replan_follows_feedback_deterministically() -> None:
    brief = make_brief()
    scenes = plan_offline(brief).storyboard.scenes
    scene = scenes[1]
    feedback = "Make it a close-up with warmer sunset light"
    first = replan_scene_offline(brief, scene, 1, feedback)
    assert first == replan_scene_offline(brief, scene, 1, feedback)
    assert first.description != scene.description and first.image_prompt != scene.image_prompt
    assert "warmer sunset light" in first.description
    assert "warmer sunset light" in first.image_prompt
    assert first.image_prompt.startswith("Close-up of ")
    assert first.shot_type == ShotType.CLOSE_UP  # the feedback named a shot type
    assert (first.duration_s, first.transition, first.script) == (
        scene.duration_s, scene.transition, scene.script)
    # Without a shot type in the feedback, the shot stays.
    calmer = replan_scene_offline(brief, scene, 1, "more pastel colours")
    assert calmer.shot_type == scene.shot_type and "more pastel colours" in calmer.image_prompt
    # Feedback cannot bring a restricted thing in.
    sneaky = replan_scene_offline(brief, scene, 1, "add a beer on the table")
    assert "beer" not in sneaky.image_prompt.lower() and "on the table" in sneaky.image_prompt
    # No feedback: the scene as it was.
    assert replan_scene_offline(brief, scene, 1, None) == scene
    assert replan_scene_offline(brief, scene, 1, "   ") == scene




@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def llm_kwargs(fake: FakeOpenAI, scenario: str | None = None, **changes: Any) -> dict[str, Any]:
    values = dict(api_key="test-key", model="test-model", base_url=fake.base_url(scenario),
                  timeout_s=5.0)
    values.update(changes)
    return values


async def plan_error(fake: FakeOpenAI, scenario: str, **changes: Any) -> PlannerError:
    with pytest.raises(PlannerError) as info:
        await plan_with_llm(make_brief(scene_count=3, total_duration_s=9.0),
                            **llm_kwargs(fake, scenario, **changes))
    return info.value


@pytest.mark.anyio
async def test_llm_plans_a_storyboard(fake_openai: FakeOpenAI) -> None:
    brief = make_brief(scene_count=3, total_duration_s=9.0, aspect_ratio="9:16")
    result = await plan_with_llm(brief, **llm_kwargs(fake_openai, "ok"))
    scenes = result.storyboard.scenes
    assert len(scenes) == 3
    # The model's 2 / 4 / 6 s re-normalised to the 9 s asked for, in proportion.
    assert [s.duration_s for s in scenes] == [1.5, 3.0, 4.5]
    assert scenes[2].script == "Grab a can at acme.com"
    assert scenes[1].shot_type == ShotType.MEDIUM and scenes[1].transition == Transition.CUT
    # A restricted term the model slipped into a prompt is taken out.
    assert "alcohol" not in scenes[2].image_prompt and "studio light" in scenes[2].image_prompt
    assert (result.model, result.prompt_tokens, result.completion_tokens) == (
        "test-model-2024-07-18", 321, 123)

    [request] = fake_openai.calls("ok")
    assert request["path"] == "/ok/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer test-key"
    body = request["body"]
    assert body["model"] == "test-model"
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Storyboard"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema["required"] == ["scenes"] and schema["additionalProperties"] is False
    assert schema["properties"]["scenes"]["maxItems"] == 12
    scene_schema = schema["$defs"]["PlannedScene"]
    assert set(scene_schema["required"]) == {"description", "script", "shot_type", "transition",
                                             "duration_s", "image_prompt"}
    assert scene_schema["additionalProperties"] is False
    assert "extreme_close_up" in json.dumps(scene_schema["properties"]["shot_type"])
    system, user = body["messages"]
    assert system["role"] == "system" and user["role"] == "user"
    assert "exactly 3 scenes" in system["content"] and "9 seconds" in system["content"]
    assert "negation" in system["content"]  # why restricted things are never named
    assert "beer bottles" not in user["content"]  # a visual element the brand rules out
    for text in ("Acme Sparkling Water", "Grab a can at acme.com", "Zero sugar, all the fizz.",
                 "busy young professionals", "#1a2b3c (navy)", "No alcohol or beer",
                 "Never show competitor logos", "playful", "bright cinematic", "9:16",
                 "vertical", "Summer launch", "exactly 3 scenes"):
        assert text in user["content"], text


@pytest.mark.anyio
async def test_llm_usage_missing_counts_zero(fake_openai: FakeOpenAI) -> None:
    result = await plan_with_llm(make_brief(scene_count=3, total_duration_s=9.0),
                                 **llm_kwargs(fake_openai, "no-usage"))
    assert (result.prompt_tokens, result.completion_tokens) == (0, 0)


@pytest.mark.anyio
async def test_llm_output_not_json(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "not-json")
    assert error.code == "planner_invalid_output"
    assert "not valid JSON" in error.message and "storyboard schema" in error.message


@pytest.mark.anyio
async def test_llm_output_missing_a_field(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "missing-field")
    assert error.code == "planner_invalid_output"
    assert "scenes.1.image_prompt: Field required" in error.message
    error = await plan_error(fake_openai, "bad-enum")
    assert error.code == "planner_invalid_output" and "scenes.0.shot_type" in error.message


@pytest.mark.anyio
async def test_llm_wrong_number_of_scenes(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "wrong-count")
    assert error.code == "planner_invalid_output"
    assert "2 scenes but 3 were asked for" in error.message


@pytest.mark.anyio
async def test_llm_truncated_output(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "truncated")
    assert error.code == "planner_invalid_output" and "output tokens" in error.message


@pytest.mark.anyio
async def test_llm_refusal(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "refusal")
    assert error.code == "planner_refused"
    assert REFUSAL.rstrip(".") in error.message


@pytest.mark.anyio
async def test_llm_bad_key(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "unauthorized", api_key="wrong-key")
    assert error.code == "planner_unavailable"
    assert "AI_API_KEY" in error.message and "401" in error.message
    assert "wrong-key" not in error.message
    assert len(fake_openai.calls("unauthorized")) == 1  # a 401 is not retried


@pytest.mark.anyio
async def test_llm_server_error(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "server-error")
    assert error.code == "planner_unavailable"
    assert "HTTP 500" in error.message and "server had an error" in error.message
    assert len(fake_openai.calls("server-error")) == 2  # one retry, then give up
    error = await plan_error(fake_openai, "rate-limited")
    assert error.code == "planner_unavailable" and "quota" in error.message


@pytest.mark.anyio
async def test_llm_timeout(fake_openai: FakeOpenAI) -> None:
    started = time.monotonic()
    error = await plan_error(fake_openai, "slow", timeout_s=0.75)
    assert time.monotonic() - started < 5
    assert error.code == "planner_timeout"
    assert "0.75 s" in error.message and "AI_TIMEOUT_SECONDS" in error.message
    assert len(fake_openai.calls("slow")) == 2  # one retry, then give up


@pytest.mark.anyio
async def test_llm_base_url_that_is_not_an_openai_server(fake_openai: FakeOpenAI) -> None:
    error = await plan_error(fake_openai, "html")
    assert error.code == "planner_unavailable"
    assert "text/html" in error.message and "AI_BASE_URL" in error.message
    error = await plan_error(fake_openai, "not-a-completion")
    assert error.code == "planner_invalid_output" and "not a chat completion" in error.message


@pytest.mark.anyio
async def test_llm_unreachable_server(fake_openai: FakeOpenAI) -> None:
    # A port nobody listens on: the connection is refused at once.
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await plan_error(fake_openai, "ok", base_url=f"http://127.0.0.1:{port}/v1")
    assert error.code == "planner_unavailable" and "AI_BASE_URL" in error.message


@pytest.mark.anyio
async def test_llm_replans_one_scene(fake_openai: FakeOpenAI) -> None:
    brief = make_brief(scene_count=3, total_duration_s=9.0)
    scenes = plan_offline(brief).storyboard.scenes
    scene, prompt_tokens, completion_tokens = await replan_scene_with_llm(
        brief, scenes, 1, "show it in warm sunset light", **llm_kwargs(fake_openai, "scene"))
    assert scene.shot_type == ShotType.CLOSE_UP and "sunset" in scene.description
    assert scene.duration_s == scenes[1].duration_s  # the timeline stays as it was
    assert (prompt_tokens, completion_tokens) == (321, 123)
    [request] = fake_openai.calls("scene")
    body = request["body"]
    assert body["response_format"]["json_schema"]["name"] == "PlannedScene"
    user = body["messages"][1]["content"]
    assert "show it in warm sunset light" in user and "index 1" in user
    assert scenes[0].description in user  # the storyboard around it is in view
    with pytest.raises(PlannerError) as info:
        await replan_scene_with_llm(brief, scenes, 0, None, **llm_kwargs(fake_openai, "refusal"))
    assert info.value.code == "planner_refused"


# ---- choosing the planner ---------------------------------------------------------------------

@pytest.mark.anyio
async def test_plan_storyboard_is_offline_without_a_key(fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.requests)
    settings = Settings(ai_api_key=None, ai_base_url=fake_openai.base_url("ok"))
    brief = make_brief(scene_count=3, total_duration_s=9.0)
    result = await plan_storyboard(brief, settings)
    assert result == plan_offline(brief)
    scenes = result.storyboard.scenes
    scene, prompt_tokens, completion_tokens = await replan_scene(brief, scenes, 2, "wider",
                                                                 settings)
    assert scene == replan_scene_offline(brief, scenes[2], 2, "wider")
    assert (prompt_tokens, completion_tokens) == (0, 0)
    assert len(fake_openai.requests) == before


@pytest.mark.anyio
async def test_plan_storyboard_uses_the_llm_with_a_key(fake_openai: FakeOpenAI) -> None:
    settings = Settings(ai_api_key="settings-key", ai_model="settings-model",
                        ai_base_url=fake_openai.base_url("ok"), ai_timeout_seconds=5)
    brief = make_brief(scene_count=3, total_duration_s=9.0)
    result = await plan_storyboard(brief, settings)
    assert result.model == "settings-model-2024-07-18" and result.prompt_tokens == 321
    request = fake_openai.calls("ok")[-1]
    assert request["headers"]["authorization"] == "Bearer settings-key"
    assert request["body"]["model"] == "settings-model"

    settings_like = SimpleNamespace(ai_api_key="settings-key", ai_model="m",
                                    ai_base_url=fake_openai.base_url("scene"),
                                    ai_timeout_seconds=5.0)
    scene, prompt_tokens, _ = await replan_scene(brief, result.storyboard.scenes, 0, "closer",
                                                 settings_like)
    assert isinstance(scene, PlannedScene) and prompt_tokens == 321
    assert fake_openai.calls("scene")[-1]["body"]["model"] == "m"


def test_nul_characters_from_a_model_never_reach_the_database():
    """A model can emit U+0000; PostgreSQL cannot store it, so the planner drops it."""
    from coordinator.planner.schema import PlannedScene

    scene = PlannedScene.model_validate({
        "description": "A can\u0000 on ice", "script": "Zero\u0000 sugar",
        "shot_type": "product", "transition": "cut", "duration_s": 2.0,
        "image_prompt": "\u0000lime soda can, studio light"})
    assert "\x00" not in scene.description + scene.script + scene.image_prompt
    assert scene.script == "Zero sugar"
