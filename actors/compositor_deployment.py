"""Compositing as a Serve deployment: a long-lived worker, started with the farm, that already
has the compositor, the fonts, PIL and the object store client loaded and ffmpeg located when a
job's clips are done. (A Ray task per job started a new worker process for each video.)

Each call runs ``actors.composite_task.composite`` in a thread, so the replica's event loop keeps
answering health checks and cancels. A replica composites one video at a time
(``max_ongoing_requests`` in ``actors.placement``): ffmpeg's encode already uses up to 4
threads, more than the CPU share a replica reserves, so a second video beside it would only
slow both down; waiting calls queue in Serve's router, where another replica can take them.

Faults are the caller's to ride out: when a replica dies mid-video, Serve starts a new one and
the job actor calls again (``actors.steps.call_renderer``), from the stored clips, so no clip is
rendered again. A cancelled call stops its ffmpeg at once.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import psutil
from ray import serve

from actors.caption_images import render_caption_image
from actors.composite_task import ClipPlan, CompositeOutput, composite
from actors.compositor import CallToActionCard
from actors.fonts import caption_fonts
from actors.media_probe import ffmpeg_executable
from coordinator.settings import Settings
from coordinator.storage import make_object_store

log = logging.getLogger(__name__)

# How often a cancelled call looks for ffmpeg processes to stop until its thread has ended.
_STOP_POLL_S = 0.05


@serve.deployment(name="Compositor", max_ongoing_requests=1, health_check_period_s=5)
class Compositor:
    def __init__(self, settings: Settings):
        """Loads what every video needs once, before taking traffic: the object store client,
        ffmpeg's location, the caption fonts (a caption in Latin and CJK script is drawn, so the
        fonts' files and Pillow's text layout are read now, not by the first job)."""
        self.settings = settings
        self.objects = make_object_store(settings)
        self.ffmpeg = ffmpeg_executable()  # imageio-ffmpeg remembers it for the process
        caption_fonts()
        with tempfile.TemporaryDirectory(prefix="compositor-warm-") as workdir:
            render_caption_image("Ready 準備完了", 320, 180, Path(workdir) / "warm.png")

    async def composite(self, clips: list[ClipPlan], cta: CallToActionCard, *, width: int,
                        height: int, fps: int, music_key: str | None = None) -> CompositeOutput:
        """The finished ad's MP4 and thumbnail (see ``actors.composite_task.composite``).
        Raises ``CompositorError`` or ``SoundMixError`` with ffmpeg's reason."""
        work = asyncio.ensure_future(asyncio.to_thread(
            composite, self.settings, clips, cta, width=width, height=height, fps=fps,
            music_key=music_key, objects=self.objects))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await self._stop(work)
            raise

    async def _stop(self, work: asyncio.Future) -> None:
        """Stops a cancelled video: a thread cannot be interrupted, so its ffmpeg processes are
        killed (each makes the work raise) until the thread has ended. Only this call's: a
        replica runs one video at a time."""
        while not work.done():
            for process in self._ffmpeg_processes():
                try:
                    process.kill()
                except psutil.Error:
                    pass  # it ended by itself
            await asyncio.wait({work}, timeout=_STOP_POLL_S)
        if not work.cancelled() and work.exception() is not None:
            log.info("cancelled compositing stopped: %s", work.exception())

    def _ffmpeg_processes(self) -> list[psutil.Process]:
        found = []
        for child in psutil.Process().children():
            try:
                if child.exe() == self.ffmpeg or child.cmdline()[:1] == [self.ffmpeg]:
                    found.append(child)
            except psutil.Error:
                continue
        return found
