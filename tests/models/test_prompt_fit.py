"""Prompts fit the text encoder that reads them: the style and the brand palette of a long
brief reach the encoder, nothing is cut off by diffusers, and what had to go is logged."""

from __future__ import annotations

import logging

import diffusers
import pytest
import torch

from actors.steps import style_unless_present
from coordinator.planner import PlanningBrief, plan_offline
from models.pipelines import _prompt_fitter, load_image_model
from models.presets import apply_prompt_template, get_preset
from models.prompts import fit_prompt, split_phrases, token_counter

CLIP_TRUNCATION = "was truncated because CLIP can only handle sequences up to 77 tokens"
STYLE = "gritty cinematic"


@pytest.fixture(scope="module")
def preset():
    return get_preset("tiny")


@pytest.fixture(scope="module")
def image_model(preset, tmp_path_factory):
    return load_image_model(preset, tmp_path_factory.mktemp("models"))


@pytest.fixture
def diffusers_logs(caplog):
    """diffusers' own log lines (its loggers do not propagate to the root by default)."""
    diffusers.utils.logging.enable_propagation()
    caplog.set_level(logging.WARNING)
    yield caplog
    diffusers.utils.logging.disable_propagation()


def long_brief_prompts(preset) -> list[str]:
    """The image prompts a long brief gets, as the job actor assembles them."""
    brief = PlanningBrief(
        product="Acme UltraBoost Pro 3000 Limited Edition All-Terrain Trail Running Shoes",
        target_audience="weekend trail runners who love muddy mountain routes",
        key_message="Grip that never quits, on any ground", call_to_action="Shop now at acme.com",
        style=STYLE, tone="bold and energetic",
        visual_elements=["muddy forest trail at dawn", "splashing puddles", "mountain ridge"],
        brand_colors=["#1a2b3c", "#d4af37"], aspect_ratio="16:9", scene_count=5,
        total_duration_s=14.0)
    scenes = plan_offline(brief).storyboard.scenes
    return [apply_prompt_template(preset, scene.image_prompt,
                                  style_unless_present(brief.style, scene.image_prompt))
            for scene in scenes]


def encoder_inputs(model) -> tuple[list[torch.Tensor], object]:
    """Records the token ids the text encoder is called with."""
    seen: list[torch.Tensor] = []

    def record(_module, args, kwargs):
        seen.append((args[0] if args else kwargs["input_ids"]).clone())

    return seen, model.pipeline.text_encoder.register_forward_pre_hook(record, with_kwargs=True)


def test_a_long_briefs_style_and_palette_reach_the_encoder(preset, image_model, diffusers_logs):
    prompts = long_brief_prompts(preset)
    tokenizer = image_model.pipeline.tokenizer
    # The brief really is too long: as assembled, every prompt is over CLIP's 77 tokens.
    assert all(len(tokenizer(p).input_ids) > 77 for p in prompts)

    seen, hook = encoder_inputs(image_model)
    try:
        images = image_model.render(prompts, seeds=list(range(len(prompts))), width=64, height=64)
    finally:
        hook.remove()
    assert len(images) == len(prompts)

    # What the encoder read (the positive prompts: the first call of each render).
    read = [tokenizer.decode(ids, skip_special_tokens=True) for ids in seen[0]]
    assert len(read) == len(prompts)
    for text in read:
        assert f"{STYLE} style" in text, text
        assert "navy and gold palette" in text, text
    assert not any(CLIP_TRUNCATION in record.getMessage() for record in diffusers_logs.records)
    # Not silent: a warning says what was left out for each prompt.
    fitted = [r.getMessage() for r in diffusers_logs.records if r.name == "models.prompts"]
    assert len(fitted) == len(prompts)
    assert all("77 tokens" in message and "dropped" in message for message in fitted)


def test_without_fitting_diffusers_cuts_the_palette_off(preset, image_model, diffusers_logs):
    """The control for the test above: the same prompt sent as is loses its end to CLIP."""
    prompt = long_brief_prompts(preset)[0]
    with torch.inference_mode():
        image_model.pipeline(prompt=prompt, width=64, height=64, num_inference_steps=1,
                             generator=torch.Generator().manual_seed(0))
    assert any(CLIP_TRUNCATION in record.getMessage() for record in diffusers_logs.records)


def test_a_prompt_that_fits_is_sent_exactly_as_given(image_model, diffusers_logs):
    prompt = "a red car,  on a coastal road"  # odd spacing is kept: it fits
    fitter = image_model._prompts
    assert fitter.fit(prompt) == prompt
    assert not [r for r in diffusers_logs.records if r.name == "models.prompts"]


def test_phrases_are_dropped_whole_from_the_end(image_model):
    count = token_counter([image_model.pipeline.tokenizer], 77)
    prompt = ("Close-up of a bottle, neon style, teal palette, rain on glass, moody low light, "
              "square 1:1 centred composition, calm and quiet mood, advertising photo")
    fitted = fit_prompt(prompt, count, 77)
    assert fitted.tokens <= 77 and count(fitted.text) == fitted.tokens
    kept = split_phrases(fitted.text)
    assert kept == split_phrases(prompt)[:len(kept)]  # a prefix of whole phrases
    assert list(fitted.dropped) == split_phrases(prompt)[len(kept):]
    assert fitted.cut == "" and fitted.changed


def test_a_long_subject_is_cut_but_keeps_a_third_and_leaves_room_for_the_style(image_model):
    count = token_counter([image_model.pipeline.tokenizer], 77)
    subject = "Wide shot of " + " ".join(["runners"] * 30)
    fitted = fit_prompt(f"{subject}, neon style, teal palette, soft light", count, 77)
    phrases = split_phrases(fitted.text)
    assert phrases[1:] == ["neon style", "teal palette", "soft light"]
    assert count(phrases[0]) >= 77 // 3 and fitted.cut.startswith("runners")
    # One word longer than the whole budget is cut by characters rather than sent as is.
    giant = fit_prompt("x" * 200, count, 77)
    assert giant.tokens <= 77 and giant.text == "x" * len(giant.text)


def test_the_budget_is_the_shorter_of_tokenizer_and_max_sequence_length(image_model):
    # T5-encoded pipelines (LTX) read max_sequence_length tokens, whatever the tokenizer allows.
    fitter = _prompt_fitter(image_model.pipeline, sequence_length=40)
    assert fitter.budget == 40
    text = fitter.fit("a red car on a coastal road at sunset, neon style, teal palette, "
                      "soft light, square composition")
    assert len(image_model.pipeline.tokenizer(text).input_ids) <= 40
    assert _prompt_fitter(image_model.pipeline).budget == 77


def test_brand_restrictions_lead_the_negative_prompt(image_model):
    """A negative prompt too long for the encoder loses phrases from its end: the brand's
    restrictions (never show a competitor's logo, ...) come first so they always survive."""
    from actors.steps import negative_prompt

    preset = get_preset("sd15-ltx")  # a preset with a negative prompt of its own
    brief = PlanningBrief(product="Lime Fizz", target_audience="runners", key_message="Zero sugar",
                          call_to_action="Grab a can", style="bright", aspect_ratio="16:9",
                          scene_count=2, total_duration_s=6.0,
                          brand_restrictions=["no competitor logos", "no alcohol"])
    text = negative_prompt(preset, brief)
    assert text.index("alcohol") < text.index(preset.image.negative_prompt)
    # A preset with a longer negative prompt of its own: the whole no longer fits.
    longer = text + ", " + ", ".join(f"artefact kind {i}" for i in range(20))
    fitted = fit_prompt(longer, token_counter([image_model.pipeline.tokenizer], 77), 77)
    assert fitted.text != longer
    assert "competitor logos" in fitted.text and "alcohol" in fitted.text
