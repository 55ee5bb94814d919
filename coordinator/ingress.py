"""The API as a Ray Serve ingress deployment.

This module is what an ``Api`` replica imports, so it stays light: FastAPI, SQLAlchemy and the
facade to the job actors, never torch, diffusers or transformers (a test guards it). The
renderers arrive as deployment handles; their classes live in ``actors.image_renderer`` and
``actors.clip_renderer`` and are only imported where the application is built.
"""

from __future__ import annotations

import sys
from typing import Any

from ray import serve

from coordinator.app import create_app
from coordinator.settings import Settings

# What the API process must never load (hundreds of MB, and no use to it).
HEAVY_MODULES = ("torch", "diffusers", "transformers")


@serve.deployment(name="Api")
@serve.ingress()
class Api:
    def __init__(self, settings: Settings, images: Any, clips: Any, placement: Any,
                 audio: Any = None, compositor: Any = None) -> None:
        from actors.facade import RayJobRunner

        self.settings = settings
        self.runner = RayJobRunner(settings, images, clips, placement, audio=audio,
                                   compositor=compositor)

    def __serve_build_asgi_app__(self):
        # The application builder already migrated the database before any replica started.
        return create_app(self.settings, job_runner=self.runner, migrate=False)

    def heavy_modules_loaded(self) -> list[str]:
        """Which of ``HEAVY_MODULES`` this replica has imported (for the guard test)."""
        return [name for name in HEAVY_MODULES if name in sys.modules]
