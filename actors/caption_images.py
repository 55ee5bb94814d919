"""Caption and call-to-action card images, drawn with Pillow in the caption fonts.

Text becomes pixels here and only here: the compositor overlays these PNGs and never hands
text to ffmpeg. Each function reports what it could not draw (characters no caption font has,
text cut to fit) instead of dropping it silently.

Caption safe area (:func:`caption_safe_area`), computed per output size:

* landscape and square (16:9, 1:1): title-safe 90 %: 5 % of the width off the left and right,
  5 % of the height off the top and bottom;
* portrait (9:16): 6 % off the left, 12 % off the right (the platforms' like/share buttons),
  10 % off the top, and 20 % off the bottom (the band where the platforms put the account
  name, description and sound).

A caption is centred in the safe area's width, sits on its bottom edge and takes at most a
third of the frame's height; it is wrapped to the safe width (at spaces, and between the
characters of Chinese and Japanese text). When it does not fit at its normal size it is set
smaller, down to 70 %; what still does not fit is cut with an ellipsis, and reported.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageColor, ImageDraw

from actors.composite_errors import CompositorInputError
from actors.fonts import FontLoadError, TextSetter

if TYPE_CHECKING:
    from actors.compositor import CallToActionCard

__all__ = ["CaptionImage", "SafeArea", "caption_safe_area", "draw_caption", "parse_color",
           "render_caption_image", "render_cta_image"]

MAX_TEXT_CHARS = 500
ELLIPSIS = "\u2026"
_SMALLEST_SCALE = 0.7


@dataclass(frozen=True)
class SafeArea:
    """Where captions may go: pixels ``left <= x < right``, ``top <= y < bottom``."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


def caption_safe_area(width: int, height: int) -> SafeArea:
    """The caption safe area of a ``width`` x ``height`` frame (numbers in the module doc)."""
    if height > width:
        return SafeArea(round(width * 0.06), round(height * 0.10),
                        width - round(width * 0.12), height - round(height * 0.20))
    return SafeArea(round(width * 0.05), round(height * 0.05),
                    width - round(width * 0.05), height - round(height * 0.05))


@dataclass(frozen=True)
class CaptionImage:
    """Where a drawn caption goes in the frame (None: nothing to draw) and what it lacks."""

    position: tuple[int, int] | None
    uncovered: list[str] = field(default_factory=list)  # characters no font has, left out
    truncated: bool = False  # cut with an ellipsis to fit its area

    def problems(self) -> list[str]:
        notes = [f"no caption font has {_describe(char)}; it is left out"
                 for char in self.uncovered]
        if self.truncated:
            notes.append("the text is too long for its area and was cut")
        return notes


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'character')}"


def parse_color(value: str, what: str) -> tuple[int, int, int]:
    """``#rrggbb`` (also ``#rgb``, CSS names, ``rgb()``/``hsl()``; alpha ignored). Colours
    only ever reach Pillow, never ffmpeg."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return ImageColor.getrgb(value.strip())[:3]
        except ValueError:
            pass
    raise CompositorInputError(f"{what} must be a colour like #1a2b3c")


def _setter(size: int, font_path: Path | None) -> TextSetter:
    try:
        return TextSetter(size, font_path)
    except FontLoadError as exc:
        raise CompositorInputError(str(exc)) from exc


def _breakable(char: str) -> bool:
    """Chinese, Japanese and Korean text may break between any two wide characters."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def _tokens(paragraph: str) -> list[tuple[str, str]]:
    """(separator before, token) pairs: words, and each wide character on its own."""
    tokens: list[tuple[str, str]] = []
    for word in paragraph.split(" "):
        separator = " "
        current = ""
        for char in word:
            if _breakable(char) or (current and _breakable(current[-1])
                                    and unicodedata.category(char)[0] != "M"):
                if current:
                    tokens.append((separator, current))
                    separator = ""
                current = char
            else:
                current += char
        if current:
            tokens.append((separator, current))
    return tokens


def _clusters(word: str) -> list[str]:
    """Characters with their combining marks, so a forced break never strands a mark."""
    clusters: list[str] = []
    for char in word:
        if clusters and unicodedata.category(char)[0] == "M":
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _wrap(text: str, setter: TextSetter, max_width: float, rtl: bool) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for separator, token in _tokens(paragraph):
            candidate = f"{current}{separator}{token}" if current else token
            if setter.length(candidate, rtl) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            for cluster in _clusters(token):  # a token wider than the line
                if current and setter.length(current + cluster, rtl) > max_width:
                    lines.append(current)
                    current = ""
                current += cluster
        if current:
            lines.append(current)
    return lines


def _fit_lines(lines: list[str], max_lines: int, setter: TextSetter, max_width: float,
               rtl: bool) -> tuple[list[str], bool]:
    """At most ``max_lines``; the last one kept ends in an ellipsis when text was cut."""
    if len(lines) <= max_lines:
        return lines, False
    kept = lines[:max_lines]
    last = kept[-1]
    while last and setter.length(last.rstrip() + ELLIPSIS, rtl) > max_width:
        last = last[:-1]
    kept[-1] = last.rstrip() + ELLIPSIS
    return kept, True


@dataclass
class _Layout:
    setter: TextSetter
    lines: list[str]
    rtl: bool
    ascent: int
    line_h: int
    truncated: bool


def _lay_out(text: str, size: int, font_path: Path | None, max_width: float,
             max_height: float, padding: int = 0, smallest_scale: float = 0.0) -> _Layout:
    """Wraps ``text`` at the largest size from ``size`` down to ``smallest_scale`` of it (and
    never under 10 px) at which every line fits in ``max_height``; cuts the text at the
    smallest size otherwise."""
    smallest = max(10, math.floor(size * smallest_scale))
    while True:
        setter = _setter(size, font_path)
        rtl = setter.rtl_paragraph(text)
        ascent, descent = setter.metrics(text)
        line_h = math.ceil((ascent + descent) * 1.1)
        lines = _wrap(text, setter, max_width, rtl) if text else []
        if len(lines) * line_h + 2 * padding <= max_height or size <= smallest:
            break
        size = max(smallest, int(size * 0.9))
    room = max(1, int((max_height - 2 * padding) // line_h))
    lines, truncated = _fit_lines(lines, room, setter, max_width, rtl)
    return _Layout(setter, lines, rtl, ascent, line_h, truncated)


def draw_caption(text: str, width: int, height: int, path: Path, *,
                 font_path: Path | None = None) -> CaptionImage:
    """Draws a caption (white text on a translucent dark box) for a ``width`` x ``height``
    frame into an RGBA PNG at ``path``, placed inside the caption safe area."""
    size = max(10, round(min(width, height) * 0.06))
    setter = _setter(size, font_path)
    text, uncovered = setter.prepare(str(text)[: MAX_TEXT_CHARS * 2])
    cut = len(text) > MAX_TEXT_CHARS
    text = text[:MAX_TEXT_CHARS]
    if not text:
        return CaptionImage(None, uncovered)
    area = caption_safe_area(width, height)
    stroke = size // 14  # an outline only where it does not fill the gaps between letters
    pad_x, pad_y = round(size * 0.5) + stroke, round(size * 0.25) + stroke
    max_height = min(area.height, height / 3)
    # Two pixels of slack let the box move to even coordinates and stay inside the area.
    layout = _lay_out(text, size, font_path, area.width - 2 * pad_x - 2, max_height - 2, pad_y,
                      _SMALLEST_SCALE)
    setter = layout.setter
    widths = [setter.length(line, layout.rtl) for line in layout.lines]
    box_w = min(area.width - 2, math.ceil(max(widths)) + 2 * pad_x)
    box_h = min(area.height - 2, len(layout.lines) * layout.line_h + 2 * pad_y)
    image = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=max(2, setter.size // 3),
                           fill=(0, 0, 0, 150))
    for row, (line, line_w) in enumerate(zip(layout.lines, widths)):
        baseline = pad_y + row * layout.line_h + layout.ascent
        setter.draw_line(draw, (box_w - line_w) / 2, baseline, line, layout.rtl,
                         fill=(255, 255, 255, 255), stroke_width=stroke,
                         stroke_fill=(0, 0, 0, 255))
    image.save(path, format="PNG")
    # Even offsets keep the overlay aligned with yuv420p's chroma.
    x = area.left + (area.width - box_w) // 2
    y = area.bottom - box_h
    x, y = x - x % 2, y - y % 2
    return CaptionImage((x, y), uncovered, layout.truncated or cut)


def render_caption_image(text: str, width: int, height: int, path: Path, *,
                         font_path: Path | None = None) -> tuple[int, int] | None:
    """:func:`draw_caption`, returning only where the caption's top-left corner goes (None if
    there is nothing to draw)."""
    return draw_caption(text, width, height, path, font_path=font_path).position


def render_cta_image(card: CallToActionCard, width: int, height: int, path: Path, *,
                     font_path: Path | None = None) -> CaptionImage:
    """Draws the full-frame call-to-action card (brand background, centred text) as a PNG."""
    background = parse_color(card.background_color, "background_color")
    foreground = parse_color(card.text_color, "text_color")
    image = Image.new("RGB", (width, height), background)
    size = max(12, round(min(width, height) * 0.15))
    text, uncovered = _setter(size, font_path).prepare(str(card.text)[: MAX_TEXT_CHARS * 2])
    cut = len(text) > MAX_TEXT_CHARS
    text = text[:MAX_TEXT_CHARS]
    layout = _lay_out(text, size, font_path, width * 0.8, height * 0.7)
    setter = layout.setter
    if layout.lines:
        draw = ImageDraw.Draw(image)
        top = (height - len(layout.lines) * layout.line_h) / 2
        for row, line in enumerate(layout.lines):
            # A stroke in the text colour makes the regular weight bold enough to survive
            # chroma subsampling at small sizes.
            setter.draw_line(draw, (width - setter.length(line, layout.rtl)) / 2,
                             top + row * layout.line_h + layout.ascent, line, layout.rtl,
                             fill=foreground, stroke_width=max(1, round(setter.size / 24)),
                             stroke_fill=foreground)
    image.save(path, format="PNG")
    return CaptionImage((0, 0), uncovered, layout.truncated or cut)
