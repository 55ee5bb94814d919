"""Captions in any script: every character drawn from a font that really has it, right-to-left
text shaped and ordered, kept inside each aspect ratio's safe area, and shown while the
scene's line is spoken. No Ray; one short real composite for the timing."""

from __future__ import annotations

import functools
import math
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw

from actors.caption_images import caption_safe_area, draw_caption
from actors.compositor import (
    CallToActionCard,
    SceneClip,
    composite_video,
    encode_frames_to_mp4,
    extract_frame,
    plan_timeline,
)
from actors.fonts import TextSetter
from tests.jobs_helpers import caption_match

MIXED = "Café Ñandú süß — Привет мир — Γειά — مرحبا بالعالم — 日本語のテキスト"
CORPUS = {
    "latin": "Café Ñandú süß ÀÉÎÕÜ çøåœ",
    "greek": "Γειά σου κόσμε",
    "cyrillic": "Привет мир",
    "arabic": "مرحبا بالعالم",
    "hebrew": "שלום עולם",
    "japanese": "日本語のテキスト、ひらがな",
    "chinese-korean": "中文字幕 한국어 자막",
    "mixed": MIXED,
}
# The font each script must come from (its first character decides).
EXPECTED_FONT = {"arabic": "Noto Sans Arabic", "hebrew": "Heebo", "japanese": "Noto Sans CJK JP",
                 "greek": "Noto Sans", "cyrillic": "Noto Sans", "latin": "Noto Sans"}


@functools.cache
def _cmap(path: Path) -> dict[int, str]:
    with TTFont(str(path), lazy=True, fontNumber=0) as font:
        return dict(font.getBestCmap())


@pytest.fixture(scope="module")
def setter() -> TextSetter:
    return TextSetter(48)


@pytest.mark.parametrize("script", CORPUS)
def test_every_character_has_a_real_glyph_in_the_font_drawing_it(setter, script):
    text = CORPUS[script]
    drawn, uncovered = setter.prepare(text)
    assert uncovered == [] and drawn == unicodedata.normalize("NFC", text)
    runs = setter.runs(drawn, setter.rtl_paragraph(drawn))
    # Every character is in exactly one run: nothing dropped, nothing replaced.
    assert sorted("".join(run.text for run in runs)) == sorted(drawn)
    for run in runs:
        cmap = _cmap(run.font.path)
        for char in run.text:
            assert cmap.get(ord(char), ".notdef") != ".notdef", (
                f"{char!r} (U+{ord(char):04X}) has no glyph in {run.font.name}")
    if script in EXPECTED_FONT:
        assert runs[0].font.name == EXPECTED_FONT[script]


def _draw(setter: TextSetter, text: str, size=(600, 90)) -> np.ndarray:
    image = Image.new("L", size, 0)
    setter.draw_line(ImageDraw.Draw(image), 0, 64, text, setter.rtl_paragraph(text), fill=255)
    return np.asarray(image)


def test_arabic_letters_are_joined(setter):
    word = "مرحبا"
    isolated = "\u200c".join(word)  # ZWNJ between letters forbids joining: isolated forms
    joined_image, isolated_image = _draw(setter, word), _draw(setter, isolated)
    # Joined (initial/medial/final) forms connect on the baseline with no gaps between them,
    # so the word is narrower than its letters set apart, and it looks different.
    assert setter.length(word) < setter.length(isolated) * 0.9
    assert np.abs(joined_image.astype(int) - isolated_image).sum() > 0


@pytest.mark.parametrize("word,other_first", [("שלום", "ב"), ("مرحبا", "س")],
                         ids=["hebrew", "arabic"])
def test_first_letter_of_a_right_to_left_word_is_drawn_rightmost(setter, word, other_first):
    # Changing only the first (logical) letter changes only the right end of the drawing.
    # (Both first letters join the same way, so the other letters keep their shapes.)
    whole = _draw(setter, word).astype(int)
    changed = _draw(setter, other_first + word[1:]).astype(int)
    differing = np.nonzero(np.abs(whole - changed).any(axis=0))[0]
    ink = np.nonzero(whole.any(axis=0))[0]
    assert differing.size and ink.size
    assert differing.min() > ink.min() + (ink.max() - ink.min()) * 0.5
    # Without its first letter, a Hebrew word is exactly the left part of the drawing.
    if word == "שלום":
        rest_width = int(setter.length(word[1:]))
        assert np.array_equal(whole[:, :rest_width - 2], _draw(setter, word[1:])[:, :rest_width - 2])


def test_mixed_line_runs_follow_the_bidi_algorithm(setter):
    runs = setter.runs(MIXED, setter.rtl_paragraph(MIXED))
    fonts = [run.font.name for run in runs]
    assert fonts[0] == "Noto Sans" and fonts[-1] == "Noto Sans CJK JP"
    # The one right-to-left run is the Arabic phrase, between the Greek and the Japanese.
    rtl = [index for index, run in enumerate(runs) if run.rtl]
    assert len(rtl) == 1 and runs[rtl[0]].text == "مرحبا بالعالم"
    assert runs[rtl[0]].font.name == "Noto Sans Arabic"
    assert "Γειά" in runs[rtl[0] - 1].text and "日本語" in runs[rtl[0] + 2].text
    # A paragraph that starts in Hebrew is right to left: the English word after it is on the
    # left.
    hebrew_first = setter.runs("שלום world", setter.rtl_paragraph("שלום world"))
    assert [run.text.strip() for run in hebrew_first] == ["world", "שלום"]
    assert [run.rtl for run in hebrew_first] == [False, True]


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280), (720, 720)],
                         ids=["16x9", "9x16", "1x1"])
@pytest.mark.parametrize("text", ["Zero sugar", MIXED * 3], ids=["short", "long"])
def test_caption_stays_inside_the_safe_area(tmp_path, size, text):
    width, height = size
    caption = draw_caption(text, width, height, tmp_path / "caption.png")
    area = caption_safe_area(width, height)
    x, y = caption.position
    with Image.open(tmp_path / "caption.png") as image:
        box_w, box_h = image.size
    assert area.left <= x and x + box_w <= area.right
    assert area.top <= y and y + box_h <= area.bottom
    assert x % 2 == 0 and y % 2 == 0
    if height > width:  # clear of the platforms' bottom band and side buttons
        assert y + box_h <= height * 0.8 and x + box_w <= width * 0.88
    else:  # title-safe 90 %
        assert area.left >= width * 0.05 - 1 and area.bottom <= height * 0.95 + 1
    assert caption.uncovered == [] and caption.truncated == (len(text) > 100)


def test_caption_frames_start_with_the_scene_and_end_with_its_line():
    plan = plan_timeline([2.0, 3.0], ["crossfade", "cut"], 1.0, 24)
    lead = plan.overlaps[0] // 2
    assert plan.caption_frames(1, None) == (0, plan.rendered[1])  # no voice: the whole scene
    start, end = plan.caption_frames(1, 1.0)
    assert start == lead and end - start == math.ceil((1.0 + 0.3) * 24)
    assert plan.caption_frames(1, 9.0) == (lead, lead + 3 * 24)  # never past the scene


@pytest.fixture(scope="module")
def red_clip(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(np.clip(np.array((230, 30, 30)) + rng.integers(-20, 20, (64, 64, 3)),
                                      0, 255).astype(np.uint8)) for _ in range(8)]
    path = tmp_path_factory.mktemp("clip") / "red.mp4"
    encode_frames_to_mp4(frames, 8, path, timeout_s=30)
    return path


@pytest.mark.parametrize("voice_s", [1.0, None], ids=["voiced", "no-voice"])
def test_caption_shows_while_the_line_is_spoken(tmp_path, red_clip, voice_s):
    text = "Grab a can"
    scene = SceneClip(red_clip, 3.0, "cut", text, voice_duration_s=voice_s)
    out = tmp_path / "ad.mp4"
    composite_video([scene], CallToActionCard("Shop", "#000000", "#ffffff", 0.5), out,
                    tmp_path / "thumb.jpg", width=256, height=144, fps=24, timeout_s=60,
                    workdir=tmp_path / "work")

    def shown(at_s: float) -> float:
        frame = np.asarray(extract_frame(out, at_s).convert("L"))
        return caption_match(frame, text, tmp_path)

    assert shown(0.1) >= 0.9 and shown(0.9) >= 0.9  # inside the line
    if voice_s is None:
        assert shown(2.5) >= 0.9  # the whole scene
    else:
        assert shown(1.6) < 0.3 and shown(2.5) < 0.3  # gone once the line (+0.3 s) ended
