"""Ray Serve entry point: ``serve run serve_app:app`` (or ``serve deploy serve_config.yaml``).

The topology lives here: the FastAPI ingress with the image and clip renderers bound into it.
Replica counts, resources and autoscaling live in ``serve_config.yaml``. The ingress app is
built on its replica (not pickled from the driver), so each replica opens its own database
engine and object-store client.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from actors.clip_renderer import ClipRenderer
from actors.image_renderer import ImageRenderer
from actors.resources import renderer_actor_options
from coordinator.app import create_app
from coordinator.settings import Settings, get_settings
from models.presets import GPU_PRESET, TINY_PRESET


@serve.deployment(name="Api", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Api:
    def __init__(self, settings: Settings, images: Any, clips: Any) -> None:
        from actors.facade import RayJobRunner

        self.settings = settings
        self.runner = RayJobRunner(settings, images, clips)

    def __serve_build_asgi_app__(self):
        # build_app already migrated the database before any replica started.
        return create_app(self.settings, job_runner=self.runner, migrate=False)


def build_app(settings: Settings, *, image_replicas: int = 1, clip_replicas: int = 1,
              renderer_cpus: float = 1.0) -> Application:
    """The whole service as one Serve application."""
    from coordinator.db.migrate import upgrade_database

    # Migrate once here, before replicas start, so they never race on it.
    upgrade_database(settings)
    models_dir = str(settings.models_dir)
    options = renderer_actor_options(renderer_cpus)
    if not settings.renderfarm_default_preset:
        # Decided by where the renderers run, not by whichever node the API lands on.
        default = GPU_PRESET if options.get("num_gpus") else TINY_PRESET
        settings = settings.model_copy(update={"renderfarm_default_preset": default})
    images = ImageRenderer.options(num_replicas=image_replicas,
                                   ray_actor_options=options).bind(models_dir)
    clips = ClipRenderer.options(num_replicas=clip_replicas,
                                 ray_actor_options=options).bind(models_dir)
    return Api.bind(settings, images, clips)


def app(args: dict[str, str] | None = None) -> Application:
    """The application builder ``serve run serve_app:app`` calls (with ``key=value`` arguments
    such as ``image_replicas=2``). A builder, so importing this module has no side effects."""
    args = args or {}
    return build_app(get_settings(), image_replicas=int(args.get("image_replicas", 1)),
                     clip_replicas=int(args.get("clip_replicas", 1)),
                     renderer_cpus=float(args.get("renderer_cpus", 1.0)))
