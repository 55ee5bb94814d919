"""The sound pass on real MP4s with real ffmpeg (no Ray): probed, not assumed.

Voices are 1 kHz tone bursts and music a 220 Hz tone, so the energy of each can be measured
in the mix by frequency band: the voice inside every scene's window, the music throughout."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import numpy as np
import pytest

from actors.media_probe import probe_media, run_ffmpeg
from actors.sound_mix import SoundMixError, VoiceLine, mix_sound
from actors.compositor import plan_timeline

FPS = 24
VOICE_HZ = 1000.0
MUSIC_HZ = 220.0


def _wav(path: Path, seconds: float, hz: float, rate: int, amplitude: float = 0.5,
         channels: int = 1) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    tone = amplitude * np.sin(2 * np.pi * hz * t)
    samples = np.repeat((tone * 32767).astype("<i2")[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def _silent_video(path: Path, seconds: float) -> Path:
    run_ffmpeg(["-nostdin", "-y", "-f", "lavfi", "-i", f"color=c=black:s=64x48:r={FPS}:d={seconds}",
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-an", str(path)], timeout_s=60)
    return path


def _audio_stream(path: Path) -> str:
    lines = run_ffmpeg(["-nostdin", "-i", str(path)], timeout_s=30, check=False).stderr_lines
    audio = [line for line in lines if re.search(r"Stream #\d+:\d+.*Audio:", line)]
    assert len(audio) == 1, lines
    return audio[0]


def _audio_duration(path: Path) -> float:
    """Decoded audio length: samples actually played, at 48 kHz."""
    return len(_samples(path)) / 48_000


def _samples(path: Path) -> np.ndarray:
    run = run_ffmpeg(["-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1",
                      "-ar", "48000", "-f", "f32le", "pipe:1"], timeout_s=60, capture_stdout=True)
    return np.frombuffer(run.stdout, dtype="<f4")


def _loudness(path: Path) -> tuple[float, float]:
    """Integrated loudness (LUFS) and true peak (dBTP) by ffmpeg's ebur128 filter."""
    lines = run_ffmpeg(["-nostdin", "-i", str(path), "-map", "0:a:0", "-af", "ebur128=peak=true",
                        "-f", "null", "-"], timeout_s=60).stderr_lines
    summary = "\n".join(lines[max(i for i, line in enumerate(lines) if "Summary:" in line):])
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    peak = float(re.search(r"True peak:\s+Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1))
    return integrated, peak


def _band_energy(samples: np.ndarray, start_s: float, end_s: float, hz: float) -> float:
    """RMS amplitude of the ``hz`` component between two times (a single-bin DFT)."""
    chunk = samples[int(start_s * 48_000):int(end_s * 48_000)]
    t = np.arange(len(chunk)) / 48_000
    return float(abs(np.dot(chunk, np.exp(-2j * np.pi * hz * t))) * np.sqrt(2) / len(chunk))


def _check_stream(video: Path, output: Path) -> None:
    stream = _audio_stream(output)
    assert "aac" in stream and "48000 Hz" in stream and "stereo" in stream, stream
    picture = probe_media(video, exact=True)
    out = probe_media(output, exact=True)
    assert out.frame_count == picture.frame_count  # the picture copied, not re-timed
    assert abs(_audio_duration(output) - out.duration_s) <= 1 / FPS


def _scenes(durations: list[float]) -> tuple[list[float], float]:
    """Scene start times and the total length (scenes + a 1 s card), as the compositor plans."""
    timeline = plan_timeline(durations, ["cut"] * len(durations), 1.0, FPS)
    starts = [0.0] + [b / FPS for b in timeline.boundaries[:len(durations) - 1]]
    return starts, timeline.total_frames / FPS


@pytest.fixture
def media(tmp_path: Path):
    durations = [2.0, 1.5, 2.5]
    starts, total = _scenes(durations)
    video = _silent_video(tmp_path / "picture.mp4", total)
    # Lines at different rates and lengths, as a TTS model would give them.
    voices = [VoiceLine(_wav(tmp_path / f"voice{i}.wav", 1.0, VOICE_HZ, rate), start)
              for i, (start, rate) in enumerate(zip(starts, (16_000, 22_050, 24_000)))]
    music = _wav(tmp_path / "music.wav", 1.7, MUSIC_HZ, 32_000, amplitude=0.8, channels=2)
    return {"durations": durations, "starts": starts, "total": total, "video": video,
            "voices": voices, "music": music, "dir": tmp_path}


def test_voice_and_music_mix_is_broadcast_clean(media):
    output = media["dir"] / "ad.mp4"
    result = mix_sound(media["video"], output, voices=media["voices"], music_path=media["music"],
                       duration_s=media["total"], workdir=media["dir"] / "work")
    assert result.has_voice and result.has_music
    _check_stream(media["video"], output)
    integrated, peak = _loudness(output)
    assert abs(integrated - (-14.0)) <= 1.0
    assert peak <= -1.0
    samples = _samples(output)
    ends = [*media["starts"][1:], media["total"] - 1.0]
    for start, end in zip(media["starts"], ends):
        # Each scene's line is heard inside its own window (its first second).
        assert _band_energy(samples, start + 0.1, start + 0.9, VOICE_HZ) > 0.05
        # ...and is silent where it has ended, before the next scene starts.
        if end - start > 1.2:
            assert _band_energy(samples, start + 1.1, end - 0.05, VOICE_HZ) < 0.005
    # The music is ducked while the voice speaks and comes back between lines.
    under_voice = _band_energy(samples, 0.3, 0.9, MUSIC_HZ)
    between = _band_energy(samples, media["starts"][2] + 1.6, media["starts"][2] + 2.4, MUSIC_HZ)
    assert between > 2 * under_voice > 0


def test_music_without_voice_plays_throughout(media):
    output = media["dir"] / "ad.mp4"
    mix_sound(media["video"], output, voices=[], music_path=media["music"],
              duration_s=media["total"], workdir=media["dir"] / "work")
    _check_stream(media["video"], output)
    integrated, peak = _loudness(output)
    assert abs(integrated - (-14.0)) <= 1.0 and peak <= -1.0
    samples = _samples(output)
    # Looped past its 1.7 s, in every half second of the ad but the fades at either end.
    for start in np.arange(0.5, media["total"] - 1.0, 0.5):
        assert _band_energy(samples, start, start + 0.5, MUSIC_HZ) > 0.05


def test_no_voice_no_music_gives_a_silent_track(media):
    output = media["dir"] / "ad.mp4"
    result = mix_sound(media["video"], output, voices=[], music_path=None,
                       duration_s=media["total"], workdir=media["dir"] / "work")
    assert result.measured_lufs is None
    _check_stream(media["video"], output)
    assert np.max(np.abs(_samples(output))) == 0.0


def test_unreadable_music_fails_with_ffmpegs_reason(media):
    bogus = media["dir"] / "music.wav"
    bogus.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(SoundMixError, match="sound mix failed"):
        mix_sound(media["video"], media["dir"] / "ad.mp4", voices=[], music_path=bogus,
                  duration_s=media["total"], workdir=media["dir"] / "work")
