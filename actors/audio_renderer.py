"""The audio renderer: a Serve deployment holding the voice and music models of a few presets
(``actors.model_shelf``: Serve routes each preset to a replica holding it). It speaks a scene's
line of voice-over and composes the ad's bed of music, and returns each as a 16-bit PCM WAV.

Requests take turns on the models by priority and per-user round robin, one at a time: the
models are small next to the image and video ones, and one call at a time keeps a GPU share's
memory bounded."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.util import metrics

from actors.messages import MusicRequest, MusicResult, VoiceRequest, VoiceResult
from actors.model_shelf import ModelShelf
from actors.placement import MODELS_PER_REPLICA
from actors.render_queue import RenderQueue
from actors.render_sharing import SharedRenders
from models.audio import AudioError, AudioModels, load_audio_models
from models.presets import RenderPreset, default_preset_name

log = logging.getLogger(__name__)

WARM_UP_LINE = "Warm up."
WARM_UP_MUSIC_S = 0.5


@serve.deployment(name="AudioRenderer", max_ongoing_requests=16, health_check_period_s=5)
class AudioRenderer:
    async def __init__(self, models_dir: str, preload: list[str] | None = None,
                       max_models: int = MODELS_PER_REPLICA["local"]["AudioRenderer"]):
        """Loads the default preset's audio models (or the first of ``preload``, then the rest,
        up to ``max_models``), speaks and composes once, before taking traffic."""
        self.models = ModelShelf[AudioModels](load_audio_models, _warm_up, Path(models_dir),
                                              "audio", max_models)
        # A job actor's next incarnation re-sends its requests: they are adopted, not redone.
        self._shared = SharedRenders(keep=64)
        self._queue_depth = metrics.Gauge(
            "renderfarm_renderer_queue_depth", "Requests waiting for a renderer's pipeline",
            tag_keys=("preset", "kind"))
        self._turn = RenderQueue(slots=1, on_depth=lambda preset, waiting: self._queue_depth.set(
            waiting, tags={"preset": preset, "kind": "audio"}))
        self._audio_seconds = metrics.Histogram(
            "renderfarm_audio_seconds", "Time to speak one line or compose one bed of music",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120], tag_keys=("preset", "what"))
        names = preload or [default_preset_name()]
        await self.models.warm_up(names[0])
        for name in names[1:]:
            async with self.models.use(name):
                pass

    async def speak(self, request: VoiceRequest) -> VoiceResult:
        """One line of voice-over as a mono WAV. ``AudioError`` (a ``ValueError``) for a language
        or voice the preset lacks, or a line with nothing speakable."""
        return await self._shared.run(request, lambda: self._speak(request))

    async def compose_music(self, request: MusicRequest) -> MusicResult:
        """A bed of music exactly ``duration_s`` long, as a WAV."""
        return await self._shared.run(request, lambda: self._compose(request))

    def model_state(self) -> dict[str, Any]:
        """This replica's presets (``ModelShelf.state``)."""
        return {"replica": serve.get_replica_context().replica_tag, **self.models.state()}

    def queue_state(self) -> dict[str, Any]:
        """The admission queue: slots, busy, waiting, and recent events labelled by seed."""
        return self._turn.state()

    def reconfigure(self, user_config: dict) -> None:
        """The priority-aging knob from the Serve config's ``user_config``."""
        if "priority_aging_s" in user_config:
            self._turn.configure(aging_s=float(user_config["priority_aging_s"]))

    async def _speak(self, request: VoiceRequest) -> VoiceResult:
        waveform, rate, elapsed = await self._run(
            request, "voice", lambda model: model.speak(request.text, request.language,
                                                       request.voice, request.seed))
        wav = await asyncio.to_thread(encode_wav, waveform, rate)
        return VoiceResult(wav=wav, seconds=elapsed, duration_s=len(waveform) / rate)

    async def _compose(self, request: MusicRequest) -> MusicResult:
        waveform, rate, elapsed = await self._run(
            request, "music", lambda model: model.compose(request.prompt, request.duration_s,
                                                         request.seed))
        wav = await asyncio.to_thread(encode_wav, waveform, rate)
        return MusicResult(wav=wav, seconds=elapsed, duration_s=len(waveform) / rate)

    async def _run(self, request: VoiceRequest | MusicRequest, what: str,
                   call) -> tuple[np.ndarray, int, float]:  # noqa: ANN001
        # The model is loaded (or found) before the request queues, so a load holds up only
        # the requests of its own preset; the clock starts at its turn (device time is billed).
        async with self.models.use(request.preset) as model:
            async with self._turn.turn(request.priority, request.owner, label=request.seed,
                                       group=request.preset):
                started = time.perf_counter()
                # Synthesis blocks for its whole length: off the event loop, so health checks
                # and new requests are still answered.
                waveform, rate = await asyncio.to_thread(call, model)
                elapsed = time.perf_counter() - started
                self.models.note(f"{what}_rendered", request.preset)
        self._audio_seconds.observe(elapsed, tags={"preset": request.preset, "what": what})
        return waveform, rate, elapsed

    def check_health(self) -> None:
        if not self.models:
            raise RuntimeError("the default audio models are not loaded and warmed up yet")


def encode_wav(waveform: np.ndarray, sample_rate: int) -> bytes:
    """A float waveform in [-1, 1], ``(samples,)`` or ``(samples, channels)``, as a 16-bit PCM WAV."""
    frames = waveform.reshape(len(waveform), -1)
    pcm = np.round(np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _warm_up(model: AudioModels, preset: RenderPreset) -> None:
    """One short line and a moment of music: the first real request pays no one-off costs."""
    if model.speech is not None:
        model.speak(WARM_UP_LINE, None, None, 0)
    if model.music is not None:
        model.compose("warm-up", WARM_UP_MUSIC_S, 0)


__all__ = ["AudioError", "AudioRenderer", "encode_wav"]
