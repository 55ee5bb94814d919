"""Caption fonts: which font draws each character, in which order, and how runs are drawn.

* **The fonts are packages** (declared in pyproject.toml, so ``scripts/setup`` installs them):
  Noto Sans (Latin with diacritics, Greek, Cyrillic), Noto Sans Arabic, Heebo (Hebrew) and
  Noto Sans CJK JP (Japanese kana and kanji; its glyph set also covers Chinese and Korean
  Hangul), all under the SIL Open Font License. They are found through the packages' own API
  (``fontpkg`` and ``noto_cjk_sans_jp_regular.FONT_PATH``), never by a site-packages path.
  An operator's font (``RENDERFARM_CAPTION_FONT``) goes first in the chain when set.
* **Fallback by cmap.** Each character is drawn with the first font of the chain whose cmap
  (read with fontTools) maps it; a space, punctuation mark, digit or combining mark stays in
  the font of the character before it when that font has it, so a line breaks into as few
  runs as possible and a run of Arabic keeps its spaces.
* **Bidi, then shaping.** A line's embedding levels come from the Unicode bidi algorithm
  (python-bidi's implementation); runs of one font and one level are put in visual order by
  rule L2 of UAX #9, and Pillow's raqm layout shapes each run (Arabic joining, right-to-left
  glyph order, mirrored brackets) in its own direction.
* **Nothing is lost silently.** A visible character that no font of the chain has is left out
  of the drawing (an empty box in an ad helps nobody) and *reported*: :meth:`TextSetter.prepare`
  returns it, the compositor logs it and lists it in the composite's warnings. Control and
  format characters are invisible: they are removed (bidi overrides and isolates too, so
  client text cannot reorder other text), except ZWJ/ZWNJ, which steer Arabic joining.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import fontpkg
import fontpkg_heebo
import fontpkg_noto_sans
import fontpkg_noto_sans_arabic
import noto_cjk_sans_jp_regular
from bidi import algorithm as bidi_algorithm
from fontTools.ttLib import TTFont, TTLibError
from PIL import ImageDraw, ImageFont

__all__ = ["ChainFont", "Run", "TextSetter", "caption_fonts", "FontLoadError"]

# Format characters kept in the text: zero-width non-joiner and joiner change Arabic shaping.
_KEPT_FORMAT = {"\u200c", "\u200d"}
_NEUTRAL_CATEGORIES = ("Z", "P", "S", "N", "M")
_REMOVED_BY_X9 = {"BN", "LRE", "RLE", "LRO", "RLO", "PDF"}


class FontLoadError(ValueError):
    """A caption font cannot be read."""


@dataclass(frozen=True)
class ChainFont:
    """One font of the fallback chain and the characters its cmap maps."""

    name: str
    path: Path
    codepoints: frozenset[int]

    def covers(self, char: str) -> bool:
        return ord(char) in self.codepoints


@dataclass(frozen=True)
class Run:
    """Characters drawn with one font in one direction (``text`` in logical order)."""

    text: str
    font: ChainFont
    rtl: bool


def _packaged_fonts() -> list[tuple[str, Path]]:
    return [
        ("Noto Sans", fontpkg.path(fontpkg_noto_sans.FAMILY)),
        ("Noto Sans Arabic", fontpkg.path(fontpkg_noto_sans_arabic.FAMILY)),
        ("Heebo", fontpkg.path(fontpkg_heebo.FAMILY)),
        ("Noto Sans CJK JP", Path(str(noto_cjk_sans_jp_regular.FONT_PATH))),
    ]


@functools.lru_cache(maxsize=8)
def _load(name: str, path: Path) -> ChainFont:
    try:
        with TTFont(os.fspath(path), lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
    except (OSError, TTLibError) as exc:
        raise FontLoadError(f"cannot load font {path}: {exc}") from exc
    return ChainFont(name, Path(path), frozenset(cmap))


def caption_fonts(extra_font: Path | None = None) -> tuple[ChainFont, ...]:
    """The fallback chain: ``extra_font`` (an operator's brand font) first, then the bundled
    fonts."""
    chain = [_load(name, path) for name, path in _packaged_fonts()]
    if extra_font is not None:
        chain.insert(0, _load(Path(extra_font).name, Path(extra_font)))
    return tuple(chain)


def _is_neutral(char: str) -> bool:
    return unicodedata.category(char)[0] in _NEUTRAL_CATEGORIES or char in _KEPT_FORMAT


def _embedding_levels(text: str, rtl_paragraph: bool) -> list[int]:
    """UAX #9 resolved levels (rules P to I) of one line, through python-bidi's Python
    implementation of the algorithm (its top-level API returns only the reordered string).
    Rule X9 takes the characters of class BN (ZWJ, ZWNJ) and the explicit embeddings out of
    the analysis; each gets the level of the character before it, as UAX #9 suggests."""
    base = 1 if rtl_paragraph else 0
    analysed = [index for index, char in enumerate(text)
                if unicodedata.bidirectional(char) not in _REMOVED_BY_X9]
    storage = bidi_algorithm.get_empty_storage()
    storage["base_level"] = base
    storage["base_dir"] = "R" if rtl_paragraph else "L"
    bidi_algorithm.get_embedding_levels("".join(text[index] for index in analysed), storage)
    bidi_algorithm.explicit_embed_and_overrides(storage)
    bidi_algorithm.resolve_weak_types(storage)
    bidi_algorithm.resolve_neutral_types(storage, False)
    bidi_algorithm.resolve_implicit_levels(storage, False)
    resolved = dict(zip(analysed, (char["level"] for char in storage["chars"])))
    levels: list[int] = []
    for index in range(len(text)):
        levels.append(resolved.get(index, levels[-1] if levels else base))
    return levels


def _visual_order(levels: Sequence[int]) -> list[int]:
    """Rule L2: from the highest level down to the lowest odd one, reverse every sequence of
    items at that level or higher. Returns the item indexes left to right."""
    order = list(range(len(levels)))
    if not levels:
        return order
    lowest_odd = min(level for level in levels) | 1
    for level in range(max(levels), lowest_odd - 1, -1):
        index = 0
        while index < len(order):
            if levels[order[index]] >= level:
                end = index
                while end < len(order) and levels[order[end]] >= level:
                    end += 1
                order[index:end] = reversed(order[index:end])
                index = end
            else:
                index += 1
    return order


class TextSetter:
    """Sets client text in the caption fonts at one pixel size."""

    def __init__(self, size: int, extra_font: Path | None = None):
        self.size = size
        self.chain = caption_fonts(extra_font)
        self._pillow: dict[Path, ImageFont.FreeTypeFont] = {}

    def pillow_font(self, font: ChainFont) -> ImageFont.FreeTypeFont:
        loaded = self._pillow.get(font.path)
        if loaded is None:
            try:
                loaded = ImageFont.truetype(os.fspath(font.path), self.size,
                                            layout_engine=ImageFont.Layout.RAQM)
            except OSError as exc:
                raise FontLoadError(f"cannot load font {font.path}: {exc}") from exc
            self._pillow[font.path] = loaded
        return loaded

    def font_for(self, char: str, previous: ChainFont | None = None) -> ChainFont | None:
        """The font that draws ``char``: the previous character's for neutrals it has, else
        the first of the chain that has it; None if no font has it."""
        if previous is not None and _is_neutral(char) and previous.covers(char):
            return previous
        return next((font for font in self.chain if font.covers(char)), None)

    def prepare(self, text: str) -> tuple[str, list[str]]:
        """Client text as it will be drawn (NFC, one space for any run of whitespace, line
        breaks kept, invisible controls removed) and the visible characters no font has,
        which are left out (in order of first appearance)."""
        text = unicodedata.normalize("NFC", str(text))
        kept: list[str] = []
        uncovered: list[str] = []
        for char in text:
            if char in "\n\r\u0085\u2028\u2029\x0b\x0c":
                kept.append("\n")
            elif char.isspace():
                kept.append(" ")
            elif unicodedata.category(char)[0] == "C" and char not in _KEPT_FORMAT:
                continue  # controls, bidi overrides/isolates, surrogates, unassigned
            elif char in _KEPT_FORMAT or self.font_for(char) is not None:
                kept.append(char)
            elif char not in uncovered:
                uncovered.append(char)
        lines = (" ".join(line.split()) for line in "".join(kept).split("\n"))
        visible = (line for line in lines if line.strip("".join(_KEPT_FORMAT) + " "))
        return "\n".join(visible), uncovered

    def rtl_paragraph(self, text: str) -> bool:
        """Whether the paragraph's base direction is right-to-left (its first strong
        character is Arabic or Hebrew, rule P2)."""
        return bidi_algorithm.get_base_level(text) == 1

    def runs(self, line: str, rtl_paragraph: bool = False) -> list[Run]:
        """``line`` cut into runs of one font and one direction, in visual order (left to
        right)."""
        if not line:
            return []
        levels = _embedding_levels(line, rtl_paragraph)
        pieces: list[tuple[list[str], ChainFont, int]] = []
        previous: ChainFont | None = None
        for char, level in zip(line, levels):
            font = self.font_for(char, previous) or previous or self.chain[0]
            if pieces and pieces[-1][1] is font and pieces[-1][2] == level:
                pieces[-1][0].append(char)
            else:
                pieces.append(([char], font, level))
            previous = font
        order = _visual_order([level for _, _, level in pieces])
        return [Run("".join(pieces[i][0]), pieces[i][1], pieces[i][2] % 2 == 1) for i in order]

    def run_length(self, run: Run) -> float:
        return self.pillow_font(run.font).getlength(run.text, direction="rtl" if run.rtl
                                                    else "ltr")

    def length(self, line: str, rtl_paragraph: bool = False) -> float:
        return sum(self.run_length(run) for run in self.runs(line, rtl_paragraph))

    def metrics(self, text: str) -> tuple[int, int]:
        """Ascent and descent (pixels) that fit every font ``text`` uses."""
        used = {self.font_for(char) for char in text if not char.isspace()} - {None}
        ascent = descent = 0
        for font in used or {self.chain[0]}:
            font_ascent, font_descent = self.pillow_font(font).getmetrics()
            ascent, descent = max(ascent, font_ascent), max(descent, font_descent)
        return ascent, descent

    def draw_line(self, draw: ImageDraw.ImageDraw, x: float, baseline: float, line: str,
                  rtl_paragraph: bool = False, **style) -> None:
        """Draws ``line`` from ``x`` rightwards, every run on the same baseline."""
        for run in self.runs(line, rtl_paragraph):
            direction = "rtl" if run.rtl else "ltr"
            draw.text((x, baseline), run.text, font=self.pillow_font(run.font), anchor="ls",
                      direction=direction, **style)
            x += self.run_length(run)
