"""The audio renderer on a real local Ray and Serve, with the tiny audio models: it answers
``speak`` and ``compose_music`` as the job actor calls them (the preset as Serve's multiplexed
model id), returns 16-bit PCM WAVs as long as it says, loads another preset's models beside
the default's, and refuses what a preset cannot say. One replica deployed on its own, with the
placement the farm gives it (the farm's job tests call it through the job flow)."""

from __future__ import annotations

import io
import wave

import pytest
from ray import serve

from actors.messages import MusicRequest, MusicResult, VoiceRequest, VoiceResult
from actors.placement import make_placement
from models.presets import GPU_PRESET
from models.twin_presets import twin_preset_name
from models.twins import ensure_twins

pytestmark = pytest.mark.ray

APP = "audio-renderer"
LINE = "Grab a can of Lime Fizz. Zero sugar, all summer."


@pytest.fixture(scope="module")
def audio(ray_session):
    from actors.audio_renderer import AudioRenderer

    placement = make_placement("local")
    handle = serve.run(AudioRenderer.options(**placement.deployments["AudioRenderer"]).bind(
        str(ray_session["models_dir"]), max_models=placement.models_per_replica["AudioRenderer"]),
        name=APP, route_prefix=None)
    yield handle
    serve.delete(APP)


def _call(handle, method: str, request):
    routed = handle.options(multiplexed_model_id=request.preset)  # as the job actor routes
    return getattr(routed, method).remote(request).result(timeout_s=180)


def _wav(data: bytes) -> tuple[int, int, int, int]:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()


def test_speak_returns_the_line_as_a_mono_16_bit_wav(audio):
    result = _call(audio, "speak", VoiceRequest(preset="tiny", text=LINE, language="en",
                                                voice="warm", seed=11))
    assert isinstance(result, VoiceResult)
    channels, width, rate, frames = _wav(result.wav)
    assert (channels, width, rate) == (1, 2, 16000)
    assert result.duration_s == pytest.approx(frames / rate) and result.duration_s > 0.5
    assert result.seconds > 0


def test_compose_music_returns_a_bed_exactly_as_long_as_asked(audio):
    # Longer than the tiny preset's 2 s window: looped inside the replica.
    result = _call(audio, "compose_music", MusicRequest(preset="tiny", prompt="upbeat summer pop",
                                                        duration_s=4.5, seed=12))
    assert isinstance(result, MusicResult)
    channels, width, rate, frames = _wav(result.wav)
    assert (channels, width, rate, frames) == (1, 2, 32000, 4.5 * 32000)
    assert result.duration_s == 4.5


def test_a_language_the_preset_lacks_is_refused_with_its_languages(audio):
    with pytest.raises(ValueError, match="no voice for language 'it'.*de, en, es, fr"):
        _call(audio, "speak", VoiceRequest(preset="tiny", text=LINE, language="it", voice=None,
                                           seed=13))


def test_another_presets_models_load_beside_the_default(audio, ray_session):
    twin = twin_preset_name(GPU_PRESET)  # MMS-TTS and MusicGen twins, written by conftest
    ensure_twins(ray_session["models_dir"], [GPU_PRESET])
    result = _call(audio, "speak", VoiceRequest(preset=twin, text=LINE, language="de", voice=None,
                                                seed=14))
    assert _wav(result.wav)[2] == 16000
    state = audio.model_state.remote().result(timeout_s=30)
    assert state["kind"] == "audio" and sorted(state["loaded"]) == sorted(["tiny", twin])


def test_the_audio_renderer_fits_beside_the_others_and_shares_a_gpu_on_the_cluster(monkeypatch):
    monkeypatch.delenv("RENDERFARM_RENDER_GPUS", raising=False)  # as on the cluster's nodes
    # On this 2-core machine: both renderers, the audio renderer and the compositor at once.
    local = make_placement("local", render_gpus=0, cluster_resources={"CPU": 2})
    wanted = sum(local.deployments[name]["ray_actor_options"]["num_cpus"]
                 for name in ("ImageRenderer", "ClipRenderer", "AudioRenderer", "Compositor"))
    assert wanted <= 2
    # On the cluster: a fraction of a GPU node's card, never the head (no coordinator sliver).
    cluster = make_placement("cluster", render_gpus=None,
                             cluster_resources={"CPU": 16, "GPU": 1, "coordinator": 1000})
    options = cluster.deployments["AudioRenderer"]["ray_actor_options"]
    assert 0 < options["num_gpus"] < 1 and "resources" not in options
