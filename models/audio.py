"""Loading a preset's audio models and calling them: the only place renderers' work meets the
transformers text-to-speech and text-to-music models.

``load_audio_models`` turns a preset's ``voice`` and ``music`` sections into ``AudioModels``
with two calls that take plain text, seeds and durations and return float waveforms:

- ``speak(text, language, voice, seed) -> (waveform, sample_rate)``: a line of voice-over by
  the language's VITS model (MMS-TTS in production). Lines longer than the preset's
  ``max_chars`` are split at sentence ends (then at commas, then between words), spoken piece
  by piece and joined with a short pause, so any length works within the model's reach.
- ``compose(prompt, duration_s, seed) -> (waveform, sample_rate)``: a bed of music by MusicGen,
  exactly ``duration_s`` long. A bed longer than the preset's ``max_duration_s`` (what the
  model makes in one go; MusicGen was trained on 30 s) repeats one piece, each repeat
  crossfaded into the last.

Waveforms are float32 numpy arrays in [-1, 1]: ``(samples,)`` for mono, ``(samples, channels)``
otherwise. The same text, voice, seed and preset give the same waveform on one machine: each
call seeds torch's generator (VITS and MusicGen sample from it) inside a forked RNG.

A language's voice model loads the first time a line in that language is asked for; the
default language's (and the music model) load with the preset.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoProcessor, MusicgenForConditionalGeneration, VitsModel, VitsTokenizer

from models import tiny_audio
from models.device import choose_device, choose_dtype
from models.presets import DEFAULT_VOICE, TINY_MODEL, MusicSpec, PresetError, RenderPreset, VoiceSpec

log = logging.getLogger(__name__)

# As models.pipelines: hub weights are cached under models_dir, seeds fit a signed 64-bit column.
HUB_CACHE_SUBDIR = "hub"
MAX_SEED = 2**63 - 1
# transformers renamed from_pretrained's ``torch_dtype`` to ``dtype`` in 4.56.
_DTYPE_OPTION = ("dtype" if tuple(int(part) for part in transformers.__version__.split(".")[:2]) >= (4, 56)
                 else "torch_dtype")
# Where a long line may be cut, best first: after a sentence, after a clause, between words.
_SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+")
_CLAUSE_END = re.compile(r"(?<=[,\u3001\uff0c])\s+")


class AudioError(ValueError):
    """A request the preset's audio models cannot serve (unknown language or voice, nothing
    speakable in the text, a preset without audio models). The caller's input, not a fault."""


class Speech:
    """A preset's text-to-speech models, one per language, loaded on first use."""

    def __init__(self, spec: VoiceSpec, models_dir: Path, device: str, preset: str) -> None:
        self.spec = spec
        self.models_dir = models_dir
        self.device = device
        self.dtype = choose_dtype(device, spec.dtype)
        self.preset = preset
        self._voices: dict[str, tuple[VitsModel, VitsTokenizer]] = {}
        # Loads and calls serialise: VITS samples from torch's global generator.
        self._lock = threading.Lock()

    def speak(self, text: str, language: str, voice: str | None, seed: int) -> tuple[np.ndarray, int]:
        """The line spoken in ``language`` by ``voice`` (None: the language's default voice)."""
        _check_seed(seed)
        language_spec = self.spec.languages.get(language)
        if language_spec is None:
            raise AudioError(f"preset {self.preset} has no voice for language {language!r}; "
                             f"languages: {', '.join(sorted(self.spec.languages))}")
        name = voice or language_spec.default_voice or DEFAULT_VOICE
        if name not in language_spec.voice_names:
            raise AudioError(f"preset {self.preset} has no voice {name!r} for {language}; "
                             f"voices: {', '.join(language_spec.voice_names)}")
        speaker_id = language_spec.voices.get(name)
        pieces = split_text(text, self.spec.max_chars)
        if not pieces:
            raise AudioError("the line is empty: there is nothing to speak")
        with self._lock:
            model, tokenizer = self._voice(language)
            sample_rate = model.config.sampling_rate
            pause = np.zeros(round(self.spec.pause_s * sample_rate), dtype=np.float32)
            spoken: list[np.ndarray] = []
            with torch.inference_mode(), _seeded(seed, self.device):
                for piece in pieces:
                    inputs = tokenizer(piece, return_tensors="pt")
                    # The tokenizer drops characters the model has no symbol for; a piece left
                    # with only the blanks it inserts has nothing to say.
                    if not bool((inputs["input_ids"] != tokenizer.pad_token_id).any()):
                        continue
                    inputs = {key: value.to(self.device) for key, value in inputs.items()}
                    if speaker_id is not None:
                        inputs["speaker_id"] = speaker_id
                    waveform = model(**inputs).waveform[0]
                    if spoken:
                        spoken.append(pause)
                    spoken.append(waveform.float().cpu().numpy())
        if not spoken:
            raise AudioError(f"the {language} voice of preset {self.preset} can speak none of "
                             f"the characters of this line")
        return np.clip(np.concatenate(spoken), -1.0, 1.0), sample_rate

    def load(self, language: str) -> None:
        """Loads ``language``'s model now (the preset's default language loads with it)."""
        with self._lock:
            self._voice(language)

    def _voice(self, language: str) -> tuple[VitsModel, VitsTokenizer]:
        if language not in self._voices:
            source, options = _source(self.spec.languages[language].model, self.models_dir,
                                      tiny_audio.ensure_tiny_voice)
            log.info("loading voice model %s for %s on %s as %s",
                     self.spec.languages[language].model, language, self.device, self.dtype)
            model = VitsModel.from_pretrained(source, **options, **{_DTYPE_OPTION: self.dtype})
            model = model.to(self.device).eval()
            model.speaking_rate = self.spec.speaking_rate
            if self.spec.noise_scale is not None:
                model.noise_scale = self.spec.noise_scale
            self._voices[language] = (model, VitsTokenizer.from_pretrained(source, **options))
        return self._voices[language]


class Music:
    """A preset's text-to-music model."""

    def __init__(self, spec: MusicSpec, models_dir: Path, device: str, preset: str) -> None:
        self.spec = spec
        self.device = device
        self.dtype = choose_dtype(device, spec.dtype)
        self.preset = preset
        source, options = _source(spec.model, models_dir, tiny_audio.ensure_tiny_music)
        log.info("loading music model %s on %s as %s", spec.model, device, self.dtype)
        self.model = MusicgenForConditionalGeneration.from_pretrained(
            source, **options, **{_DTYPE_OPTION: self.dtype}).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(source, **options)
        codec = self.model.config.audio_encoder
        self.sample_rate: int = codec.sampling_rate
        self.frame_rate: int = codec.frame_rate
        # The decoder's delay pattern offsets codebook k by k steps: that many extra tokens.
        self._delay = self.model.config.decoder.num_codebooks - 1
        longest = self._tokens(spec.max_duration_s)
        if longest > self.model.config.decoder.max_position_embeddings:
            raise PresetError(f"preset {preset}: music.max_duration_s {spec.max_duration_s} needs "
                              f"{longest} tokens; {spec.model} reads at most "
                              f"{self.model.config.decoder.max_position_embeddings}")
        self._lock = threading.Lock()

    def compose(self, prompt: str, duration_s: float, seed: int) -> tuple[np.ndarray, int]:
        """Music from ``prompt`` lasting exactly ``duration_s`` (to the sample)."""
        _check_seed(seed)
        if not 0 < duration_s <= 3600:
            raise AudioError(f"music duration must be above 0 and at most 3600 s, got {duration_s}")
        total = max(1, round(duration_s * self.sample_rate))
        piece_s = min(duration_s, self.spec.max_duration_s)
        with self._lock, torch.inference_mode(), _seeded(seed, self.device):
            inputs = self.processor(text=[prompt], padding=True, return_tensors="pt").to(self.device)
            audio = self.model.generate(**inputs, do_sample=True,
                                        guidance_scale=self.spec.guidance_scale or None,
                                        max_new_tokens=self._tokens(piece_s))
        # (batch, channels, samples) -> (samples,) or (samples, channels)
        piece = audio[0].float().cpu().numpy().T
        # The model makes a frame or so more than asked: the repeat period is exactly piece_s.
        piece = piece[:round(piece_s * self.sample_rate), 0] if piece.shape[1] == 1 else \
            piece[:round(piece_s * self.sample_rate)]
        # A DC offset is inaudible but eats headroom in the mix and clicks at loop seams.
        piece = piece - piece.mean(axis=0)
        crossfade = round(self.spec.crossfade_s * self.sample_rate)
        return np.clip(loop_to_length(piece, total, crossfade), -1.0, 1.0), self.sample_rate

    def _tokens(self, seconds: float) -> int:
        return math.ceil(seconds * self.frame_rate) + self._delay + 1


class AudioModels:
    """A preset's loaded voice and music models (either may be absent from the preset)."""

    def __init__(self, preset: RenderPreset, speech: Speech | None, music: Music | None) -> None:
        self.preset = preset
        self.speech = speech
        self.music = music

    def speak(self, text: str, language: str | None, voice: str | None,
              seed: int) -> tuple[np.ndarray, int]:
        """``text`` spoken in ``language`` (None: the preset's default) by ``voice``."""
        if self.speech is None:
            raise AudioError(f"preset {self.preset.name} has no voice model")
        return self.speech.speak(text, language or self.speech.spec.default_language, voice, seed)

    def compose(self, prompt: str, duration_s: float, seed: int) -> tuple[np.ndarray, int]:
        """Background music from ``prompt``, ``duration_s`` long."""
        if self.music is None:
            raise AudioError(f"preset {self.preset.name} has no music model")
        return self.music.compose(prompt, duration_s, seed)


def load_audio_models(preset: RenderPreset, models_dir: Path | str) -> AudioModels:
    """Load the preset's music model and its default language's voice on the chosen device."""
    models_dir = Path(models_dir)
    device = choose_device()
    transformers.utils.logging.disable_progress_bar()  # workers log to files
    speech = music = None
    if preset.voice is not None:
        speech = Speech(preset.voice, models_dir, device, preset.name)
        speech.load(preset.voice.default_language)
    if preset.music is not None:
        music = Music(preset.music, models_dir, device, preset.name)
    return AudioModels(preset, speech, music)


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars`` characters, cut at sentence ends where it
    can, else at commas, else between words (else, inside one overlong word, anywhere);
    short neighbours are joined again so the model gets whole phrases."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        for clause in [sentence] if len(sentence) <= max_chars else _CLAUSE_END.split(sentence):
            pieces.extend([clause] if len(clause) <= max_chars else _words(clause, max_chars))
    return _joined([piece for piece in pieces if piece], max_chars)


def _words(text: str, max_chars: int) -> list[str]:
    chunks: list[str] = []
    for word in text.split(" "):
        while len(word) > max_chars:
            chunks.append(word[:max_chars])
            word = word[max_chars:]
        if word:
            chunks.append(word)
    return _joined(chunks, max_chars)


def _joined(pieces: list[str], max_chars: int) -> list[str]:
    joined: list[str] = []
    for piece in pieces:
        if joined and len(joined[-1]) + 1 + len(piece) <= max_chars:
            joined[-1] = f"{joined[-1]} {piece}"
        else:
            joined.append(piece)
    return joined


def loop_to_length(piece: np.ndarray, total: int, crossfade: int) -> np.ndarray:
    """``piece`` repeated to ``total`` samples, each repeat faded in over the last ``crossfade``
    samples (equal-power), then cut to length."""
    if len(piece) >= total:
        return piece[:total]
    crossfade = min(crossfade, len(piece) // 2)
    shape = (crossfade,) + (1,) * (piece.ndim - 1)
    ramp = np.linspace(0.0, math.pi / 2, crossfade, dtype=np.float32).reshape(shape)
    fade_in, fade_out = np.sin(ramp), np.cos(ramp)
    out = piece.copy()
    while len(out) < total:
        if crossfade:
            out[-crossfade:] = out[-crossfade:] * fade_out + piece[:crossfade] * fade_in
        out = np.concatenate([out, piece[crossfade:]])
    return out[:total]


def _source(model: str, models_dir: Path, ensure_tiny) -> tuple[str | Path, dict[str, Any]]:
    """Where ``from_pretrained`` reads the model: the tiny build, or a hub id / local directory
    (downloads obey the usual ``HF_HUB_OFFLINE`` switch)."""
    if model == TINY_MODEL:
        return ensure_tiny(models_dir), {}
    return model, {"cache_dir": models_dir / HUB_CACHE_SUBDIR}


@contextmanager
def _seeded(seed: int, device: str) -> Iterator[None]:
    # VITS and MusicGen sample from torch's global generator (and CUDA's, on a GPU): seed both,
    # inside a fork so the process's own random state is untouched.
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= MAX_SEED:
        raise AudioError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
