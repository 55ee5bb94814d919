"""The compositor's frame plan: how many frames each scene and the card get, where the
transitions fall, and when each caption shows.

Timing is planned in frames. Scene boundaries are ``round(cumulative seconds * fps)``, so
rounding never accumulates. A crossfade is an ``xfade`` centred on the planned boundary: the
outgoing scene is rendered longer by half the overlap, the incoming one starts half the
overlap early, and ``xfade`` takes the overlap back when joining them. "fade" (through black)
fades the outgoing scene out and the incoming one in, back to back. Either way the ad lasts
exactly ``sum(scene durations) + cta duration`` (to the frame). The last scene's transition
leads into the call-to-action card.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from actors.composite_errors import CompositorInputError

__all__ = ["CAPTION_HOLD_S", "CROSSFADE_S", "TRANSITIONS", "Timeline", "plan_timeline"]

TRANSITIONS = ("cut", "crossfade", "fade")
CROSSFADE_S = 0.5
# A voiced caption stays up this long after its line ends, so the last words can be read.
CAPTION_HOLD_S = 0.3


@dataclass(frozen=True)
class Timeline:
    """The frame plan.

    ``boundaries[k]`` is the frame where segment k (the scenes, then the CTA card) is planned
    to end. Junction k joins segment k to k+1:

    * ``cut``: back to back.
    * ``crossfade``: an ``xfade`` over ``overlaps[k]`` frames centred on ``boundaries[k]``
      (it starts at ``offsets[k]``), so half the blend lies on each side of the planned cut.
    * ``fade``: segment k fades out to black over its last ``fades[k]`` frames and segment
      k+1 fades in over its first ``fades[k]`` frames; no overlap, black at the boundary.

    Segment k is rendered ``rendered[k]`` frames long: its planned frames plus the half
    overlaps it lends to neighbouring crossfades, which ``xfade`` takes back when joining.
    """

    fps: int
    boundaries: list[int]
    rendered: list[int]
    kinds: list[str]
    overlaps: list[int]
    offsets: list[int]
    fades: list[int]

    @property
    def total_frames(self) -> int:
        return self.boundaries[-1]

    def planned(self, segment: int) -> int:
        """Frames between the segment's planned start and end."""
        return self.boundaries[segment] - (self.boundaries[segment - 1] if segment else 0)

    def lead_in(self, segment: int) -> int:
        """Frames the segment is rendered before its planned start (its share of the
        crossfade into it)."""
        return self.overlaps[segment - 1] // 2 if segment else 0

    def caption_frames(self, segment: int, voice_duration_s: float | None) -> tuple[int, int]:
        """The frames of a scene (counted from its first rendered frame, end excluded) that show
        its caption. Without a voice line: all of them, as the caption is the scene's text.
        With one: from the scene's planned start until the line ends plus
        ``CAPTION_HOLD_S``, never past the scene's planned end."""
        if voice_duration_s is None:
            return 0, self.rendered[segment]
        start = self.lead_in(segment)
        shown = math.ceil((voice_duration_s + CAPTION_HOLD_S) * self.fps)
        return start, start + max(1, min(self.planned(segment), shown))


def plan_timeline(durations: Sequence[float], transitions: Sequence[str], cta_duration_s: float,
                  fps: int, crossfade_s: float = CROSSFADE_S) -> Timeline:
    """Plans frame counts so the output is ``round((sum(durations) + cta) * fps)`` frames,
    whatever the transitions: a crossfade overlaps two segments that were each rendered
    longer by their share of the overlap, so joining them gives the time back exactly."""
    if len(durations) != len(transitions):
        raise CompositorInputError("one transition per scene is required")
    if not isinstance(crossfade_s, (int, float)) or not 0 <= crossfade_s < 60:
        raise CompositorInputError("crossfade_s must be between 0 and 60 seconds")
    boundaries: list[int] = []
    elapsed = 0.0
    for index, seconds in enumerate([*durations, cta_duration_s]):
        what = "call-to-action card" if index == len(durations) else f"scene {index}"
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                or not math.isfinite(seconds) or not 0 < seconds <= 3600:
            raise CompositorInputError(f"{what}: duration must be between 0 and 3600 seconds")
        elapsed += float(seconds)
        boundaries.append(round(elapsed * fps))
        previous = boundaries[-2] if len(boundaries) > 1 else 0
        if boundaries[-1] - previous < 1:
            raise CompositorInputError(f"{what}: duration {seconds:g} s is shorter than a frame")
    planned = [b - a for a, b in zip([0, *boundaries[:-1]], boundaries)]
    kinds: list[str] = []
    overlaps: list[int] = []
    fades: list[int] = []
    for index, transition in enumerate(transitions):
        kind = str(transition).strip().lower() if transition is not None else "cut"
        if kind not in TRANSITIONS:
            raise CompositorInputError(
                f"scene {index}: unknown transition (expected one of {', '.join(TRANSITIONS)})")
        # A transition takes at most half of either neighbour, so two never collide.
        room = min(planned[index], planned[index + 1]) // 2
        overlap = fade = 0
        if kind == "crossfade" and crossfade_s > 0:
            overlap = min(max(1, round(crossfade_s * fps)), room)
        elif kind == "fade" and crossfade_s > 0:
            fade = min(max(1, round(crossfade_s * fps / 2)), room)
        kinds.append(kind if overlap or fade else "cut")
        overlaps.append(overlap)
        fades.append(fade)
    before = [overlap // 2 for overlap in overlaps]  # blend frames before the boundary
    after = [overlap - half for overlap, half in zip(overlaps, before)]
    rendered = [frames + (after[k] if k < len(after) else 0) + (before[k - 1] if k else 0)
                for k, frames in enumerate(planned)]
    offsets = [boundary - half for boundary, half in zip(boundaries, before)]
    return Timeline(fps, boundaries, rendered, kinds, overlaps, offsets, fades)
