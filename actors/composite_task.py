"""The compositing work: download a job's scene clips, composite the ad, mix its sound. It runs
on the ``Compositor`` Serve deployment (``actors.compositor_deployment``), a long-lived worker
that is warm when a job gets there; the benchmarks also run it as a cold Ray task to compare.
Nothing here depends on where it runs: it takes everything it needs as arguments."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from actors.compositor import (CallToActionCard, CompositeResult, SceneClip, Timeline,
                               composite_video, plan_timeline)
from actors.sound_mix import VoiceLine, mix_sound
from coordinator.settings import Settings
from coordinator.storage import ObjectStore, make_object_store


@dataclass(frozen=True)
class ClipPlan:
    """One scene as the compositor needs it: where its clip is stored, and how to show it."""

    clip_key: str
    duration_s: float
    transition: str
    caption: str
    # How long the scene's voice-over line lasts (None: no voice); captions follow it.
    voice_duration_s: float | None = None
    # Where the line's WAV is stored (None: no voice); the sound pass starts it with the scene.
    voice_key: str | None = None


@dataclass(frozen=True)
class CompositeOutput:
    video_mp4: bytes
    thumbnail_jpg: bytes
    result: CompositeResult
    seconds: float  # wall time of compositing, for the cost ledger


# Re-runs after the compositing worker died (system failures only: an ffmpeg error is an answer).
COMPOSITE_RETRIES = 3


def composite(settings: Settings, clips: list[ClipPlan], cta: CallToActionCard, *,
              width: int, height: int, fps: int, music_key: str | None = None,
              objects: ObjectStore | None = None) -> CompositeOutput:
    """Downloads the scene clips, composites the ad (see ``actors.compositor``), mixes its
    sound (voice lines, ``music_key``'s bed; see ``actors.sound_mix``), and returns the MP4 and
    thumbnail bytes. Raises ``CompositorError`` (or ``SoundMixError``) with ffmpeg's reason.
    ``objects`` is the store to read from (a long-lived caller keeps one), else made here."""
    objects = objects or make_object_store(settings)
    workdir = Path(tempfile.mkdtemp(prefix="composite-"))
    try:
        scene_clips = []
        for index, clip in enumerate(clips):
            path = workdir / f"clip_{index:03d}.mp4"
            objects.download_to(clip.clip_key, path)
            scene_clips.append(SceneClip(clip_path=path, duration_s=clip.duration_s,
                                         transition=clip.transition, caption=clip.caption,
                                         voice_duration_s=clip.voice_duration_s))
        output, thumbnail = workdir / "video.mp4", workdir / "thumbnail.jpg"
        started = time.perf_counter()
        result = composite_video(scene_clips, cta, output, thumbnail, width=width, height=height,
                                 fps=fps, timeout_s=settings.ffmpeg_timeout_seconds,
                                 workdir=workdir)
        # The sound pass: the same timeline the compositor planned, so lines start with scenes.
        timeline = plan_timeline([c.duration_s for c in clips], [c.transition for c in clips],
                                 cta.duration_s, fps)
        music = None
        if music_key:
            music = workdir / "music.audio"
            objects.download_to(music_key, music)
        sounded = workdir / "ad.mp4"
        mix_sound(output, sounded, voices=_voice_lines(objects, clips, timeline, workdir),
                  music_path=music, duration_s=timeline.total_frames / fps, workdir=workdir,
                  timeout_s=settings.ffmpeg_timeout_seconds)
        result = replace(result, size_bytes=sounded.stat().st_size)
        return CompositeOutput(video_mp4=sounded.read_bytes(), thumbnail_jpg=thumbnail.read_bytes(),
                               result=result, seconds=time.perf_counter() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _voice_lines(objects: ObjectStore, clips: list[ClipPlan], timeline: Timeline,
                 workdir: Path) -> list[VoiceLine]:
    """The voice lines, downloaded, each starting at its scene's planned start (the frame the
    compositor's timeline cuts to it; captions start there too)."""
    fps = timeline.fps
    lines = []
    for index, clip in enumerate(clips):
        if clip.voice_key:
            path = workdir / f"voice_{index:03d}.wav"
            objects.download_to(clip.voice_key, path)
            start = timeline.boundaries[index - 1] / fps if index else 0.0
            lines.append(VoiceLine(wav_path=path, start_s=start))
    return lines
