"""The compositor: rendered scene clips + captions + a call-to-action card -> one H.264 ad.

This module builds and runs the ffmpeg graph. The caption and card images come from
:mod:`actors.caption_images` (fonts: :mod:`actors.fonts`), the frame plan from
:mod:`actors.timeline`; the names callers used from here before the split are re-exported.

Design notes
------------
* **Text never reaches ffmpeg.** Captions and the call-to-action card are drawn with Pillow
  into PNG files whose names we choose (``caption_000.png``, ``cta.png``) in a private
  directory under ``workdir``; the filter graph only ``overlay``s those images. The filter
  graph is built from numbers and fixed filter names, and :func:`_checked_graph` refuses any
  graph with a character outside that vocabulary (quotes, backslashes, whitespace, ``%``,
  ``{``, ``$``...). No client string can become an ffmpeg option, a filter fragment or a
  path; ffmpeg's ``drawtext`` (and its escaping rules) is not used at all.
* **Captions follow the voice.** A caption image is looped into a stream cut to the frames
  :meth:`Timeline.caption_frames` gives (the whole scene, or the scene's voice line) and
  shifted to their start, so the window is numbers in the graph, not an expression.
* **One ffmpeg process per composite**, started from an argument list (no shell), with a
  hard time limit. The video and the thumbnail are written to temporary names next to their
  final paths and renamed into place only when ffmpeg succeeded, so a failure, timeout or
  cancellation never leaves a half-written file under the final name. The picture is all
  this module makes (a silent MP4 and a thumbnail); sound is mixed in by a later pass.
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

import logging
import math
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from actors.caption_images import draw_caption, parse_color, render_caption_image, render_cta_image
from actors.composite_errors import CompositorError, CompositorInputError
from actors.media_probe import (
    MediaError,
    MediaInfo,
    extract_frame,
    ffmpeg_executable,
    ffmpeg_path_arg,
    probe_media,
    run_ffmpeg,
)
from actors.timeline import CROSSFADE_S, TRANSITIONS, Timeline, plan_timeline

__all__ = [
    "CROSSFADE_S",
    "CallToActionCard",
    "CompositeResult",
    "CompositorError",
    "CompositorInputError",
    "MediaInfo",
    "SceneClip",
    "TRANSITIONS",
    "Timeline",
    "composite_video",
    "encode_frames_to_mp4",
    "extract_frame",
    "ffmpeg_executable",
    "plan_timeline",
    "probe_media",
    "render_caption_image",
    "render_cta_image",
]

log = logging.getLogger(__name__)

_X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
_BT709_TAGS = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
               "-color_range", "tv"]
_TO_BT709 = "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"
# Frame colour tags; recent ffmpeg takes the stream's tags from the frames, not the options.
_TAG_BT709 = "setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709"


@dataclass(frozen=True)
class SceneClip:
    clip_path: Path
    duration_s: float
    transition: str = "cut"  # into the next scene (the last scene: into the CTA card)
    caption: str = ""
    # How long the scene's spoken line lasts (None: no voice-over): the caption shows for it.
    voice_duration_s: float | None = None


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
    # What the captions or the card could not show (characters no font has, text cut to fit).
    warnings: tuple[str, ...] = ()


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

    Captions and the card are set in the bundled caption fonts (:mod:`actors.fonts`);
    ``font_path`` (or ``$RENDERFARM_CAPTION_FONT``) puts a font of the operator's first in
    their fallback chain. A scene with ``voice_duration_s`` shows its caption while its line
    is spoken (see :meth:`Timeline.caption_frames`). Characters no font has and text cut to
    fit are logged and listed in the result's ``warnings``.
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
    parse_color(cta.background_color, "background_color")
    parse_color(cta.text_color, "text_color")
    for index, scene in enumerate(scenes):
        voice = scene.voice_duration_s
        if voice is not None and (isinstance(voice, bool) or not isinstance(voice, (int, float))
                                  or not math.isfinite(voice) or not 0 < voice <= 3600):
            raise CompositorInputError(
                f"scene {index}: voice_duration_s must be between 0 and 3600 seconds")
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
        args, graph, inputs, warnings = _build_command(scenes, cta, timeline, scratch, width,
                                                       height, fps, font_path)
        for warning in warnings:
            log.warning("composite: %s", warning)
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
                           size_bytes=size_bytes, warnings=tuple(warnings))


def _name_inputs(message: str, inputs: Sequence[str]) -> str:
    """Adds which scene an ffmpeg input number (``in#2``, ``vist#2:0``) belongs to."""
    named = []
    for number in dict.fromkeys(re.findall(r"\b(?:in|ist|vist)#(\d+)", message)):
        if int(number) < len(inputs):
            named.append(f"input #{number} is {inputs[int(number)]}")
    return f"{message} ({'; '.join(named)})" if named else message


def _build_command(scenes: Sequence[SceneClip], cta: CallToActionCard, timeline: Timeline,
                   scratch: Path, width: int, height: int, fps: int,
                   font_path: Path | None) -> tuple[list[str], str, list[str], list[str]]:
    """Input arguments, the filter graph (ending in the ``[final]`` label), what each input
    is, and what the captions and card could not show. ``-xerror`` makes any demux/decode error fatal: a damaged clip fails the job
    with ffmpeg's reason instead of being looped forever or shipped with broken frames."""
    args = ["-nostdin", "-v", "error", "-xerror", "-y"]
    chains: list[str] = []
    inputs: list[str] = []
    warnings: list[str] = []

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
        caption = draw_caption(scene.caption or "", width, height, caption_png,
                               font_path=font_path)
        warnings.extend(f"scene {index}'s caption: {note}" for note in caption.problems())
        if caption.position is not None:
            x, y = caption.position
            first, end = timeline.caption_frames(index, scene.voice_duration_s)
            image = add_input(f"scene {index}'s caption image", "-f", "image2",
                              "-pattern_type", "none", "-loop", "1", "-framerate", str(fps),
                              "-i", ffmpeg_path_arg(caption_png))
            # The caption as a stream of exactly its window's frames, starting where it shows.
            chains.append(f"[{image}:v:0]fps={fps},trim=end_frame={end - first},"
                          f"setpts=PTS-STARTPTS+{_seconds(first, fps)}/TB[caption{index}]")
            chains.append(f"{chain}[base{index}]")
            chain = (f"[base{index}][caption{index}]overlay=x={x}:y={y}"
                     f":eof_action=pass:format=auto,format=yuv420p")
        chains.append(f"{chain}{fades(index)}[seg{index}]")

    card_png = scratch / "cta.png"
    card_image = render_cta_image(cta, width, height, card_png, font_path=font_path)
    warnings.extend(f"the call-to-action card: {note}" for note in card_image.problems())
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
    return args, ";".join(chains), inputs, warnings
