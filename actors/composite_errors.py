"""The compositor's errors, shared by its modules (images, timeline, ffmpeg graph)."""

from __future__ import annotations

from actors.media_probe import MediaError


class CompositorError(MediaError):
    """Compositing failed: ffmpeg's reason, a time limit, or unusable input."""


class CompositorInputError(CompositorError, ValueError):
    """The request itself is invalid (bad duration, colour, transition, size...)."""
