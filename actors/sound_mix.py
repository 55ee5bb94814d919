"""The sound of the ad: a second ffmpeg pass over the composited (silent) picture.

Each scene's voice-over line is placed at its scene's start on the timeline; the music bed is
looped or trimmed to the video, levelled well under the voice and ducked while the voice
speaks (``sidechaincompress`` keyed by the voice); the mix is normalised to -14 LUFS
integrated with the true peak at most -1 dBTP (EBU R128 / ITU BS.1770) and muxed as AAC,
48 kHz stereo, exactly as long as the video, the picture copied untouched.

Loudness is normalised in two passes, the reliable way with ``loudnorm``: the first renders
the mix to a WAV and measures it (``ebur128``); the second applies the measured values with
``linear=true`` (one gain for the whole ad, no pumping) while encoding.

With neither voice nor music the video still gets a silent AAC track: platforms and players
treat a video without an audio stream inconsistently (some refuse it, some show it muted),
and a silent track keeps every ad the same shape.

No client text reaches argv or the filter graph: only numbers, our own labels and our own
absolute file names (``_checked_graph`` proves it, like the compositor's).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from actors.media_probe import MediaError, ffmpeg_path_arg, run_ffmpeg

SAMPLE_RATE = 48_000
TARGET_LUFS = -14.0
# Aim under the -1 dBTP ceiling: AAC encoding can lift inter-sample peaks a little.
TARGET_TRUE_PEAK_DB = -2.0
# Wide enough that ordinary ads stay in loudnorm's linear mode (one gain, no compression).
TARGET_LRA = 20.0
AAC_BITRATE = "192k"
# Stems are levelled before mixing so the music always sits under the voice.
VOICE_STEM_LUFS = -16.0
MUSIC_STEM_LUFS = -27.0
MUSIC_FADE_S = 0.5
# Stems are high-passed first: a TTS model's line can carry a DC offset or rumble, which loudness
# meters ignore (K-weighting) but which clicks where each line starts and ends and eats headroom.
# Speech has nothing useful below 60 Hz; music keeps its bass (only DC goes).
VOICE_HIGHPASS_HZ = 60.0
MUSIC_HIGHPASS_HZ = 20.0
# Below this the measured mix is silence (e.g. a silent asset): no gain can normalise it.
SILENCE_LUFS = -70.0

_GRAPH_VOCABULARY = re.compile(r"[A-Za-z0-9_\[\]=:;,.\-]+")
# ebur128's summary. Measured by it, not by a first loudnorm: loudnorm's own first-pass
# figures drift by about 1 LU on short programmes, and ebur128 is the BS.1770 meter itself.
_SUMMARY = {
    "integrated": re.compile(r"Integrated loudness:\s+I:\s+(-?[\d.]+|-inf) LUFS\s+Threshold:\s+(?:-?[\d.]+|-inf)"),
    "threshold": re.compile(r"Integrated loudness:\s+I:\s+(?:-?[\d.]+|-inf) LUFS\s+Threshold:\s+(-?[\d.]+|-inf)"),
    "lra": re.compile(r"LRA:\s+(-?[\d.]+) LU"),
    "true_peak": re.compile(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS"),
}


class SoundMixError(MediaError):
    """Mixing the sound failed: ffmpeg's reason, a time limit, or unusable input."""


@dataclass(frozen=True)
class VoiceLine:
    """One scene's spoken line and where on the video's timeline it starts."""

    wav_path: Path
    start_s: float


@dataclass(frozen=True)
class MixResult:
    has_voice: bool
    has_music: bool
    # Integrated loudness of the mix before normalisation (None: silent track).
    measured_lufs: float | None


def _checked_graph(graph: str) -> str:
    """The filter graph, after proving it holds only our vocabulary (no client text)."""
    if not _GRAPH_VOCABULARY.fullmatch(graph):
        raise SoundMixError("internal error: unexpected characters in the audio filter graph")
    return graph


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise SoundMixError("internal error: a non-finite number in the audio filter graph")
    return f"{value:.6f}"


_STEREO = f"aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"


def _mix_graph(voice_starts: Sequence[float], has_music: bool, duration_s: float) -> str:
    """Pass one: voices placed and summed, music levelled and ducked, the mix padded/trimmed
    to the video; ``[out]`` is the mix, ``[measured]`` the loudness measurement of it."""
    duration = _number(duration_s)
    parts: list[str] = []
    for index, start in enumerate(voice_starts):
        delay_ms = max(0, round(start * 1000))
        # Each line levelled on its own (single-pass loudnorm), then placed at its scene.
        parts.append(f"[{index}:a]{_STEREO},highpass=f={_number(VOICE_HIGHPASS_HZ)},"
                     f"loudnorm=I={_number(VOICE_STEM_LUFS)}:TP=-3,"
                     f"{_STEREO},adelay=delays={delay_ms}:all=1[v{index}]")
    if len(voice_starts) > 1:
        labels = "".join(f"[v{index}]" for index in range(len(voice_starts)))
        parts.append(f"{labels}amix=inputs={len(voice_starts)}:normalize=0:duration=longest[voice]")
    elif voice_starts:
        parts.append("[v0]anull[voice]")
    if has_music:
        music = len(voice_starts)  # the input after the voices, looped by -stream_loop
        fade_start = _number(max(duration_s - MUSIC_FADE_S, 0.0))
        parts.append(f"[{music}:a]{_STEREO},atrim=end={duration},asetpts=PTS-STARTPTS,"
                     f"highpass=f={_number(MUSIC_HIGHPASS_HZ)},"
                     f"loudnorm=I={_number(MUSIC_STEM_LUFS)}:TP=-6,{_STEREO},"
                     f"afade=t=in:d={_number(min(MUSIC_FADE_S, duration_s / 4))},"
                     f"afade=t=out:st={fade_start}:d={_number(MUSIC_FADE_S)}[music]")
    if voice_starts and has_music:
        # Padded to the video's length: the compressor stops where its key stream ends.
        parts.append(f"[voice]apad=whole_dur={duration},asplit=2[key][spoken]")
        # Ducked by up to ~15 dB while the voice speaks, back within half a second after.
        parts.append("[music][key]sidechaincompress=threshold=0.01:ratio=12:attack=20:"
                     "release=450:makeup=1[ducked]")
        parts.append("[ducked][spoken]amix=inputs=2:normalize=0:duration=longest[mix]")
    else:
        parts.append(f"[{'voice' if voice_starts else 'music'}]anull[mix]")
    parts.append(f"[mix]apad=whole_dur={duration},atrim=end={duration},asplit=2[out][tomeasure]")
    parts.append("[tomeasure]ebur128=peak=true[measured]")
    return ";".join(parts)


def _parse_ebur128(lines: Sequence[str]) -> dict[str, float]:
    """The summary ``ebur128=peak=true`` prints at the end: integrated loudness, its gating
    threshold, loudness range and true peak, as numbers (``-inf`` for silence)."""
    try:
        start = max(i for i, line in enumerate(lines) if "Summary:" in line)
    except ValueError:
        raise SoundMixError("the loudness measurement printed no summary") from None
    summary = "\n".join(lines[start:])
    found = {name: _SUMMARY[name].search(summary) for name in _SUMMARY}
    if not all(found.values()):
        raise SoundMixError("the loudness measurement's summary could not be read")
    return {name: float(match.group(1)) for name, match in found.items()}


def _apply_graph(measured: dict[str, float], duration_s: float) -> str:
    """Pass two: the measured values applied as one linear gain (loudnorm falls back to its
    true-peak limiting only when one gain cannot meet both targets), at 48 kHz, exact length."""
    duration = _number(duration_s)
    return (f"[1:a]loudnorm=I={_number(TARGET_LUFS)}:TP={_number(TARGET_TRUE_PEAK_DB)}"
            f":LRA={_number(TARGET_LRA)}:measured_I={_number(measured['integrated'])}"
            f":measured_TP={_number(measured['true_peak'])}"
            f":measured_LRA={_number(measured['lra'])}"
            f":measured_thresh={_number(measured['threshold'])}:linear=true,"
            f"{_STEREO},apad=whole_dur={duration},atrim=end={duration}[a]")


def _silent_graph(duration_s: float) -> str:
    return (f"anullsrc=r={SAMPLE_RATE}:cl=stereo,atrim=end={_number(duration_s)},"
            f"aformat=sample_fmts=fltp:channel_layouts=stereo[a]")


def _mux_args(video_path: Path, graph: str, output: Path) -> list[str]:
    return ["-filter_complex", _checked_graph(graph), "-map", "0:v:0", "-map", "[a]",
            "-c:v", "copy", "-c:a", "aac", "-b:a", AAC_BITRATE, "-ar", str(SAMPLE_RATE),
            "-ac", "2", "-movflags", "+faststart", "-f", "mp4", ffmpeg_path_arg(output)]


def mix_sound(video_path: Path, output_path: Path, *, voices: Sequence[VoiceLine],
              music_path: Path | None, duration_s: float, workdir: Path,
              timeout_s: float = 300.0) -> MixResult:
    """Writes ``video_path``'s picture with the mixed sound to ``output_path`` (see the module
    docstring). ``duration_s`` is the video's exact length. Raises ``SoundMixError``."""
    started = time.monotonic()
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s)
            and 0 < duration_s <= 3600):
        raise SoundMixError("duration_s must be between 0 and 3600 seconds")
    for line in voices:
        if not (math.isfinite(line.start_s) and 0 <= line.start_s < duration_s):
            raise SoundMixError(f"a voice line starts at {line.start_s:g} s, outside the video")

    def remaining() -> float:
        return max(timeout_s - (time.monotonic() - started), 0.0)

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    output_path = Path(output_path)
    inputs = ["-nostdin", "-y", "-i", ffmpeg_path_arg(video_path)]
    if not voices and music_path is None:
        run_ffmpeg([*inputs, *_mux_args(video_path, _silent_graph(duration_s), output_path)],
                   timeout_s=remaining(), reported_timeout_s=timeout_s,
                   error_cls=SoundMixError, what="ffmpeg sound mix")
        return MixResult(has_voice=False, has_music=False, measured_lufs=None)

    mixed = workdir / "sound-mix.wav"
    stems: list[str] = ["-nostdin", "-y"]
    for line in voices:
        stems += ["-i", ffmpeg_path_arg(line.wav_path)]
    if music_path is not None:
        stems += ["-stream_loop", "-1", "-i", ffmpeg_path_arg(music_path)]
    graph = _mix_graph([line.start_s for line in voices], music_path is not None, duration_s)
    first = run_ffmpeg(
        [*stems, "-filter_complex", _checked_graph(graph),
         "-map", "[out]", "-c:a", "pcm_f32le", "-f", "wav", ffmpeg_path_arg(mixed),
         "-map", "[measured]", "-f", "null", "-"],
        timeout_s=remaining(), reported_timeout_s=timeout_s, error_cls=SoundMixError,
        what="ffmpeg sound mix")
    measured = _parse_ebur128(first.stderr_lines)
    if not all(map(math.isfinite, measured.values())) or measured["integrated"] < SILENCE_LUFS:
        apply = _silent_graph(duration_s)  # nothing audible to normalise
        loudness = None
    else:
        apply = _apply_graph(measured, duration_s)
        loudness = measured["integrated"]
    run_ffmpeg([*inputs, "-i", ffmpeg_path_arg(mixed), *_mux_args(video_path, apply, output_path)],
               timeout_s=remaining(), reported_timeout_s=timeout_s, error_cls=SoundMixError,
               what="ffmpeg sound mix")
    mixed.unlink(missing_ok=True)
    return MixResult(has_voice=bool(voices), has_music=music_path is not None,
                     measured_lufs=loudness)
