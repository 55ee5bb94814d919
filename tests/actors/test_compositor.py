"""The compositor against the real bundled ffmpeg: what a user of the finished ad relies on."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import actors.compositor as compositor
from actors.compositor import (
    CallToActionCard,
    CompositorError,
    CompositorInputError,
    SceneClip,
    composite_video,
    encode_frames_to_mp4,
    extract_frame,
    ffmpeg_executable,
    plan_timeline,
    probe_media,
    render_caption_image,
)
from actors.caption_images import caption_safe_area, draw_caption
from actors.media_probe import MediaError
from tests.jobs_helpers import caption_match

FPS = 24
RED, GREEN, BLUE = (230, 30, 30), (30, 200, 60), (40, 60, 220)

HOSTILE_CAPTION = (
    "He said \"it's 100% real\": {price}; [in] %{pts} \\n \\\\ C:\\path\\ 'quote'\n"
    "drawtext=text=boom:fontfile=/etc/passwd,[out];  -vf  $(rm -rf /) `id` %d %s "
    "\u201csmart\u201d \u2014 caf\u00e9 na\u00efve \u00fcber \U0001f680\U0001f600 "
    "\u202eevil\u202c \x00\x07"
)


def _noise_frames(color, size=(64, 64), count=8, seed=0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    base = np.array(color, dtype=np.int16)[None, None, :]
    frames = []
    for _ in range(count):
        noise = rng.integers(-25, 25, (size[1], size[0], 3))
        frames.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)))
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Three 64x64, 8-frame, 8 fps clips: noisy red, green and blue."""
    folder = tmp_path_factory.mktemp("clips")
    paths = []
    for index, color in enumerate((RED, GREEN, BLUE)):
        path = folder / f"clip_{index}.mp4"
        encode_frames_to_mp4(_noise_frames(color, seed=index), 8, path, timeout_s=30)
        paths.append(path)
    return paths


def _decode_all(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(
        [ffmpeg_executable(), "-v", "error", "-i", str(path), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def _box_order(data: bytes) -> list[str]:
    """Top-level MP4 box types in file order."""
    order, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        elif size == 0:
            size = len(data) - offset
        order.append(kind)
        if size < 8:
            break
        offset += size
    return order


def _leftovers(*folders: Path) -> list[str]:
    return sorted(p.name for folder in folders for p in folder.iterdir() if "partial" in p.name)


def _composite(tmp_path: Path, scenes, cta=None, **kwargs):
    out, thumb = tmp_path / "out" / "ad.mp4", tmp_path / "out" / "thumb.jpg"
    options = {"width": 256, "height": 144, "fps": FPS, "timeout_s": 60,
               "workdir": tmp_path / "work"} | kwargs
    cta = cta or CallToActionCard("Shop now", "#102030", "#ffffff", 1.0)
    result = composite_video(scenes, cta, out, thumb, **options)
    return result, out, thumb


# ---- building blocks --------------------------------------------------------------------------


def test_encode_frames_to_mp4_writes_h264_with_every_frame(tmp_path, clips):
    info = probe_media(clips[0], exact=True)
    assert (info.video_codec, info.width, info.height, info.fps) == ("h264", 64, 64, 8.0)
    assert info.frame_count == 8 and info.duration_s == pytest.approx(1.0)
    assert not info.has_audio

    odd = tmp_path / "odd.mp4"
    encode_frames_to_mp4(_noise_frames(GREEN, size=(63, 47), count=3), 12, odd, timeout_s=30)
    info = probe_media(odd, exact=True)
    assert (info.width, info.height, info.frame_count) == (64, 48, 3)  # yuv420p needs even
    assert _leftovers(tmp_path) == []

    with pytest.raises(CompositorInputError):
        encode_frames_to_mp4(_noise_frames(RED, size=(32, 32), count=2)
                             + _noise_frames(RED, size=(16, 16), count=1), 8,
                             tmp_path / "mixed.mp4", timeout_s=30)
    assert not (tmp_path / "mixed.mp4").exists()


@pytest.mark.parametrize("durations,transitions", [
    ([2.0, 3.0, 2.5], ["cut", "cut", "cut"]),
    ([2.0, 3.0, 2.5], ["crossfade", "crossfade", "crossfade"]),
    ([2.3, 4.1, 5.97], ["crossfade", "fade", "cut"]),
    ([0.1, 0.05, 6.0], ["crossfade", "crossfade", "fade"]),  # too short for a full crossfade
])
def test_timeline_always_adds_up(durations, transitions):
    plan = plan_timeline(durations, transitions, 1.5, FPS)
    assert plan.total_frames == round((sum(durations) + 1.5) * FPS)
    # Joining gives back exactly the crossfade overlaps that were rendered in addition.
    assert sum(plan.rendered) - sum(plan.overlaps) == plan.total_frames
    for junction, overlap in enumerate(plan.overlaps):
        if overlap:
            # The blend is centred on the planned boundary.
            assert plan.offsets[junction] + overlap / 2 == pytest.approx(
                plan.boundaries[junction], abs=0.5)


def test_caption_rendering_survives_any_text(tmp_path):
    caption = draw_caption(HOSTILE_CAPTION * 5, 256, 144, tmp_path / "c.png")
    assert caption.position is not None and caption.truncated
    image = Image.open(tmp_path / "c.png")
    x, y = caption.position
    area = caption_safe_area(256, 144)
    assert image.mode == "RGBA" and area.left <= x and x + image.width <= area.right
    assert y >= 144 * 2 // 3 - 1 and y + image.height <= area.bottom
    # The caption fonts have no emoji: they are reported, not drawn as empty boxes.
    assert caption.uncovered == ["\U0001f680", "\U0001f600"]
    assert any("U+1F680 ROCKET" in note for note in caption.problems())
    # Nothing drawable: no overlay at all, and the reason is reported.
    empty = draw_caption("\U0001f680 \u200d\n\t", 256, 144, tmp_path / "e.png")
    assert empty.position is None and empty.uncovered == ["\U0001f680"]
    assert render_caption_image("\U0001f680", 256, 144, tmp_path / "e.png") is None


# ---- the composite ----------------------------------------------------------------------------


@pytest.mark.parametrize("size,durations,transitions", [
    ((256, 144), [2.0, 3.0, 2.5], ["cut", "cut", "cut"]),
    ((144, 256), [2.0, 3.0, 2.5], ["crossfade", "crossfade", "crossfade"]),
    ((160, 160), [2.3, 4.1, 3.05], ["crossfade", "fade", "cut"]),
], ids=["16x9-cuts", "9x16-crossfades", "1x1-mixed"])
def test_composite_size_duration_and_container(tmp_path, clips, size, durations, transitions):
    width, height = size
    scenes = [SceneClip(clip, d, t, f"Scene {i}: line")
              for i, (clip, d, t) in enumerate(zip(clips, durations, transitions))]
    cta = CallToActionCard("Order today", "#ffcc00", "#000000", 1.5)
    result, out, thumb = _composite(tmp_path, scenes, cta, width=width, height=height)

    expected = sum(durations) + 1.5
    two_frames = 2 / FPS
    info = probe_media(out, exact=True)
    assert info.video_codec == "h264" and not info.has_audio
    assert (info.width, info.height, info.fps) == (width, height, FPS)
    assert abs(info.duration_s - expected) <= two_frames, info
    assert abs(info.frame_count / FPS - expected) <= two_frames
    assert abs(result.duration_s - expected) <= two_frames
    assert (result.width, result.height) == (width, height)
    assert result.size_bytes == out.stat().st_size > 0

    # yuv420p, constant rate, faststart: the index (moov) precedes the media data (mdat).
    assert "yuv420p" in subprocess.run([ffmpeg_executable(), "-hide_banner", "-i", str(out)],
                                       capture_output=True, text=True).stderr
    boxes = _box_order(out.read_bytes())
    assert boxes.index("moov") < boxes.index("mdat"), boxes

    data = thumb.read_bytes()
    assert data[:3] == b"\xff\xd8\xff"
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and image.size == (width, height)
        centre = np.asarray(image.convert("RGB"))[height // 3: height // 2,
                                                    width // 2 - 8: width // 2 + 8]
    # The thumbnail is from the first (red) scene.
    red, green, blue = centre.reshape(-1, 3).mean(axis=0)
    assert red > 150 and green < 90 and blue < 90

    assert _leftovers(out.parent) == []
    assert list((tmp_path / "work").iterdir()) == []  # scratch images cleaned up


def test_clips_are_letterboxed_not_stretched(tmp_path, clips):
    scenes = [SceneClip(clips[1], 1.0, "cut", "")]
    _, out, _ = _composite(tmp_path, scenes)  # square clip into 16:9
    frame = np.asarray(extract_frame(out, 0.5)).astype(int)
    assert frame[:, :40].max() < 30 and frame[:, -40:].max() < 30  # black pillar bars
    middle = frame[:, 128 - 60: 128 + 60].reshape(-1, 3).mean(axis=0)
    assert middle[1] > 150 and middle[0] < 90


def test_hostile_caption_is_drawn_and_never_reaches_ffmpeg(tmp_path, clips, monkeypatch):
    seen_args: list[list[str]] = []
    real_run = compositor.run_ffmpeg

    def spy(args, **kwargs):
        seen_args.append(list(args))
        return real_run(args, **kwargs)

    monkeypatch.setattr(compositor, "run_ffmpeg", spy)
    cta = CallToActionCard(HOSTILE_CAPTION, "#000000", "#ffffff", 0.5)
    plain, _, _ = _composite(tmp_path / "plain", [SceneClip(clips[0], 1.0, "cut", "")], cta)
    hostile, out, thumb = _composite(
        tmp_path / "hostile", [SceneClip(clips[0], 1.0, "crossfade", HOSTILE_CAPTION)], cta)
    assert hostile.duration_s == pytest.approx(1.5, abs=2 / FPS)
    # What no caption font has (the emoji) is reported with the result, not lost silently.
    assert any("scene 0's caption" in note and "U+1F680" in note for note in hostile.warnings)
    assert plain.warnings and all("scene" not in note for note in plain.warnings)

    # Not a single client fragment appears in any ffmpeg argument (options, graph, paths).
    fragments = ["%{pts}", "[in]", "drawtext", "price", "rm -rf", "passwd", "quote", "Shop",
                 "caf", "evil", "smart", "\U0001f680", "\x00"]
    for args in seen_args:
        for arg in args:
            assert not any(fragment in arg for fragment in fragments), arg

    # ...yet the caption really is in the picture: bottom third changed, the rest did not.
    plain_frame = np.asarray(extract_frame(tmp_path / "plain" / "out" / "ad.mp4", 0.4), float)
    captioned = np.asarray(extract_frame(out, 0.4), float)
    difference = np.abs(plain_frame - captioned).mean(axis=2)
    assert difference[144 * 2 // 3:].mean() > 20
    assert difference[: 144 // 2].mean() < 3  # same clip, same frame above the caption
    # ...and it is the literal text: every solid text pixel of the caption drawn from the text
    # as given is bright in the frame, unlike those of the text as drawtext escaping would show.
    frame = np.asarray(extract_frame(out, 0.4).convert("L"))
    literal = caption_match(frame, HOSTILE_CAPTION, tmp_path)
    escaped = HOSTILE_CAPTION.replace("\\", "\\\\").replace("'", "\\'").replace(":", "\\:")
    assert literal >= 0.95 and caption_match(frame, escaped, tmp_path) <= literal - 0.1


def test_cta_card_carries_brand_colours(tmp_path, clips):
    cta = CallToActionCard("Get 20% off today", "#1a73e8", "#ffd500", 2.0)
    result, out, _ = _composite(tmp_path, [SceneClip(clips[0], 1.0, "fade", "Hi")], cta)
    frame = np.asarray(extract_frame(out, result.duration_s - 0.3)).astype(int)
    pixels = frame.reshape(-1, 3)
    assert np.abs(np.median(pixels, axis=0) - (0x1A, 0x73, 0xE8)).max() <= 6
    assert np.abs(frame[:10].reshape(-1, 3).mean(axis=0) - (0x1A, 0x73, 0xE8)).max() <= 6
    # The text is there, in the text colour, in the middle of the card.
    text_like = np.abs(pixels - (0xFF, 0xD5, 0x00)).max(axis=1) <= 40
    assert text_like.sum() > 500
    rows = np.nonzero(np.abs(frame - (0xFF, 0xD5, 0x00)).max(axis=2) <= 40)[0]
    assert abs(rows.mean() - 72) < 20  # vertically centred


@pytest.mark.parametrize("timeout_s,size", [(0.05, (640, 360)), (0.4, (1280, 720))])
def test_too_small_timeout_raises_and_leaves_nothing(tmp_path, clips, timeout_s, size):
    # 0.4 s at 720p: ffmpeg is killed while it is writing (the composite takes seconds).
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    scenes = [SceneClip(clip, 3.0, "crossfade", "Caption") for clip in clips]
    with pytest.raises(CompositorError, match=rf"timed out after {timeout_s:g} s"):
        _composite(tmp_path, scenes, timeout_s=timeout_s, width=size[0], height=size[1])
    assert not (out_dir / "ad.mp4").exists() and not (out_dir / "thumb.jpg").exists()
    assert _leftovers(out_dir) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "scrambled-frames", "empty"])
def test_corrupt_clip_raises_ffmpegs_reason_and_keeps_old_output(tmp_path, clips, damage):
    good = clips[0].read_bytes()
    mdat = good.find(b"mdat") + 8
    rng = np.random.default_rng(7)
    blob = {
        "garbage": rng.bytes(4000),
        "truncated": good[: (mdat + len(good)) // 2],
        "scrambled-frames": good[:mdat] + rng.bytes(len(good) - mdat),
        "empty": b"",
    }[damage]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(blob)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "ad.mp4").write_bytes(b"previous good render")
    scenes = [SceneClip(clips[0], 1.0, "crossfade", "ok"), SceneClip(bad, 1.0, "cut", "bad")]
    with pytest.raises(CompositorError) as caught:
        _composite(tmp_path, scenes, timeout_s=30)
    message = str(caught.value)
    assert "exit code" in message and "timed out" not in message
    assert any(reason in message for reason in
               ("Invalid data", "moov atom not found", "Invalid NAL", "corrupt"))
    assert "scene 1's clip" in message
    assert (out_dir / "ad.mp4").read_bytes() == b"previous good render"
    assert not (out_dir / "thumb.jpg").exists()
    assert _leftovers(out_dir) == []


@pytest.mark.parametrize("change,match", [
    ({"cta": CallToActionCard("x", "#12345", "#ffffff", 1.0)}, "background_color"),
    ({"cta": CallToActionCard("x", "#000000", "white;drawtext", 1.0)}, "text_color"),
    ({"transition": "wipe;drawtext"}, "unknown transition"),
    ({"duration_s": float("nan")}, "duration"),
    ({"width": 255}, "width"),
    ({"clip_path": Path("/nonexistent/clip.mp4")}, "does not exist"),
])
def test_invalid_requests_are_rejected_before_ffmpeg(tmp_path, clips, change, match):
    scene = {"clip_path": clips[0], "duration_s": 1.0, "transition": "cut", "caption": ""}
    options = {}
    cta = None
    for key, value in change.items():
        if key == "cta":
            cta = value
        elif key in scene:
            scene[key] = value
        else:
            options[key] = value
    with pytest.raises(CompositorInputError, match=match) as caught:
        _composite(tmp_path, [SceneClip(**scene)], cta, **options)
    assert isinstance(caught.value, ValueError)
    assert not (tmp_path / "out" / "ad.mp4").exists()


def test_probe_and_binary_failures_are_reported(tmp_path, monkeypatch, clips):
    not_video = tmp_path / "notes.txt"
    not_video.write_text("hello")
    with pytest.raises(MediaError, match="Invalid data"):
        probe_media(not_video)
    monkeypatch.setenv("FFMPEG_BINARY", str(tmp_path / "no-such-ffmpeg"))
    assert ffmpeg_executable() == str(tmp_path / "no-such-ffmpeg")
    with pytest.raises(CompositorError, match="cannot start ffmpeg"):
        _composite(tmp_path, [SceneClip(clips[0], 1.0, "cut", "")])


def test_many_scenes_with_odd_durations_add_up_to_the_frame(tmp_path, clips):
    rng = np.random.default_rng(3)
    durations = [round(float(d), 3) for d in rng.uniform(0.4, 2.0, 9)]
    transitions = ["cut", "crossfade", "fade", "crossfade", "crossfade", "cut", "fade",
                   "cut", "crossfade"]
    scenes = [SceneClip(clips[i % 3], d, t, f"Scene {i}")
              for i, (d, t) in enumerate(zip(durations, transitions))]
    result, out, _ = _composite(tmp_path, scenes, fps=30)
    info = probe_media(out, exact=True)
    assert info.frame_count == round((sum(durations) + 1.0) * 30)
    assert result.duration_s == pytest.approx(info.frame_count / 30, abs=1 / 30)


def test_run_ffmpeg_kills_on_timeout_and_on_cancel(monkeypatch):
    import _thread
    import threading

    import actors.media_probe as media_probe

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def tracking_popen(*args, **kwargs):
        process = real_popen(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(media_probe.subprocess, "Popen", tracking_popen)
    endless = ["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10",
               "-f", "null", "-"]
    with pytest.raises(MediaError, match=r"timed out after 0\.5 s"):
        media_probe.run_ffmpeg(endless, timeout_s=0.5)
    assert started[-1].poll() is not None  # killed, not left running

    # A cancelled task (here: KeyboardInterrupt in the waiting thread) also stops ffmpeg.
    # Python's own SIGINT handler raises it; a Ray driver started earlier in this process
    # (the session's) may have replaced that handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            media_probe.run_ffmpeg(endless, timeout_s=30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert started[-1].poll() is not None
