"""The audio models: the tiny text-to-speech and music twins load through the production loading
code and give real audio of the right rate and length; presets naming audio models are checked."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import torch
import yaml

from actors.audio_renderer import encode_wav
from models import tiny_audio, twins
from models.audio import AudioError, load_audio_models, loop_to_length, split_text
from models.presets import PRESETS_DIR, PresetError, RenderPreset, get_preset, load_preset_file
from models.twin_presets import twin_preset

LINE = "Grab a can of Lime Fizz. Zero sugar, all summer."


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The tiny models' matrices are too small to split across threads; on a busy shared CPU the
    # threads' spin-waiting made each call many times slower. Renderers run as Ray workers,
    # which get one thread per whole CPU they ask for (here: less than one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def audio(preset, models_dir):
    return load_audio_models(preset, models_dir)


def _windows_rms(waveform: np.ndarray, sample_rate: int, window_s: float = 0.25) -> list[float]:
    size = int(sample_rate * window_s)
    return [float(np.sqrt(np.mean(waveform[i:i + size] ** 2)))
            for i in range(0, len(waveform) - size + 1, size)]


def test_tiny_models_are_saved_as_the_hub_holds_them(audio, models_dir):
    # Loaded back by from_pretrained from what save_pretrained wrote, with tokenizer/processor.
    voice, music = models_dir / tiny_audio.VOICE_DIR_NAME, models_dir / tiny_audio.MUSIC_DIR_NAME
    assert {"config.json", "model.safetensors", "vocab.json", "tokenizer_config.json"} <= {
        path.name for path in voice.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {
        path.name for path in music.iterdir()}
    # A finished build is found, not rebuilt.
    assert tiny_audio.ensure_tiny_voice(models_dir) == voice
    assert tiny_audio.ensure_tiny_music(models_dir) == music


def test_speak_gives_a_mono_line_at_the_models_rate_that_follows_the_seed(audio):
    waveform, rate = audio.speak(LINE, "en", None, seed=3)
    assert rate == tiny_audio.VOICE_SAMPLE_RATE
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert 0.5 < len(waveform) / rate < 30
    assert np.abs(waveform).max() <= 1.0 and waveform.std() > 0
    again, _ = audio.speak(LINE, "en", None, seed=3)
    other, _ = audio.speak(LINE, "en", None, seed=4)
    assert np.array_equal(waveform, again)
    assert not np.array_equal(waveform[:len(other)], other[:len(waveform)])


def test_named_voices_and_languages_sound_different(audio):
    narrator, _ = audio.speak(LINE, "en", "narrator", seed=3)
    default, _ = audio.speak(LINE, "en", None, seed=3)
    warm, _ = audio.speak(LINE, "en", "warm", seed=3)
    assert np.array_equal(narrator, default)  # the preset's default voice
    assert not np.array_equal(narrator[:len(warm)], warm[:len(narrator)])
    german, _ = audio.speak("Jetzt zugreifen: süß und spritzig.", "de", "bright", seed=3)
    assert len(german) > 0


def test_a_long_line_is_spoken_whole_in_pieces(audio, preset):
    long_line = " ".join([LINE] * 12)  # several times the preset's max_chars
    assert len(long_line) > 3 * preset.voice.max_chars
    short, rate = audio.speak(LINE, "en", None, seed=1)
    spoken, _ = audio.speak(long_line, "en", None, seed=1)
    # Every piece is spoken (plus pauses between): far longer than one sentence's worth.
    assert len(spoken) / rate > 6 * len(short) / rate


@pytest.mark.parametrize("language, voice, text, message", [
    ("xx", None, LINE, "no voice for language 'xx'"),
    ("en", "robot", LINE, "no voice 'robot'"),
    ("en", None, "   ", "nothing to speak"),
    ("en", None, "日本語のテキスト", "can speak none of the characters"),
])
def test_speak_refuses_what_the_preset_cannot_say(audio, language, voice, text, message):
    with pytest.raises(AudioError, match=message):
        audio.speak(text, language, voice, seed=1)


@pytest.mark.parametrize("duration_s", [0.5, 1.3, 5.25])
def test_compose_gives_music_exactly_as_long_as_asked(audio, preset, duration_s):
    # 5.25 s is beyond the tiny preset's max_duration_s: the piece is looped with a crossfade.
    waveform, rate = audio.compose("upbeat summer pop", duration_s, seed=2)
    assert rate == tiny_audio.MUSIC_SAMPLE_RATE
    assert waveform.ndim == 1 and len(waveform) == round(duration_s * rate)
    assert np.abs(waveform).max() <= 1.0
    assert min(_windows_rms(waveform, rate)) > 0  # sound all the way through
    if duration_s > preset.music.max_duration_s:
        # Looped: after the first piece, the piece comes again (past the crossfade) unchanged.
        piece, fade = (round(seconds * rate) for seconds in (preset.music.max_duration_s,
                                                             preset.music.crossfade_s))
        assert np.array_equal(waveform[piece:2 * piece - fade], waveform[fade:piece])


def test_compose_follows_the_seed(audio):
    first, _ = audio.compose("calm piano", 1.0, seed=5)
    again, _ = audio.compose("calm piano", 1.0, seed=5)
    other, _ = audio.compose("calm piano", 1.0, seed=6)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_compose_refuses_a_duration_out_of_range(audio):
    for duration in (0, -1.0):
        with pytest.raises(AudioError, match="music duration"):
            audio.compose("x", duration, seed=1)


def test_split_text_keeps_every_word_within_the_limit():
    text = "First sentence here. " + "word, " * 40 + "x" * 90 + " The end!"
    pieces = split_text(text, 40)
    assert all(0 < len(piece) <= 40 for piece in pieces)
    assert "".join("".join(pieces).split()) == "".join(text.split())
    # Cut at the sentence end and between words; only the overlong word is cut inside.
    assert pieces[0].startswith("First sentence here. word,")
    assert [len(piece) for piece in pieces if "x" in piece][0] == 40


def test_loop_to_length_crossfades_repeats():
    piece = np.ones(100, dtype=np.float32)
    looped = loop_to_length(piece, 250, crossfade=20)
    assert len(looped) == 250
    # Equal-power crossfade of two equal signals never drops to silence.
    assert looped.min() > 0.99
    assert np.array_equal(loop_to_length(piece, 60, 20), piece[:60])


def test_wav_is_16_bit_pcm_at_the_models_rate():
    waveform = np.sin(np.linspace(0, 200, 8000, dtype=np.float32)) * 1.5  # clipped to [-1, 1]
    with wave.open(io.BytesIO(encode_wav(waveform, 16000))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (
            1, 2, 16000, 8000)
        pcm = np.frombuffer(wav.readframes(8000), dtype="<i2")
    assert pcm.max() == 32767 and pcm.min() == -32767
    stereo = np.zeros((10, 2), dtype=np.float32)
    with wave.open(io.BytesIO(encode_wav(stereo, 32000))) as wav:
        assert (wav.getnchannels(), wav.getnframes()) == (2, 10)


def test_twin_presets_speak_and_compose_through_the_same_loading_code(models_dir):
    name = "sdxl-turbo-svd"
    twin = RenderPreset.model_validate(twin_preset(get_preset(name), models_dir))
    twins.ensure_twins(models_dir, [name])
    models = load_audio_models(twin, models_dir)
    speech, rate = models.speak(LINE, "en", None, seed=1)  # MMS has one voice: "default"
    assert rate == 16000 and len(speech) > 0
    music, music_rate = models.compose("upbeat", 0.5, seed=1)
    assert len(music) == round(0.5 * music_rate)


def _variant(tmp_path, edit):
    data = yaml.safe_load((PRESETS_DIR / "tiny.yaml").read_text())
    data["name"] = "bad"
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["voice"].update(architecture="SpeechT5ForTextToSpeech"), "voice.architecture"),
    (lambda d: d["music"].update(architecture="AudioLDMPipeline"), "music.architecture"),
    (lambda d: d["voice"].update(default_language="it"), "default_language 'it' must be one of"),
    (lambda d: d["voice"]["languages"]["en"].update(default_voice="robot"), "default_voice must be one of"),
    (lambda d: d["voice"]["languages"].update({"English": {"model": "tiny"}}), "voice.languages"),
    (lambda d: d["music"].update(crossfade_s=5.0), "crossfade_s 5.0 must be at most half"),
    (lambda d: d["voice"].update(speed=1.2), "voice.speed"),
])
def test_presets_naming_unknown_audio_models_or_voices_are_refused(tmp_path, edit, expected):
    with pytest.raises(PresetError, match=expected):
        load_preset_file(_variant(tmp_path, edit))


def test_a_preset_without_audio_models_is_silent_not_invalid(tmp_path, models_dir):
    def drop(data):
        del data["voice"], data["music"]

    preset = load_preset_file(_variant(tmp_path, drop))
    models = load_audio_models(preset, models_dir)
    with pytest.raises(AudioError, match="no voice model"):
        models.speak(LINE, None, None, seed=1)
    with pytest.raises(AudioError, match="no music model"):
        models.compose("x", 1.0, seed=1)
