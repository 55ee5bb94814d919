"""The offline planner: a storyboard written from the brief by rules, without a model.

It follows a classic ad arc of twelve beats (hook, problem, reveal, product in use, detail,
key message, lifestyle, result, shared moment, brand moment, hero shot, call to action) and
keeps the most important ones for the scene count asked: one scene is the call to action,
three are hook / product in use / call to action, five add the key message and the hero shot,
and so on. Everything is a pure function of the brief, so the same brief always gives the same
storyboard.

Brand restrictions: a text-to-image model does not understand "no X" (naming X tends to put X
in the picture), so a restricted term never appears in an image prompt or a description, not
even as an instruction to avoid it; visual elements that mention one are dropped and any
leftover occurrence is scrubbed. The terms are available as ``negative_prompt_terms`` for a
renderer that takes a negative prompt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from coordinator.planner.schema import (MIN_SCENE_SECONDS, AspectRatio, PlannedScene,
                                        PlanningBrief, PlanResult, ShotType, Storyboard,
                                        Transition)

MAX_SCRIPT_CHARS = 120
OFFLINE_MODEL = "offline"


# ---- durations ------------------------------------------------------------------------------

def allocate_durations(weights: Sequence[float], total_s: float,
                       min_s: float = MIN_SCENE_SECONDS) -> list[float]:
    """Splits ``total_s`` in proportion to ``weights``: every share at least ``min_s``, all but
    the last rounded to 0.1 s, the last taking the remainder so the sum is ``total_s``."""
    n = len(weights)
    if n == 0:
        raise ValueError("at least one scene is needed")
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        weights = [1.0] * n
    units_total = math.floor(total_s * 10 + 1e-6)  # tenths of a second
    min_units = round(min_s * 10)
    if units_total < n * min_units:
        raise ValueError(f"{total_s:g} s cannot hold {n} scenes of at least {min_s:g} s")
    # Proportional shares; a share below the minimum is pinned there and the rest re-shared.
    pinned: set[int] = set()
    while True:
        free = [i for i in range(n) if i not in pinned]
        remaining = units_total - min_units * len(pinned)
        weight = sum(weights[i] for i in free)
        ideal = {i: remaining * weights[i] / weight for i in free}
        short = {i for i, units in ideal.items() if units < min_units}
        if not short:
            break
        pinned |= short
    units = [min_units] * n
    for i, share in ideal.items():
        units[i] = math.floor(share + 1e-9)
    leftover = units_total - sum(units)
    # Largest remainders first; ties go to the earlier scene, so the result is deterministic.
    for i in sorted(ideal, key=lambda i: (-(ideal[i] - math.floor(ideal[i] + 1e-9)), i))[:leftover]:
        units[i] += 1
    durations = [u / 10 for u in units[:-1]]
    durations.append(round(total_s - sum(durations), 6))
    return durations


# A voice-over speaks about this many words a second (150 a minute, an unhurried ad read); a
# scene is sized to hold its line plus a pause where the total allows (the job actor lengthens
# a scene whose real spoken line is longer still).
WORDS_PER_SECOND = 2.5
LINE_PAUSE_S = 0.4


def spoken_seconds(script: str) -> float:
    """How long ``script`` takes to say, by the words-per-second rule (0 for no words)."""
    words = len(script.split())
    return words / WORDS_PER_SECOND + LINE_PAUSE_S if words else 0.0


def fit_spoken_lines(durations: Sequence[float], scripts: Sequence[str]) -> list[float]:
    """``durations`` with time moved to scenes too short for their line, from scenes with time
    to spare, in proportion to their planned share; the total stays. When the lines need more
    than the total, it is shared by what each line needs."""
    total = sum(durations)
    need = [max(spoken_seconds(script), MIN_SCENE_SECONDS) for script in scripts]
    if sum(need) >= total:
        return allocate_durations(need, total)
    pinned: set[int] = set()
    while True:
        free = [i for i in range(len(durations)) if i not in pinned]
        left = total - sum(need[i] for i in pinned)
        planned = sum(durations[i] for i in free)
        share = {i: left * durations[i] / planned for i in free}
        short = {i for i in free if share[i] < need[i]}
        if not short:
            break
        pinned |= short
    return allocate_durations([need[i] if i in pinned else share[i] for i in range(len(need))],
                              total)


# ---- text helpers ---------------------------------------------------------------------------

def _clip(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (with an ellipsis)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return (cut or text[: limit - 1]) + "…"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…" else text + "."


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _one_phrase(text: str) -> str:
    """``text`` without commas, which separate an image prompt's phrases (models.prompts)."""
    return re.sub(r"\s*,\s*", " ", text)


def _bare(text: str) -> str:
    """A phrase without its closing punctuation, for use inside a sentence."""
    return text.strip().rstrip(".!?;:,")


# ---- brand restrictions ----------------------------------------------------------------------

_LEADING_NEGATION = re.compile(
    r"^(?:please|never|avoid(?:ing)?|no|not|without|exclude|excluding|don'?t|do\s+not|must\s+not|"
    r"should\s+not|shouldn'?t|cannot|can'?t|any|the|a|an|show(?:ing)?|use|using|feature|"
    r"featuring|depict(?:ing)?|include|including|mention(?:ing)?|of|colou?rs?)\b[\s:,-]*",
    re.IGNORECASE)


_POSITIVE_RULE = re.compile(r"^(?:always|only|keep|ensure|make\s+sure|must(?!\s*not|n'?t))\b",
                            re.IGNORECASE)


def restriction_terms(brief: PlanningBrief) -> list[str]:
    """The things the brand rules out, as bare terms: "No alcohol" → "alcohol", "never show
    competitor logos" → "competitor logos". Longest first, so phrases go before their words."""
    terms: set[str] = set()
    for restriction in brief.brand_restrictions:
        for part in re.split(r"[;,/]|\band\b|\bor\b", restriction, flags=re.IGNORECASE):
            term = part.strip(" .!\"'")
            if _POSITIVE_RULE.match(term):
                continue  # "always show the logo" is a rule to follow, not a thing to leave out
            while True:
                shorter = _LEADING_NEGATION.sub("", term, count=1).strip(" .!\"'")
                if shorter == term:
                    break
                term = shorter
            if len(term) >= 2:
                terms.add(term.lower())
    return sorted(terms, key=lambda t: (-len(t), t))


def negative_prompt_terms(brief: PlanningBrief) -> str | None:
    """The restricted terms as a comma-separated negative prompt, or ``None`` without any."""
    terms = restriction_terms(brief)
    return ", ".join(terms) if terms else None


def _term_pattern(term: str) -> re.Pattern[str]:
    words = term.split()
    last = re.escape(words[-1])
    if len(words[-1]) > 3 and words[-1].endswith("s"):
        last = f"(?:{last}|{re.escape(words[-1][:-1])})"  # "logos" also catches "logo"
    body = r"\s+".join([re.escape(w) for w in words[:-1]] + [last + r"(?:e?s)?"])
    return re.compile(r"(?<![\w#])" + body + r"(?!\w)", re.IGNORECASE)


_DANGLING = re.compile(r"\s*\b(?:of|with|without|no|not|and|or|featuring|using|a|an|the|some|"
                       r"any|more)\s*(?=[,.;:]|$)", re.IGNORECASE)


class _Restrictions:
    def __init__(self, brief: PlanningBrief):
        self.patterns = [_term_pattern(t) for t in restriction_terms(brief)]

    def hits(self, text: str) -> bool:
        return any(p.search(text) for p in self.patterns)

    def scrub(self, text: str) -> str:
        """``text`` with every restricted term removed and the punctuation tidied."""
        if not self.patterns or not self.hits(text):
            return text
        for pattern in self.patterns:
            text = pattern.sub("", text)
        text = re.sub(r"\s+([,.;:!?])", r"\1", text)
        text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
        while True:  # words left dangling before a comma or the end: "with a," → ","
            tidier = _DANGLING.sub("", text)
            tidier = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", tidier)
            if tidier == text:
                break
            text = tidier
        text = re.sub(r"\s{2,}", " ", text)
        return text.strip(" ,;:")


def visual_elements(brief: PlanningBrief) -> list[str]:
    """The brief's visual elements without those that name a restricted thing (the brand's
    restriction wins over a request for a single ad)."""
    rules = _Restrictions(brief)
    return [e for e in brief.visual_elements if not rules.hits(e)]


def scrub_restricted(brief: PlanningBrief, scene: PlannedScene) -> PlannedScene:
    """``scene`` with the brand's restricted terms taken out of its description and image
    prompt (for scenes a model wrote; the offline planner never puts them in)."""
    rules = _Restrictions(brief)
    if not rules.patterns:
        return scene
    # Should nothing be left, a plain shot of the product stands in (never the original text).
    product = rules.scrub(brief.product) or "the product"
    return scene.model_copy(update={
        "description": rules.scrub(scene.description) or f"A shot of {product}.",
        "image_prompt": rules.scrub(scene.image_prompt) or f"{product}, {brief.style} style"})


# ---- colours, tone, framing ---------------------------------------------------------------

_COLOUR_NAMES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (0, 0, 0)), ("charcoal", (54, 69, 79)), ("grey", (128, 128, 128)),
    ("silver", (192, 192, 192)), ("white", (255, 255, 255)), ("ivory", (250, 245, 230)),
    ("beige", (225, 205, 170)), ("sand", (194, 178, 128)), ("brown", (120, 72, 40)),
    ("maroon", (128, 0, 32)), ("crimson", (200, 20, 60)), ("red", (230, 30, 40)),
    ("coral", (255, 127, 80)), ("orange", (255, 140, 0)), ("amber", (255, 191, 0)),
    ("gold", (212, 175, 55)), ("yellow", (255, 230, 40)), ("lime green", (160, 220, 50)),
    ("green", (40, 160, 70)), ("forest green", (34, 90, 40)), ("olive", (110, 115, 40)),
    ("mint", (160, 230, 190)), ("teal", (0, 128, 128)), ("turquoise", (64, 224, 208)),
    ("sky blue", (120, 190, 240)), ("blue", (30, 90, 220)), ("royal blue", (65, 80, 200)),
    ("navy", (15, 30, 80)), ("indigo", (75, 0, 130)), ("purple", (128, 40, 160)),
    ("lavender", (190, 170, 230)), ("magenta", (220, 30, 160)), ("pink", (245, 150, 190)),
    ("blush", (240, 200, 200)),
)


def colour_name(value: str) -> str:
    """A human name for a hex colour (the nearest of a small palette); names pass through."""
    match = re.fullmatch(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", value.strip())
    if not match:
        return value.strip()
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    r, g, b = (int(digits[i:i + 2], 16) for i in (0, 2, 4))

    def distance(rgb: tuple[int, int, int]) -> float:
        # Weighted for how the eye sees differences, good enough to name a colour.
        dr, dg, db = r - rgb[0], g - rgb[1], b - rgb[2]
        return 2 * dr * dr + 4 * dg * dg + 3 * db * db

    return min(_COLOUR_NAMES, key=lambda item: distance(item[1]))[0]


def _palette(brief: PlanningBrief) -> str:
    """The brand colours by name, as one short image-prompt phrase: "navy and gold palette".

    Names only: a text encoder reads "#1a2b3c" as a handful of meaningless tokens out of the
    few dozen it has. No commas: they separate the phrases an encoder's budget keeps or drops
    whole (``models.prompts``), and the palette must not lose half its colours."""
    names = list(dict.fromkeys(_one_phrase(colour_name(value)) for value in brief.brand_colors[:4]))
    names = [name for name in names if name]
    return f"{' and '.join(names)} palette" if names else ""


_TONE_LIGHTING: tuple[tuple[tuple[str, ...], str], ...] = (
    (("luxur", "premium", "elegan", "sophisticat", "refined", "exclusive", "upscale"),
     "soft directional lighting with rich shadows"),
    (("playful", "fun", "quirky", "cheer", "whimsical", "youthful", "friendly"),
     "bright high-key lighting"),
    (("bold", "energetic", "dynamic", "edgy", "exciting", "sport", "powerful", "intense"),
     "punchy high-contrast lighting"),
    (("calm", "warm", "natural", "authentic", "honest", "caring", "gentle", "cozy", "cosy",
      "organic", "relax"), "warm natural window light"),
    (("professional", "trust", "corporate", "confident", "clean", "modern", "minimal", "tech"),
     "clean even studio lighting"),
)
_DEFAULT_LIGHTING = "soft natural light"


def _tone_words(brief: PlanningBrief) -> list[str]:
    # The brand's tone comes first: it is the standing rule, the job's tone a nuance.
    words = []
    for tone in (brief.brand_tone, brief.tone):
        if tone and tone.lower() not in (w.lower() for w in words):
            words.append(tone)
    return words


def _lighting(brief: PlanningBrief) -> str:
    text = " ".join(_tone_words(brief)).lower()
    for keys, lighting in _TONE_LIGHTING:
        if any(key in text for key in keys):
            return lighting
    return _DEFAULT_LIGHTING


def _mood(brief: PlanningBrief) -> str:
    words = _tone_words(brief)
    return f"{' and '.join(_bare(w) for w in words)} mood" if words else ""


# Short on purpose: prompt encoders read only the first few dozen words.
_FRAMING = {
    AspectRatio.PORTRAIT: "vertical 9:16 composition",
    AspectRatio.LANDSCAPE: "wide 16:9 composition",
    AspectRatio.SQUARE: "square 1:1 centred composition",
}

SHOT_PHRASES = {
    ShotType.WIDE: "Wide establishing shot",
    ShotType.MEDIUM: "Medium shot",
    ShotType.CLOSE_UP: "Close-up",
    ShotType.EXTREME_CLOSE_UP: "Extreme close-up",
    ShotType.OVERHEAD: "Overhead top-down shot",
    ShotType.TRACKING: "Tracking shot",
    ShotType.PRODUCT: "Studio product shot",
}


# ---- the arc ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Beat:
    key: str
    priority: int  # 1 is kept first
    shot: ShotType
    weight: float  # share of the running time
    subject: str  # prompt subject; {audience} / {product}
    setting: str  # prompt setting
    description: str  # {audience} {product} {Audience} {Product} {key_message} {cta}
    script: str


# The arc in playing order; ``priority`` decides which beats a shorter ad keeps.
_ARC: tuple[_Beat, ...] = (
    _Beat("hook", 2, ShotType.WIDE, 1.0,
          "{audience} in a relatable everyday moment", "in a lively real-world setting",
          "Open on {audience} in a moment they know well, an instantly recognisable scene that "
          "grabs attention.", "{Audience}, ready for something better?"),
    _Beat("problem", 6, ShotType.MEDIUM, 1.0,
          "{audience} facing a small everyday frustration", "in a familiar setting",
          "A familiar frustration for {audience} sets up the need.", "We've all been there."),
    _Beat("reveal", 9, ShotType.CLOSE_UP, 0.9,
          "{product} entering the frame", "against a softly blurred background",
          "{Product} enters the frame in a clean, confident reveal.", "Meet {product}."),
    _Beat("in_use", 3, ShotType.TRACKING, 1.2,
          "{audience} using {product}", "in a natural everyday setting",
          "We follow {audience} using {product}, showing how naturally it fits into their day.",
          "{Product}, made for your every day."),
    _Beat("detail", 7, ShotType.EXTREME_CLOSE_UP, 0.8,
          "the details and textures of {product}", "with shallow depth of field",
          "An extreme close-up lingers on the details that make {product} stand out.",
          "Every detail, considered."),
    _Beat("benefit", 5, ShotType.MEDIUM, 1.1,
          "{audience} enjoying what {product} does for them", "in a bright, uplifting setting",
          "The payoff: {key_message}", "{key_message}"),
    _Beat("lifestyle", 8, ShotType.WIDE, 1.0,
          "{audience} relaxed and confident with {product}", "in an aspirational setting",
          "{Audience}, relaxed and confident, with {product} part of everyday life.",
          "More of what matters."),
    _Beat("result", 10, ShotType.TRACKING, 1.0,
          "{audience} moving through a better day with {product}", "in motion",
          "The camera follows {audience} through a better day, thanks to {product}.",
          "Feel the difference."),
    _Beat("shared", 12, ShotType.OVERHEAD, 1.0,
          "{product} being shared and enjoyed together", "on a styled table",
          "Seen from above, {product} is shared and enjoyed together.", "Better when shared."),
    _Beat("brand", 11, ShotType.OVERHEAD, 0.9,
          "a styled flat lay of {product} with props in the brand colours", "on a clean surface",
          "A styled overhead arrangement of {product} in the brand's colours.",
          "This is {product}."),
    _Beat("hero", 4, ShotType.PRODUCT, 1.0,
          "{product} as the hero centred on a clean pedestal", "in a minimal studio set",
          "Hero shot: {product} takes centre stage, beautifully lit.", "{Product}."),
    _Beat("cta", 1, ShotType.PRODUCT, 1.2,
          "{product} centred with generous empty space around it",
          "on a clean backdrop in the brand colours",
          "{Product} holds the frame as the call to action lands: {cta}", "{cta}"),
)

# Product-only studio shots: the brief's visual elements (often settings) would fight the set.
_STUDIO_BEATS = {"reveal", "detail", "hero", "cta"}
# Which beat says the key message out loud when the ad has no "benefit" scene.
_MESSAGE_CARRIERS = ("benefit", "hero", "in_use", "reveal", "hook", "cta")
# The transition into these beats is a crossfade; every other one is a cut.
_CROSSFADE_INTO = {"hero", "cta"}


def arc_for(scene_count: int) -> list[str]:
    """The beats an ad of ``scene_count`` scenes tells, in playing order."""
    if not 1 <= scene_count <= len(_ARC):
        raise ValueError(f"scene_count must be between 1 and {len(_ARC)}")
    kept = {b.key for b in sorted(_ARC, key=lambda b: b.priority)[:scene_count]}
    return [b.key for b in _ARC if b.key in kept]


def _beat(key: str) -> _Beat:
    return next(b for b in _ARC if b.key == key)


class _Writer:
    """Fills the beats' templates from one brief."""

    def __init__(self, brief: PlanningBrief):
        self.brief = brief
        self.rules = _Restrictions(brief)
        self.product = _clip(brief.product, 80) or "the product"
        audience = _bare(_clip(brief.target_audience, 80))
        self.audience = audience if audience and not self.rules.hits(audience) else "people"
        self.key_message = _bare(brief.key_message)
        self.cta = _bare(brief.call_to_action) or f"Discover {self.product}"
        # Visual elements that name a restricted thing are left out altogether.
        self.elements = visual_elements(brief)[:6]
        self.palette = _palette(brief)
        self.lighting = _lighting(brief)
        self.mood = _mood(brief)
        self.framing = _FRAMING[AspectRatio(brief.aspect_ratio)]

    def fill(self, template: str) -> str:
        return template.format(audience=self.audience, Audience=_capitalise(self.audience),
                               product=self.product, Product=_capitalise(self.product),
                               key_message=self.key_message, cta=self.cta)

    def description(self, beat: _Beat) -> str:
        template = beat.description
        if beat.key == "benefit" and not self.key_message:
            template = "The payoff: {product} makes the everyday better."
        return self.rules.scrub(_sentence(self.fill(template)))

    def script(self, beat: _Beat, carries_message: bool) -> str:
        if beat.key == "cta":
            if carries_message and self.key_message:
                both = f"{_sentence(self.key_message)} {_sentence(self.cta)}"
                if len(both) <= MAX_SCRIPT_CHARS:
                    return both
            return _clip(_sentence(self.cta), MAX_SCRIPT_CHARS)
        if carries_message and self.key_message:
            return _clip(_sentence(self.key_message), MAX_SCRIPT_CHARS)
        template = beat.script
        if beat.key == "benefit":
            template = "That's the {product} difference."
        if beat.key == "hook" and (len(self.audience) > 40 or self.audience == "people"):
            template = "Ready for something better?"
        return _clip(_sentence(self.fill(template)), MAX_SCRIPT_CHARS)

    def image_prompt(self, beat: _Beat, index: int) -> str:
        # Most important first: a prompt over its encoder's budget loses phrases from the end
        # (models.prompts), so the style and the brand palette follow the subject directly.
        parts = [_one_phrase(f"{SHOT_PHRASES[beat.shot]} of {self.fill(beat.subject)} {beat.setting}"),
                 _one_phrase(f"{_bare(self.brief.style)} style"), self.palette]
        if self.elements and beat.key not in _STUDIO_BEATS:
            # One element per scene in turn; the brand moment gathers a few as props.
            parts.append(", ".join(self.elements[:3]) if beat.key == "brand"
                         else self.elements[index % len(self.elements)])
        parts += [self.lighting, self.framing, self.mood]
        return self.rules.scrub(", ".join(p for p in parts if p))


def plan_offline(brief: PlanningBrief) -> PlanResult:
    """A storyboard for ``brief`` written by rules: deterministic, no model, no cost."""
    keys = arc_for(brief.scene_count)
    beats = [_beat(k) for k in keys]
    carrier = next(k for k in _MESSAGE_CARRIERS if k in keys)
    durations = allocate_durations([b.weight for b in beats], brief.total_duration_s)
    writer = _Writer(brief)
    scenes = []
    for i, beat in enumerate(beats):
        into_next = keys[i + 1] if i + 1 < len(keys) else None
        scenes.append(PlannedScene(
            description=writer.description(beat),
            script=writer.script(beat, carries_message=beat.key == carrier),
            shot_type=beat.shot,
            transition=Transition.CROSSFADE if into_next in _CROSSFADE_INTO else Transition.CUT,
            duration_s=durations[i],
            image_prompt=writer.image_prompt(beat, i),
        ))
    fitted = fit_spoken_lines([s.duration_s for s in scenes], [s.script for s in scenes])
    scenes = [s.model_copy(update={"duration_s": d}) for s, d in zip(scenes, fitted)]
    return PlanResult(storyboard=Storyboard(scenes=scenes), model=OFFLINE_MODEL,
                      prompt_tokens=0, completion_tokens=0)


# ---- re-planning one scene ----------------------------------------------------------------

# Most specific first: "extreme close-up" must win over "close-up".
_SHOT_WORDS: tuple[tuple[ShotType, re.Pattern[str]], ...] = tuple(
    (shot, re.compile(pattern, re.IGNORECASE)) for shot, pattern in (
        (ShotType.EXTREME_CLOSE_UP, r"\bextreme[\s_-]*close[\s_-]*ups?\b|\bmacro\b"),
        (ShotType.CLOSE_UP, r"\bclose[\s_-]*ups?\b|\bcloser\b"),
        (ShotType.OVERHEAD, r"\boverhead\b|\btop[\s-]*down\b|\bfrom above\b|\bbird'?s[\s-]*eye\b|"
                            r"\bflat[\s-]*lay\b"),
        (ShotType.TRACKING, r"\btracking\b|\bdolly\b|\bfollow(?:ing)? shot\b"),
        (ShotType.PRODUCT, r"\bproduct shot\b|\bpack[\s-]*shot\b|\bhero shot\b"),
        (ShotType.WIDE, r"\bwide\b|\bestablishing\b|\bzoom(?:ed)? out\b|\bpull(?:ed)? back\b"),
        (ShotType.MEDIUM, r"\bmedium\b|\bmid[\s-]*shot\b"),
    ))


def shot_type_from_feedback(feedback: str) -> ShotType | None:
    """The shot type a piece of feedback asks for, if it names one."""
    for shot, pattern in _SHOT_WORDS:
        if pattern.search(feedback):
            return shot
    return None


_IMPERATIVE = re.compile(
    r"^(?:(?:please|can you|could you|would you|i'?d like(?: to)?|i want(?: to)?|"
    r"we want(?: to)?|let'?s|try(?: to)?)\s+)*"
    r"(?:(?:make|render|show|turn|change)\s+(?:it|this|the\s+(?:scene|shot|image|picture|frame))"
    r"\s+(?:(?:look|feel|be|into)\s+)?(?:(?:more|a bit|a little)\s+)?)?",
    re.IGNORECASE)


def _without_shot_phrase(prompt: str) -> tuple[str, bool]:
    for phrase in sorted(SHOT_PHRASES.values(), key=len, reverse=True):
        if prompt.lower().startswith(phrase.lower() + " of "):
            return prompt[len(phrase) + 4:], True
    return prompt, False


def replan_scene_offline(brief: PlanningBrief, scene: PlannedScene, scene_idx: int,
                         feedback: str | None) -> PlannedScene:
    """``scene`` rewritten to follow ``feedback``: the feedback joins the description and goes
    right after the subject in the image prompt; the shot type changes only when the feedback
    names one; duration, transition and script stay. Without feedback the scene is returned as
    it is (a new render of it differs by its seed)."""
    if scene_idx < 0:
        raise ValueError("scene_idx must not be negative")
    rules = _Restrictions(brief)
    request = rules.scrub(_bare(" ".join((feedback or "").split())))
    if not request:
        return scene.model_copy()
    shot = shot_type_from_feedback(request) or scene.shot_type
    # The prompt wants the picture, not the request: "please make it warmer" → "warmer".
    visual = _IMPERATIVE.sub("", request).strip() or request
    visual = re.sub(r"^add(?:ing)?\b", "with", visual, flags=re.IGNORECASE)

    description = scene.description
    if request.lower() not in description.lower():
        description = f"{_sentence(_bare(description))} Revised: {_sentence(request)}"

    body, ours = _without_shot_phrase(scene.image_prompt)
    subject, _, rest = body.partition(", ")
    if visual.lower() not in body.lower():
        rest = f"{visual}, {rest}" if rest else visual
    body = f"{subject}, {rest}" if rest else subject
    if ours or shot != scene.shot_type:
        prompt = f"{SHOT_PHRASES[shot]} of {body}" if ours else f"{SHOT_PHRASES[shot]}, {body}"
    else:
        prompt = body
    return scene.model_copy(update={
        "description": rules.scrub(description),
        "image_prompt": rules.scrub(prompt),
        "shot_type": shot,
    })
