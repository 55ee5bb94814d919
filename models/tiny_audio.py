"""Tiny random-weight audio models of the real transformers classes, for CPU tests and laptops.

The audio counterpart of ``models.tiny``: a VITS text-to-speech model (``VitsModel`` with a
``VitsTokenizer`` whose character vocabulary is built here) and a MusicGen text-to-music model
(``MusicgenForConditionalGeneration``: a T5 text encoder, an EnCodec audio codec and the
MusicGen decoder, with a ``MusicgenProcessor``). Both are saved with ``save_pretrained`` and
loaded back by ``models.audio`` exactly as the production hub models are; nothing is downloaded.
Their output is noise, but real waveforms: lengths, sample rates, speakers and seeds all behave.

What each keeps from production, because ``models.audio`` depends on it:

- VITS: the stochastic duration predictor (so a line's length follows its text and the
  speaking rate), MMS-TTS' 16 kHz and its character tokenizer with blanks between characters;
  the tiny build has three speakers so named voices are exercised (MMS models have one).
- MusicGen: musicgen-small's 32 kHz mono EnCodec and four codebooks with the delay pattern,
  classifier-free guidance, sampling. The codec's hop is 3200 samples (10 codec frames a
  second, production: 640, 50 a second), so token-by-token decoding stays fast on a CPU.

Builds are saved under ``models_dir/"tiny-voice"`` and ``models_dir/"tiny-music"`` with
``models.tiny.ensure_saved`` (atomic build-and-rename, safe with several workers).
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    EncodecConfig,
    EncodecFeatureExtractor,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
    T5TokenizerFast,
    VitsConfig,
    VitsModel,
    VitsTokenizer,
)

from models import tiny

VOICE_DIR_NAME = "tiny-voice"
MUSIC_DIR_NAME = "tiny-music"
SEED = 0

VOICE_SAMPLE_RATE = 16_000  # MMS-TTS' rate
MUSIC_SAMPLE_RATE = 32_000  # musicgen-small's rate
# Characters the tiny voice speaks: what the MMS vocabularies of English, German, Spanish and
# French hold between them. Anything else is dropped by the tokenizer, as with MMS.
_VOICE_CHARACTERS = " '-,.?!abcdefghijklmnopqrstuvwxyz0123456789äöüßáéíóúñàèìòùâêîôûçëïüœ"
_MUSIC_CODEBOOKS = 4
# EnCodec's upsampling ratios multiply to the hop between codec frames: 3200 samples at 32 kHz.
_MUSIC_UPSAMPLING = [10, 10, 8, 4]
_MUSIC_CODEBOOK_SIZE = 2048  # musicgen-small's; with 2.2 kbps it makes four codebooks


class SavedTogether:
    """A model and its tokenizer or processor, saved into one directory as the hub holds them."""

    def __init__(self, model: Any, preprocessor: Any) -> None:
        self.model = model
        self.preprocessor = preprocessor

    def save_pretrained(self, directory: Path | str, **_options: Any) -> None:
        # Safetensors is transformers' default; audio models ship one set of weights (no variant).
        self.model.save_pretrained(directory)
        self.preprocessor.save_pretrained(directory)


def tiny_vits_tokenizer(language: str = "eng") -> VitsTokenizer:
    """An MMS-style character tokenizer (``<pad>`` between characters, lower-casing, unknown
    characters dropped) with its vocabulary built here."""
    vocab = {"<pad>": 0, "<unk>": 1}
    for character in _VOICE_CHARACTERS:
        vocab.setdefault(character, len(vocab))
    # VitsTokenizer only reads its vocabulary from a file.
    with tempfile.TemporaryDirectory(prefix="tiny-vits-vocab-") as workdir:
        path = Path(workdir) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False))
        return VitsTokenizer(vocab_file=str(path), language=language, add_blank=True,
                             normalize=True, phonemize=False)


def build_tiny_voice(num_speakers: int = 3) -> SavedTogether:
    """A ``VitsModel`` with small random weights (seeded) and its tokenizer."""
    tokenizer = tiny_vits_tokenizer()
    config = VitsConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=17,
        upsample_initial_channel=16,
        # Upsampling ratios multiply to the hop: 256 samples per spectrogram frame, as MMS.
        upsample_rates=[8, 8, 4],
        upsample_kernel_sizes=[16, 16, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        depth_separable_channels=2,
        depth_separable_num_layers=1,
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=1,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        num_speakers=num_speakers,
        speaker_embedding_size=8 if num_speakers > 1 else 0,
        sampling_rate=VOICE_SAMPLE_RATE,
        pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = VitsModel(config).eval()
    return SavedTogether(model, tokenizer)


def _t5_tokenizer() -> T5TokenizerFast:
    # The character-level T5 tokenizer of the LTX-Video twin, built the same way.
    characters = [c for c in string.printable if not c.isspace()]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{c}", -3.0) for c in characters] + [(c, -4.0) for c in characters]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def build_tiny_music() -> SavedTogether:
    """A ``MusicgenForConditionalGeneration`` with small random weights (seeded) and its
    processor (T5 tokenizer plus EnCodec feature extractor)."""
    tokenizer = _t5_tokenizer()
    text_encoder = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1,
                            num_heads=4, relative_attention_num_buckets=8,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    audio_encoder = EncodecConfig(
        sampling_rate=MUSIC_SAMPLE_RATE, audio_channels=1, hidden_size=16, num_filters=4,
        num_residual_layers=1, upsampling_ratios=_MUSIC_UPSAMPLING,
        codebook_size=_MUSIC_CODEBOOK_SIZE, codebook_dim=16, num_lstm_layers=1,
        target_bandwidths=[2.2], compress=2, normalize=False, use_causal_conv=False)
    # The decoder's extra token (one past the codebook) starts and pads sequences, as in
    # musicgen-small (2048).
    special = _MUSIC_CODEBOOK_SIZE
    decoder = MusicgenDecoderConfig(
        vocab_size=_MUSIC_CODEBOOK_SIZE, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        ffn_dim=64, num_codebooks=_MUSIC_CODEBOOKS, audio_channels=1, max_position_embeddings=2048,
        pad_token_id=special, bos_token_id=special, decoder_start_token_id=special)
    config = MusicgenConfig(text_encoder=text_encoder, audio_encoder=audio_encoder, decoder=decoder)
    config.decoder_start_token_id = special
    config.pad_token_id = special
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = MusicgenForConditionalGeneration(config).eval()
        # EnCodec's codebooks start at zero (training fills them by k-means), which would decode
        # every code to the same sound: give them random entries so different codes differ.
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    generation = model.generation_config
    generation.decoder_start_token_id = special
    generation.pad_token_id = special
    generation.bos_token_id = special
    generation.do_sample = True
    generation.guidance_scale = 3.0
    generation.max_length = 1500
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=MUSIC_SAMPLE_RATE,
                                                padding_value=0.0)
    return SavedTogether(model, MusicgenProcessor(feature_extractor=feature_extractor,
                                                  tokenizer=tokenizer))


def ensure_tiny_voice(models_dir: Path | str) -> Path:
    """Return ``models_dir/"tiny-voice"``, building and saving the model there if needed."""
    return tiny.ensure_saved(Path(models_dir), VOICE_DIR_NAME, build_tiny_voice)


def ensure_tiny_music(models_dir: Path | str) -> Path:
    """Return ``models_dir/"tiny-music"``, building and saving the model there if needed."""
    return tiny.ensure_saved(Path(models_dir), MUSIC_DIR_NAME, build_tiny_music)
