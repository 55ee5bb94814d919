"""The compositor: rendered scene clips + captions + a call-to-action card -> one H.264 ad.

Design notes
------------
* **Text never reaches ffmpeg.** Captions and the call-to-action card are drawn with Pillow
  into PNG files whose names we choose (``caption_000.png``, ``cta.png``) in a private
  directory under ``workdir``; the filter graph only ``overlay``s those images. The filter
  graph is built from numbers and fixed filter names, and :func:`_checked_graph` refuses any
  graph with a character outside that vocabulary (quotes, backslashes, whitespace, ``%``,
  ``{``, ``$``...). No client string can become an ffmpeg option, a filter fragment or a
  path; ffmpeg's ``drawtext`` (and its escaping rules) is not used at all.
* **One ffmpeg process per composite**, started from an argument list (no shell), with a
  hard time limit. The video and the thumbnail are written to temporary names next to their
  final paths and renamed into place only when ffmpeg succeeded, so a failure, timeout or
  cancellation never leaves a half-written file under the final name.
* **Timing is planned in frames** (:func:`plan_timeline`). Scene boundaries are
  ``round(cumulative seconds * fps)``, so rounding never accumulates. A crossfade is an
  ``xfade`` centred on the planned boundary: the outgoing scene is rendered longer by half
  the overlap, the incoming one starts half the overlap early, and ``xfade`` takes the
  overlap back when joining them. "fade" (through black) fades the outgoing scene out and
  the incoming one in, back to back. Either way the ad lasts exactly
  ``sum(scene durations) + cta duration`` (to the frame). The last scene's transition leads
  into the call-to-action card.
* **Short clips are looped** (``-stream_loop -1`` on the input, cut to the scene's frame count
  with ``trim``): a 1 s generated clip plays 4x in a 4 s scene. Looping keeps the motion
  alive; holding the last frame would freeze most of the scene. ``-xerror`` makes any
  demux/decode error fatal, so a damaged clip fails with ffmpeg's reason instead of being
  looped forever or shipped with broken frames.
* Colour: everything is converted to and tagged as BT.709 limited range, so brand colours on
  the card come out right in players that pick the matrix from the tags (and in HD players
  that assume BT.709 when there are none).

The filter graph is a plain string rather than built with ``ffmpeg-python``: it is a short,
regular chain per scene, a wrapper would add a layer of escaping to trust without removing
any, and with a plain string :func:`_checked_graph` checks exactly what ffmpeg will parse.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageColor, ImageDraw, ImageFont

from actors.media_probe import (
    MediaError,
    MediaInfo,
    extract_frame,
    ffmpeg_executable,
    ffmpeg_path_arg,
    probe_media,
    run_ffmpeg,
)

__all__ = [
    "CROSSFADE_S",
    "CallToActionCard",
    "CompositeResult",
    "CompositorError",
    "CompositorInputError",
    "MediaInfo",
    "SceneClip",
    "TRANSITIONS",
    "composite_video",
    "encode_frames_to_mp4",
    "extract_frame",
    "ffmpeg_executable",
    "plan_timeline",
    "probe_media",
    "render_caption_image",
    "render_cta_image",
]

TRANSITIONS = ("cut", "crossfade", "fade")
CROSSFADE_S = 0.5
_MAX_TEXT_CHARS = 500
_X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
_BT709_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
               "-color_range", "tv"]
_TO_BT709 = "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"
# Frame colour tags; recent ffmpeg takes the stream's tags from the frames, not the options.
_TAG_BT709 = "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709"


class CompositorError(MediaError):
    """Compositing failed: ffmpeg's reason, a time limit, or unusable input."""


class CompositorInputError(CompositorError, ValueError):
    """The request itself is invalid (bad duration, colour, transition, size...)."""


@dataclass(frozen=True)
class SceneClip:
    clip_path: Path
    duration_s: float
    transition: str = "cut"  # into the next scene (the last scene: into the CTA card)
    caption: str = ""


@dataclass(frozen=True)
class CallToActionCard:
    text: str
    background_color: str = "#000000"
    text_color: str = "#ffffff"
    duration_s: float = 2.0


@dataclass(frozen=True)
class CompositeResult:
    duration_s: float
    width: int
    height: int
    size_bytes: int


def _threads() -> str:
    return str(max(1, min(os.cpu_count() or 1, 4)))


# ---- encoding generated frames ----------------------------------------------------------------


def encode_frames_to_mp4(frames: Sequence[Image.Image], fps: int, path: Path,
                         timeout_s: float = 60.0) -> None:
    """Encodes frames (all the same size) to an H.264/yuv420p MP4 at ``fps``.

    Odd widths/heights are made even by repeating the last column/row. The file appears at
    ``path`` only when the encode succeeded.
    """
    if not frames:
        raise CompositorInputError("no frames to encode")
    _check_fps(fps)
    width, height = frames[0].size
    if width < 1 or height < 1:
        raise CompositorInputError(f"frame size {width}x{height} is empty")
    for index, frame in enumerate(frames):
        if frame.size != (width, height):
            raise CompositorInputError(
                f"frame {index} is {frame.size[0]}x{frame.size[1]}, frame 0 is {width}x{height}")
    even_w, even_h = width + width % 2, height + height % 2

    def to_bytes(frame: Image.Image) -> bytes:
        rgb = frame if frame.mode == "RGB" else frame.convert("RGB")
        if (even_w, even_h) != (width, height):
            canvas = Image.new("RGB", (even_w, even_h))
            canvas.paste(rgb, (0, 0))
            if even_w != width:
                canvas.paste(rgb.crop((width - 1, 0, width, height)), (width, 0))
            if even_h != height:
                canvas.paste(canvas.crop((0, height - 1, even_w, height)), (0, height))
            rgb = canvas
        return rgb.tobytes()

    def feed(stdin: BinaryIO) -> None:
        for frame in frames:
            stdin.write(to_bytes(frame))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_name(path)
    try:
        run_ffmpeg(
            ["-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{even_w}x{even_h}",
             "-framerate", str(fps), "-i", "pipe:0",
             "-vf", f"{_TO_BT709},{_TAG_BT709}", *_X264, "-crf", "18", "-g", str(fps * 2),
             "-r", str(fps), *_BT709_TAGS, "-threads", _threads(), "-movflags", "+faststart",
             "-an",
             "-f", "mp4", "-y", ffmpeg_path_arg(partial)],
            timeout_s=timeout_s, feed_stdin=feed, error_cls=CompositorError,
        )
        if not partial.is_file() or partial.stat().st_size == 0:
            raise CompositorError("ffmpeg reported success but wrote no video")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# ---- text -> images ---------------------------------------------------------------------------

# Typographic characters a small font often lacks, with plain stand-ins.
_STAND_INS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"', "\u2039": "'", "\u203a": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2026": "...", "\u2022": "*", "\u00b7": "*", "\u2122": "TM", "\u00ae": "(R)",
    "\u00a9": "(C)", "\u20ac": "EUR", "\u00a3": "GBP", "\u00a5": "JPY",
}
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\u0085\u2028\u2029\x0b\x0c]")


class _TextFont:
    """A Pillow font plus a cache of which characters it can actually draw."""

    def __init__(self, size: int, font_path: Path | None):
        if font_path is not None:
            try:
                self.font = ImageFont.truetype(os.fspath(font_path), size)
            except OSError as exc:
                raise CompositorInputError(f"cannot load font {font_path}: {exc}") from exc
        else:
            # Pillow's built-in font; scalable when Pillow has FreeType (checked in tests).
            self.font = ImageFont.load_default(size=size)
        self.size = size
        self._notdef = self._signature("\uffff")
        self._covered: dict[str, bool] = {}

    def _signature(self, char: str):
        mask = self.font.getmask(char)
        return mask.size, bytes(mask), self.font.getlength(char)

    def covers(self, char: str) -> bool:
        known = self._covered.get(char)
        if known is None:
            known = char.isspace() or self._signature(char) != self._notdef
            self._covered[char] = known
        return known

    def _wide_gap(self) -> float | None:
        """The built-in font's space is so narrow at caption sizes that words run together;
        then lines are laid out word by word with a wider gap. Fonts with a normal space
        keep Pillow's own line layout (which also handles right-to-left scripts)."""
        space = self.font.getlength(" ")
        return self.size * 0.3 if space < self.size * 0.3 else None

    def length(self, text: str) -> float:
        gap = self._wide_gap()
        if gap is None:
            return self.font.getlength(text) if text else 0.0
        words = text.split(" ")
        return sum(self.font.getlength(word) for word in words if word) + gap * (len(words) - 1)

    def draw_line(self, draw: ImageDraw.ImageDraw, x: float, y: float, line: str,
                  **style) -> None:
        gap = self._wide_gap()
        if gap is None:
            draw.text((x, y), line, font=self.font, **style)
            return
        for word in line.split(" "):
            if word:
                draw.text((x, y), word, font=self.font, **style)
                x += self.font.getlength(word)
            x += gap

    def line_height(self) -> int:
        ascent, descent = self.font.getmetrics()
        return int(math.ceil((ascent + descent) * 1.1))


def _drawable(text: str, font: _TextFont) -> str:
    """Client text reduced to what ``font`` can draw: controls dropped, line breaks kept,
    missing characters replaced by a plain stand-in or their base letters (é -> e), else
    dropped (so no empty 'tofu' boxes in an ad)."""
    text = unicodedata.normalize("NFC", str(text))
    text = _LINE_BREAKS.sub("\n", text)[: _MAX_TEXT_CHARS * 2]
    out: list[str] = []
    for char in text:
        if char == "\n":
            out.append(char)
        elif char.isspace():
            out.append(" ")
        elif unicodedata.category(char).startswith("C"):
            continue  # controls, format chars (bidi overrides, joiners), surrogates, unassigned
        elif font.covers(char):
            out.append(char)
        elif char in _STAND_INS and all(font.covers(c) for c in _STAND_INS[char]):
            out.append(_STAND_INS[char])
        else:
            base = [c for c in unicodedata.normalize("NFKD", char)
                    if not unicodedata.combining(c) and font.covers(c) and not c.isspace()]
            out.extend(base)
    lines = [" ".join(line.split()) for line in "".join(out).split("\n")]
    return "\n".join(line for line in lines if line)[:_MAX_TEXT_CHARS]


def _wrap(text: str, font: _TextFont, max_width: float) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if font.length(candidate) <= max_width:
                current = candidate
                continue
            if current:
                lines.append(current)
            # A word wider than the line is broken between characters.
            current = ""
            for char in word:
                if current and font.length(current + char) > max_width:
                    lines.append(current)
                    current = ""
                current += char
        if current:
            lines.append(current)
    return lines


def _limit_lines(lines: list[str], max_lines: int, font: _TextFont, max_width: float) -> list[str]:
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1]
    while last and font.length(last.rstrip() + "...") > max_width:
        last = last[:-1]
    kept[-1] = last.rstrip() + "..."
    return kept


def _parse_color(value: str, what: str) -> tuple[int, int, int]:
    """``#rrggbb`` (also ``#rgb``, CSS names, ``rgb()``/``hsl()``; alpha ignored). Colours
    only ever reach Pillow, never ffmpeg."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return ImageColor.getrgb(value.strip())[:3]
        except ValueError:
            pass
    raise CompositorInputError(f"{what} must be a colour like #1a2b3c")


def render_caption_image(text: str, width: int, height: int, path: Path, *,
                         font_path: Path | None = None) -> tuple[int, int] | None:
    """Draws a caption (white text on a translucent dark box) sized for a ``width`` x
    ``height`` frame into an RGBA PNG at ``path``. Returns where its top-left corner goes in
    the frame (horizontally centred, inside the bottom third), or None if nothing is drawable.
    """
    size = max(10, round(min(width, height) * 0.06))
    font = _TextFont(size, font_path)
    text = _drawable(text, font)
    if not text:
        return None
    stroke = size // 14  # an outline only where it does not fill the gaps between letters
    pad_x, pad_y = round(size * 0.5) + stroke, round(size * 0.25) + stroke
    margin = max(2, round(height * 0.05))
    max_width = width * 0.92 - 2 * pad_x
    line_h = font.line_height()
    room = height // 3 - margin - 2 * pad_y
    lines = _limit_lines(_wrap(text, font, max_width), max(1, room // line_h), font, max_width)
    box_w = min(width, int(math.ceil(max(font.length(line) for line in lines))) + 2 * pad_x)
    box_h = min(height, len(lines) * line_h + 2 * pad_y)
    image = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=max(2, size // 3),
                           fill=(0, 0, 0, 150))
    for row, line in enumerate(lines):
        x = (box_w - font.length(line)) / 2
        font.draw_line(draw, x, pad_y + row * line_h, line, fill=(255, 255, 255, 255),
                       stroke_width=stroke, stroke_fill=(0, 0, 0, 255))
    image.save(path, format="PNG")
    x = max(0, (width - box_w) // 2) & ~1
    y = max(0, height - margin - box_h) & ~1
    return x, y


def render_cta_image(card: CallToActionCard, width: int, height: int, path: Path, *,
                     font_path: Path | None = None) -> None:
    """Draws the full-frame call-to-action card (brand background, centred text) as a PNG."""
    background = _parse_color(card.background_color, "background_color")
    foreground = _parse_color(card.text_color, "text_color")
    image = Image.new("RGB", (width, height), background)
    max_w, max_h = width * 0.8, height * 0.7
    size = max(12, round(min(width, height) * 0.15))
    while True:
        font = _TextFont(size, font_path)
        text = _drawable(card.text, font)
        lines = _wrap(text, font, max_w) if text else []
        line_h = font.line_height()
        if len(lines) * line_h <= max_h or size <= 10:
            break
        size = max(10, int(size * 0.85))
    lines = _limit_lines(lines, max(1, int(max_h // line_h)), font, max_w)
    if lines:
        draw = ImageDraw.Draw(image)
        top = (height - len(lines) * line_h) / 2
        for row, line in enumerate(lines):
            # A stroke in the text colour makes the regular-weight font bold enough to
            # survive chroma subsampling at small sizes.
            font.draw_line(draw, (width - font.length(line)) / 2, top + row * line_h, line,
                           fill=foreground, stroke_width=max(1, round(size / 24)),
                           stroke_fill=foreground)
    image.save(path, format="PNG")


# ---- timeline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """The frame plan.

    ``boundaries[k]`` is the frame where segment k (the scenes, then the CTA card) is planned
    to end. Junction k joins segment k to k+1:

    * ``cut``: back to back.
    * ``crossfade``: an ``xfade`` over ``overlaps[k]`` frames centred on ``boundaries[k]``
      (it starts at ``offsets[k]``), so half the blend lies on each side of the planned cut.
    * ``fade``: segment k fades out to black over its last ``fades[k]`` frames and segment
      k+1 fades in over its first ``fades[k]`` frames; no overlap, black at the boundary.

    Segment k is rendered ``rendered[k]`` frames long: its planned frames plus the half
    overlaps it lends to neighbouring crossfades, which ``xfade`` takes back when joining.
    """

    fps: int
    boundaries: list[int]
    rendered: list[int]
    kinds: list[str]
    overlaps: list[int]
    offsets: list[int]
    fades: list[int]

    @property
    def total_frames(self) -> int:
        return self.boundaries[-1]


def plan_timeline(durations: Sequence[float], transitions: Sequence[str], cta_duration_s: float,
                  fps: int, crossfade_s: float = CROSSFADE_S) -> Timeline:
    """Plans frame counts so the output is ``round((sum(durations) + cta) * fps)`` frames,
    whatever the transitions: a crossfade overlaps two segments that were each rendered
    longer by their share of the overlap, so joining them gives the time back exactly."""
    if len(durations) != len(transitions):
        raise CompositorInputError("one transition per scene is required")
    if not isinstance(crossfade_s, (int, float)) or not 0 <= crossfade_s < 60:
        raise CompositorInputError("crossfade_s must be between 0 and 60 seconds")
    boundaries: list[int] = []
    elapsed = 0.0
    for index, seconds in enumerate([*durations, cta_duration_s]):
        what = "call-to-action card" if index == len(durations) else f"scene {index}"
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or not 0 < seconds <= 3600:
            raise CompositorInputError(f"{what}: duration must be between 0 and 3600 seconds")
        elapsed += float(seconds)
        boundaries.append(round(elapsed * fps))
        previous = boundaries[-2] if len(boundaries) > 1 else 0
        if boundaries[-1] - previous < 1:
            raise CompositorInputError(f"{what}: duration {seconds:g} s is shorter than a frame")
    planned = [b - a for a, b in zip([0, *boundaries[:-1]], boundaries)]
    kinds: list[str] = []
    overlaps: list[int] = []
    fades: list[int] = []
    for index, transition in enumerate(transitions):
        kind = str(transition).strip().lower() if transition is not None else "cut"
        if kind not in TRANSITIONS:
            raise CompositorInputError(
                f"scene {index}: unknown transition (expected one of {', '.join(TRANSITIONS)})")
        # A transition takes at most half of either neighbour, so two never collide.
        room = min(planned[index], planned[index + 1]) // 2
        overlap = fade = 0
        if kind == "crossfade" and crossfade_s > 0:
            overlap = min(max(1, round(crossfade_s * fps)), room)
        elif kind == "fade" and crossfade_s > 0:
            fade = min(max(1, round(crossfade_s * fps / 2)), room)
        kinds.append(kind if overlap or fade else "cut")
        overlaps.append(overlap)
        fades.append(fade)
    before = [overlap // 2 for overlap in overlaps]  # blend frames before the boundary
    after = [overlap - half for overlap, half in zip(overlaps, before)]
    rendered = [frames + (after[k] if k < len(after) else 0) + (before[k - 1] if k else 0)
                for k, frames in enumerate(planned)]
    offsets = [boundary - half for boundary, half in zip(boundaries, before)]
    return Timeline(fps, boundaries, rendered, kinds, overlaps, offsets, fades)


# ---- the composite ----------------------------------------------------------------------------

_GRAPH_VOCABULARY = re.compile(r"[A-Za-z0-9_\[\]=:;,.()/*+\-]+")


def _checked_graph(graph: str) -> str:
    """The filter graph, after proving it holds only our vocabulary (no client text)."""
    if not _GRAPH_VOCABULARY.fullmatch(graph):
        raise CompositorError("internal error: unexpected characters in the filter graph")
    return graph


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def _check_fps(fps: int) -> None:
    if not isinstance(fps, int) or isinstance(fps, bool) or not 1 <= fps <= 120:
        raise CompositorInputError("fps must be an integer between 1 and 120")


def _seconds(frames: int, fps: int) -> str:
    return f"{frames / fps:.6f}"


def composite_video(
    scenes: Sequence[SceneClip],
    cta: CallToActionCard,
    output_path: Path,
    thumbnail_path: Path,
    *,
    width: int,
    height: int,
    fps: int = 24,
    timeout_s: float = 300,
    workdir: Path,
    crossfade_s: float = CROSSFADE_S,
    font_path: Path | None = None,
) -> CompositeResult:
    """Composites the scenes (letterboxed, looped to their durations, captioned, joined by their
    transitions) and the call-to-action card into an H.264 MP4 at ``output_path``, plus a JPEG
    thumbnail (a frame from the middle of the first scene) at ``thumbnail_path``.

    ``font_path`` (or ``$RENDERFARM_CAPTION_FONT``) selects a TrueType font for captions and the
    card; by default Pillow's built-in font is used, which covers Latin text only — characters
    it cannot draw are replaced by their base letters or left out.
    """
    started = time.monotonic()
    if not scenes:
        raise CompositorInputError("at least one scene is required")
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or not 16 <= value <= 4096 \
                or value % 2:
            raise CompositorInputError(f"{name} must be an even integer between 16 and 4096")
    _check_fps(fps)
    if not timeout_s > 0:
        raise CompositorInputError("timeout_s must be positive")
    output_path, thumbnail_path = Path(output_path), Path(thumbnail_path)
    if output_path.absolute() == thumbnail_path.absolute():
        raise CompositorInputError("output_path and thumbnail_path must differ")
    if font_path is None and os.environ.get("RENDERFARM_CAPTION_FONT"):
        font_path = Path(os.environ["RENDERFARM_CAPTION_FONT"])
    _parse_color(cta.background_color, "background_color")
    _parse_color(cta.text_color, "text_color")
    clips = [Path(scene.clip_path) for scene in scenes]
    for index, clip in enumerate(clips):
        if not clip.is_file():
            raise CompositorInputError(f"scene {index}: clip file does not exist")
    timeline = plan_timeline([s.duration_s for s in scenes], [s.transition for s in scenes],
                             cta.duration_s, fps, crossfade_s)

    Path(workdir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="composite-", dir=workdir))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    thumbnail_path.parent.mkdir(parents=True, exist_ok=True)
    partial_video = _partial_name(output_path)
    partial_thumb = _partial_name(thumbnail_path)
    try:
        args, graph, inputs = _build_command(scenes, cta, timeline, scratch, width, height,
                                             fps, font_path)
        thumb_frame = min(timeline.boundaries[0] // 2, timeline.total_frames - 1)
        graph += (f";[final]{_TAG_BT709},split=2[vout][tsrc];[tsrc]trim=start_frame={thumb_frame}"
                  f":end_frame={thumb_frame + 1},setpts=PTS-STARTPTS,"
                  f"scale=in_color_matrix=bt709:in_range=tv:out_color_matrix=bt601"
                  f":out_range=pc,format=yuvj420p[thumb]")
        args += [
            "-filter_complex", _checked_graph(graph),
            "-map", "[vout]", *_X264, "-crf", "20", "-g", str(fps * 2), "-r", str(fps),
            "-fps_mode", "cfr", *_BT709_TAGS, "-threads", _threads(),
            "-movflags", "+faststart", "-an", "-f", "mp4", ffmpeg_path_arg(partial_video),
            "-map", "[thumb]", "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "3",
            "-f", "image2", "-update", "1", ffmpeg_path_arg(partial_thumb),
        ]
        remaining = timeout_s - (time.monotonic() - started)
        try:
            run_ffmpeg(args, timeout_s=max(remaining, 0.0), reported_timeout_s=timeout_s,
                       error_cls=CompositorError, what="ffmpeg")
        except CompositorError as exc:
            raise CompositorError(_name_inputs(str(exc), inputs)) from exc
        for partial, what in ((partial_video, "video"), (partial_thumb, "thumbnail")):
            if not partial.is_file() or partial.stat().st_size == 0:
                raise CompositorError(f"ffmpeg reported success but wrote no {what}")
        remaining = timeout_s - (time.monotonic() - started)
        try:
            info = probe_media(partial_video, timeout_s=max(remaining, 5.0))
        except MediaError as exc:
            raise CompositorError(f"the composite cannot be read back: {exc}") from exc
        if (info.width, info.height) != (width, height) or info.video_codec != "h264":
            raise CompositorError(
                f"the composite is {info.video_codec} {info.width}x{info.height}, "
                f"expected h264 {width}x{height}")
        size_bytes = partial_video.stat().st_size
        os.replace(partial_thumb, thumbnail_path)
        os.replace(partial_video, output_path)
    finally:
        partial_video.unlink(missing_ok=True)
        partial_thumb.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return CompositeResult(duration_s=info.duration_s, width=width, height=height,
                           size_bytes=size_bytes)


def _name_inputs(message: str, inputs: Sequence[str]) -> str:
    """Adds which scene an ffmpeg input number (``in#2``, ``vist#2:0``) belongs to."""
    named = []
    for number in dict.fromkeys(re.findall(r"\b(?:in|ist|vist)#(\d+)", message)):
        if int(number) < len(inputs):
            named.append(f"input #{number} is {inputs[int(number)]}")
    return f"{message} ({'; '.join(named)})" if named else message


def _build_command(scenes: Sequence[SceneClip], cta: CallToActionCard, timeline: Timeline,
                   scratch: Path, width: int, height: int, fps: int,
                   font_path: Path | None) -> tuple[list[str], str, list[str]]:
    """Input arguments, the filter graph (ending in the ``[final]`` label) and what each
    input is. ``-xerror`` makes any demux/decode error fatal: a damaged clip fails the job
    with ffmpeg's reason instead of being looped forever or shipped with broken frames."""
    args = ["-nostdin", "-v", "error", "-xerror", "-y"]
    chains: list[str] = []
    inputs: list[str] = []

    def add_input(what: str, *input_args: str) -> int:
        args.extend(input_args)
        inputs.append(what)
        return len(inputs) - 1

    fit = (f"scale=w={width}:h={height}:force_original_aspect_ratio=decrease"
           f":force_divisible_by=2:out_color_matrix=bt709:out_range=tv,"
           f"pad=w={width}:h={height}:x=(ow-iw)/2:y=(oh-ih)/2:color=black,setsar=1,"
           f"format=yuv420p")

    def fades(segment: int) -> str:
        """Fade-through-black filters for a segment's head and tail (or nothing)."""
        parts = []
        if segment > 0 and timeline.kinds[segment - 1] == "fade":
            parts.append(f",fade=t=in:s=0:n={timeline.fades[segment - 1]}")
        if segment < len(timeline.kinds) and timeline.kinds[segment] == "fade":
            frames = timeline.fades[segment]
            parts.append(f",fade=t=out:s={timeline.rendered[segment] - frames}:n={frames}")
        return "".join(parts)

    for index, scene in enumerate(scenes):
        clip = add_input(f"scene {index}'s clip", "-stream_loop", "-1",
                         "-protocol_whitelist", "file", "-i", ffmpeg_path_arg(scene.clip_path))
        chain = (f"[{clip}:v:0]setpts=PTS-STARTPTS,fps={fps},"
                 f"trim=end_frame={timeline.rendered[index]},setpts=PTS-STARTPTS,{fit}")
        caption_png = scratch / f"caption_{index:03d}.png"
        where = render_caption_image(scene.caption or "", width, height, caption_png,
                                     font_path=font_path)
        if where is not None:
            image = add_input(f"scene {index}'s caption image", "-f", "image2",
                              "-pattern_type", "none", "-i", ffmpeg_path_arg(caption_png))
            chains.append(f"{chain}[base{index}]")
            chain = (f"[base{index}][{image}:v:0]overlay=x={where[0]}:y={where[1]}"
                     f":eof_action=repeat:format=auto,format=yuv420p")
        chains.append(f"{chain}{fades(index)}[seg{index}]")

    card_png = scratch / "cta.png"
    render_cta_image(cta, width, height, card_png, font_path=font_path)
    card = add_input("the call-to-action card image", "-f", "image2", "-pattern_type", "none",
                     "-loop", "1", "-framerate", str(fps), "-i", ffmpeg_path_arg(card_png))
    last = len(scenes)
    chains.append(f"[{card}:v:0]fps={fps},trim=end_frame={timeline.rendered[last]},"
                  f"setpts=PTS-STARTPTS,{_TO_BT709},setsar=1{fades(last)}[seg{last}]")

    joined = "seg0"
    for junction, kind in enumerate(timeline.kinds):
        incoming = f"seg{junction + 1}"
        out = "final" if junction == last - 1 else f"join{junction}"
        if kind == "crossfade":
            chains.append(
                f"[{joined}][{incoming}]xfade=transition=fade"
                f":duration={_seconds(timeline.overlaps[junction], fps)}"
                f":offset={_seconds(timeline.offsets[junction], fps)}[{out}]")
        else:
            chains.append(f"[{joined}][{incoming}]concat=n=2:v=1:a=0,settb=1/{fps}[{out}]")
        joined = out
    return args, ";".join(chains), inputs
