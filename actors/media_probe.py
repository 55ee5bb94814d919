"""Running the bundled ffmpeg safely, and reading facts about media files with it.

There is no ffprobe next to the ffmpeg that imageio-ffmpeg ships, so probing parses the
stream summary ffmpeg prints for ``ffmpeg -i FILE`` (fast, container header only) and, when
an exact answer is wanted, decodes the video to the null muxer and counts the frames.

Every ffmpeg call goes through :func:`run_ffmpeg`: an argument list (never a shell), a hard
wall-clock limit after which the process is killed, and errors that carry the last lines
ffmpeg wrote to stderr (its reason).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "FFmpegRun",
    "MediaError",
    "MediaInfo",
    "extract_frame",
    "ffmpeg_executable",
    "ffmpeg_path_arg",
    "probe_media",
    "run_ffmpeg",
]

# How many stderr lines are kept while ffmpeg runs, and how many end up in an error message.
_STDERR_KEEP_LINES = 200
_STDERR_REASON_LINES = 6
# Lines ffmpeg prints after the real reason (its threads shutting down) that say nothing new.
_CASCADE = re.compile(
    r"Conversion failed|Exiting normally|Task finished with error code|Terminating thread with"
    r"|Could not open encoder before EOF|Nothing was written into output file"
    r"|Error (?:while filtering|sending frames|closing|opening output)"
    r"|At least one output file must be specified|Error processing packet in decoder",
    re.IGNORECASE,
)
_POINTER = re.compile(r" @ 0x[0-9a-fA-F]+")


class MediaError(RuntimeError):
    """ffmpeg could not do what was asked (bad input, failed encode, time limit)."""


def ffmpeg_executable() -> str:
    """The ffmpeg binary: ``$FFMPEG_BINARY`` if set, else the one imageio-ffmpeg ships."""
    configured = os.environ.get("FFMPEG_BINARY")
    if configured:
        return configured
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_path_arg(path: Path | str) -> str:
    """A local path as an ffmpeg input/output argument that can only mean that file.

    Absolute paths start with ``/``, so ffmpeg can neither read them as an option (``-x``) nor
    as a protocol URL (``concat:``, ``http:``) — both would otherwise be decided by the text.
    """
    return os.fspath(Path(path).absolute())


@dataclass(frozen=True)
class FFmpegRun:
    returncode: int
    stdout: bytes
    stderr_lines: list[str]


def _reason(lines: Sequence[str]) -> str:
    """ffmpeg's last meaningful stderr lines: shutdown noise and repeats removed."""
    meaningful = [_POINTER.sub("", line).strip() for line in lines]
    meaningful = [line for line in meaningful if line]
    informative = [line for line in meaningful if not _CASCADE.search(line)] or meaningful
    unique: list[str] = []
    for line in reversed(informative):
        if line not in unique:
            unique.append(line)
        if len(unique) == _STDERR_REASON_LINES:
            break
    return " | ".join(reversed(unique)) if unique else "no output on stderr"


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout_s: float,
    feed_stdin: Callable[[BinaryIO], None] | None = None,
    capture_stdout: bool = False,
    check: bool = True,
    error_cls: type[MediaError] = MediaError,
    what: str = "ffmpeg",
    reported_timeout_s: float | None = None,
) -> FFmpegRun:
    """Runs ``ffmpeg -hide_banner ARGS`` with a hard time limit.

    ``feed_stdin`` (if given) is called in a thread with ffmpeg's stdin and may write to it
    (e.g. raw frames for ``-i pipe:0``); stdin is closed when it returns. On timeout the process
    is killed and ``error_cls("ffmpeg timed out after N s")`` raised; with ``check`` a non-zero
    exit raises ``error_cls`` with ffmpeg's last meaningful stderr lines. Any other exception
    while waiting (a cancelled task, KeyboardInterrupt) kills ffmpeg before propagating.
    ``reported_timeout_s`` is the limit named in the timeout message when ``timeout_s`` is
    only what is left of a larger budget.
    """
    limit = timeout_s if reported_timeout_s is None else reported_timeout_s
    if not timeout_s > 0:
        raise error_cls(f"{what} timed out after {limit:g} s")
    argv = [ffmpeg_executable(), "-hide_banner", *args]
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if feed_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise error_cls(f"cannot start ffmpeg ({argv[0]}): {exc}") from exc
    stderr_tail: deque[str] = deque(maxlen=_STDERR_KEEP_LINES)
    stdout_buf = io.BytesIO()
    feed_errors: list[BaseException] = []

    def read_stderr() -> None:
        assert process.stderr is not None
        for raw in iter(process.stderr.readline, b""):
            stderr_tail.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def read_stdout() -> None:
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read(1 << 16), b""):
            stdout_buf.write(chunk)

    def write_stdin() -> None:
        assert process.stdin is not None and feed_stdin is not None
        try:
            feed_stdin(process.stdin)
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg went away (failed or was killed); its exit status tells why
        except BaseException as exc:  # noqa: BLE001 - re-raised once ffmpeg has stopped
            feed_errors.append(exc)
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass

    threads = [threading.Thread(target=read_stderr, daemon=True)]
    if capture_stdout:
        threads.append(threading.Thread(target=read_stdout, daemon=True))
    if feed_stdin:
        threads.append(threading.Thread(target=write_stdin, daemon=True))
    for thread in threads:
        thread.start()

    def stop() -> None:
        if process.poll() is None:
            process.kill()
        process.wait()
        for thread in threads:
            thread.join(timeout=5)

    try:
        returncode = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop()
        raise error_cls(f"{what} timed out after {limit:g} s") from None
    except BaseException:
        stop()
        raise
    for thread in threads:
        thread.join(timeout=5)
    if feed_errors:
        raise feed_errors[0]
    lines = list(stderr_tail)
    if check and returncode != 0:
        raise error_cls(f"{what} failed (exit code {returncode}): {_reason(lines)}")
    return FFmpegRun(returncode, stdout_buf.getvalue(), lines)


# ---- probing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float
    width: int
    height: int
    video_codec: str | None
    fps: float | None
    has_audio: bool
    # Only filled by ``probe_media(..., exact=True)``: decoded video frames.
    frame_count: int | None = None


_DURATION = re.compile(r"^\s*Duration:\s*(?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?:\s*(Video|Audio):\s*(.*)$")
_SIZE = re.compile(r"(?:^|[\s,])(\d{1,5})x(\d{1,5})(?=[\s,\[]|$)")
_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?) (fps|tbr)\b")


def _parse_probe(lines: Sequence[str]) -> dict:
    duration = None
    video = None
    has_audio = False
    for line in lines:
        match = _DURATION.match(line)
        if match and duration is None:
            if match.group(1) is not None:
                h, m, s = match.groups()
                duration = int(h) * 3600 + int(m) * 60 + float(s)
            else:
                duration = 0.0
            continue
        match = _STREAM.match(line)
        if not match:
            continue
        kind, detail = match.groups()
        if kind == "Audio":
            has_audio = True
        elif video is None and "attached pic" not in detail:
            codec = detail.split(None, 1)[0].rstrip(",") if detail else None
            size = _SIZE.search(detail)
            rates = {unit: float(value) * (1000 if thousands else 1)
                     for value, thousands, unit in _FPS.findall(detail)}
            video = {
                "video_codec": codec,
                "width": int(size.group(1)) if size else 0,
                "height": int(size.group(2)) if size else 0,
                "fps": rates.get("fps", rates.get("tbr")),
            }
    return {"duration": duration, "video": video, "has_audio": has_audio}


def probe_media(path: Path | str, *, exact: bool = False, timeout_s: float = 30.0) -> MediaInfo:
    """Duration, size, codec, frame rate and audio presence of a media file.

    The default reads the container header (fast). ``exact=True`` also decodes the video and
    counts its frames; ``duration_s`` is then ``frame_count / fps`` (right for constant frame
    rate, which is what this project writes). Raises :class:`MediaError` if ffmpeg cannot read
    the file, with ffmpeg's reason.
    """
    deadline = time.monotonic() + timeout_s
    source = ffmpeg_path_arg(path)
    if not Path(source).is_file():
        raise MediaError(f"not a file: {source}")
    # Exit code 1 ("At least one output file must be specified") is expected here.
    header = run_ffmpeg(["-nostdin", "-i", source], timeout_s=timeout_s, check=False,
                        what="ffmpeg probe")
    parsed = _parse_probe(header.stderr_lines)
    if parsed["duration"] is None and parsed["video"] is None and not parsed["has_audio"]:
        raise MediaError(f"ffmpeg probe could not read {source}: {_reason(header.stderr_lines)}")
    video = parsed["video"] or {"video_codec": None, "width": 0, "height": 0, "fps": None}
    duration = parsed["duration"] or 0.0
    frame_count = None
    if exact and parsed["video"] is not None:
        run = run_ffmpeg(
            ["-nostdin", "-v", "error", "-i", source, "-map", "0:v:0",
             "-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1", "-nostats", "-"],
            timeout_s=max(deadline - time.monotonic(), 0.0), capture_stdout=True,
            what="ffmpeg probe",
        )
        counts = re.findall(rb"^frame=(\d+)\s*$", run.stdout, flags=re.M)
        frame_count = int(counts[-1]) if counts else 0
        if video["fps"]:
            duration = frame_count / video["fps"]
    return MediaInfo(
        duration_s=duration,
        width=video["width"],
        height=video["height"],
        video_codec=video["video_codec"],
        fps=video["fps"],
        has_audio=parsed["has_audio"],
        frame_count=frame_count,
    )


def extract_frame(path: Path | str, time_s: float, *, timeout_s: float = 30.0):
    """The decoded video frame shown at ``time_s`` as an RGB ``PIL.Image`` (for checks)."""
    from PIL import Image

    run = run_ffmpeg(
        ["-nostdin", "-v", "error", "-i", ffmpeg_path_arg(path), "-ss", f"{max(time_s, 0.0):.6f}",
         "-map", "0:v:0", "-frames:v", "1", "-c:v", "png", "-pix_fmt", "rgb24",
         "-f", "image2pipe", "pipe:1"],
        timeout_s=timeout_s, capture_stdout=True, what="ffmpeg frame extraction",
    )
    if not run.stdout:
        raise MediaError(f"no frame at {time_s:g} s in {path}")
    image = Image.open(io.BytesIO(run.stdout))
    image.load()
    return image.convert("RGB")
