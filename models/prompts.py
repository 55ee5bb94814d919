"""Fitting a prompt to the text encoder that reads it.

CLIP text encoders read 77 tokens (BOS and EOS included) and T5 encoders as many as the
pipeline's ``max_sequence_length``; diffusers cuts everything after that, and what goes first
is what gets cut last. The farm's prompts are comma-separated phrases in order of importance:
the subject and setting, then the style, the brand palette, visual elements, lighting,
composition and mood (see ``coordinator.planner.offline``), then the preset template's
quality words. ``fit_prompt`` makes such a prompt fit by the encoder's own tokenizer:

* a prompt that fits is used exactly as given;
* otherwise the phrases after the subject are kept in order while they fit, and the first one
  that does not fit is dropped whole with every phrase after it;
* the subject is never dropped: it keeps at least a third of the budget (cut at a word
  boundary if longer), so the style and palette right after it always have room, and gets back
  whatever room the kept phrases leave.

Nothing is dropped silently: the result says what was left out, and the caller logs it.
This module imports no model code; a tokenizer is anything callable like a transformers one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

PHRASE_SEPARATOR = ", "
# The subject keeps at least this share of the budget when later phrases compete for room.
SUBJECT_SHARE = 1 / 3

TokenCounter = Callable[[str], int]
_DANGLING_WORDS = frozenset("a an and as at by for from in into of on or the to using with".split())


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt as the encoder will read it, and what had to go to get there."""

    text: str
    tokens: int  # as the encoder counts them, special tokens included
    budget: int
    dropped: tuple[str, ...] = ()  # whole phrases left out, most important first
    cut: str = ""  # words cut from the end of the subject

    @property
    def changed(self) -> bool:
        return bool(self.dropped or self.cut)

    def summary(self) -> str:
        """What was left out, for a log line an operator can read."""
        parts = []
        if self.dropped:
            parts.append("dropped " + "; ".join(repr(phrase) for phrase in self.dropped))
        if self.cut:
            parts.append(f"cut {self.cut!r} from the subject")
        return ", ".join(parts) or "nothing left out"


def token_counter(tokenizers: Sequence[Any], budget: int) -> TokenCounter:
    """Counts tokens as the strictest of ``tokenizers`` does (SDXL has two CLIP tokenizers).

    Counting stops just past ``budget``: that is enough to know a text is too long, and keeps
    the tokenizer from warning about sequences longer than its model takes."""
    def count(text: str) -> int:
        return max(len(tokenizer(text, truncation=True, max_length=budget + 1).input_ids)
                   for tokenizer in tokenizers)
    return count


class PromptFitter:
    """Fits prompts to one pipeline's text encoder(s), logging whatever had to be left out."""

    def __init__(self, tokenizers: Sequence[Any], budget: int, encoder: str) -> None:
        self.budget = budget
        self.encoder = encoder  # named in the log line, e.g. "CLIPTextModel"
        # Without a tokenizer (image-only models) there is nothing to fit.
        self._count = token_counter(tokenizers, budget) if tokenizers else None

    def fit(self, prompt: str, what: str = "prompt") -> str:
        """``prompt`` as it fits the encoder; a warning names what was left out."""
        if self._count is None:
            return prompt
        fitted = fit_prompt(prompt, self._count, self.budget)
        if fitted.changed:
            log.warning("%s is longer than the %d tokens %s reads: %s; kept %r", what,
                        self.budget, self.encoder, fitted.summary(), fitted.text)
        return fitted.text


def split_phrases(prompt: str) -> list[str]:
    """The prompt's comma-separated phrases, stripped, empty ones left out."""
    return [phrase for phrase in (part.strip() for part in prompt.split(",")) if phrase]


def fit_prompt(prompt: str, count: TokenCounter, budget: int) -> FittedPrompt:
    """``prompt`` made to fit ``budget`` tokens as counted by ``count`` (see the module doc)."""
    if budget < 3:
        raise ValueError(f"a token budget of {budget} leaves no room for a prompt")
    tokens = count(prompt)
    if tokens <= budget:
        return FittedPrompt(prompt, tokens, budget)
    subject, *rest = split_phrases(prompt) or [prompt.strip()]
    words = subject.split()

    def text(subject_words: int, phrases: list[str]) -> str:
        return PHRASE_SEPARATOR.join([" ".join(words[:subject_words]), *phrases])

    # The subject's guaranteed share first, then the phrases after it in order while they fit.
    floor = _longest_prefix(len(words), lambda n: count(text(n, [])) <= max(3, int(budget * SUBJECT_SHARE)))
    floor = max(floor, 1)  # a first word longer than the share still goes in (cut below if need be)
    kept: list[str] = []
    for phrase in rest:
        if count(text(floor, [*kept, phrase])) > budget:
            break
        kept.append(phrase)
    dropped = tuple(rest[len(kept):])
    # The subject takes back whatever room the kept phrases leave.
    subject_words = _longest_prefix(len(words), lambda n: count(text(n, kept)) <= budget)
    if subject_words == 0:  # one word longer than the whole budget: cut it by characters
        word = words[0]
        chars = _longest_prefix(len(word), lambda n: count(word[:n]) <= budget)
        fitted, cut = word[:chars], " ".join([word[chars:], *words[1:]])
    else:
        # A cut subject should not end on "of" or "with", which only point at what was cut.
        while subject_words > 1 and words[subject_words - 1].lower() in _DANGLING_WORDS:
            subject_words -= 1
        fitted, cut = text(subject_words, kept), " ".join(words[subject_words:])
    return FittedPrompt(fitted, count(fitted), budget, dropped, cut)


def _longest_prefix(limit: int, fits: Callable[[int], bool]) -> int:
    """The largest n in 0..limit with ``fits(n)``, for a ``fits`` true up to a point (bisection)."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low
