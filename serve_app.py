"""Ray Serve entry point: ``serve run serve_app:app`` (local) or ``serve deploy serve_config.yaml``
(a cluster; the config passes ``profile: cluster``).

The topology lives here: the API ingress (``coordinator.ingress``) with the image, clip and
audio renderers and the compositor (``actors.compositor_deployment``) bound into it. Replica counts, resources and batching come from ``actors.placement``,
the one place for them. Importing this module loads nothing heavy: the renderer classes (which
pull in torch and diffusers) are imported only when the application is built.
"""

from __future__ import annotations

from typing import Any, Mapping

from ray.serve import Application, Deployment

from coordinator.settings import Settings, get_settings


def build_app(settings: Settings, *, profile: str = "local", render_gpus: float | None = None,
              renderers: Mapping[str, Deployment] | None = None,
              **overrides: Any) -> Application:
    """The whole service as one Serve application.

    ``overrides`` replace deployment options per deployment, e.g.
    ``{"ImageRenderer": {"num_replicas": 2}}`` (tests and benchmarks use this).

    ``renderers`` replaces renderer deployments by name (``ImageRenderer``, ``ClipRenderer``)
    with others taking the same bind arguments and answering the same calls: only the
    benchmarks' simulated GPU (``bench/simulated_gpu.py``) uses it.
    """
    from actors.compositor_deployment import Compositor
    from actors.placement import make_placement
    from coordinator.cluster_checks import check_cluster_settings
    from coordinator.db.migrate import upgrade_database
    from coordinator.ingress import Api

    check_cluster_settings(settings)
    # Migrate once here, before replicas start, so they never race on it.
    upgrade_database(settings)
    placement = make_placement(profile, render_gpus=render_gpus)  # type: ignore[arg-type]
    options = {name: {**opts, **overrides.get(name, {})}
               for name, opts in placement.deployments.items()}
    models_dir = str(settings.models_dir)
    classes = _renderer_classes(renderers or {})
    images = classes["ImageRenderer"].options(**options["ImageRenderer"]).bind(
        models_dir, max_models=placement.models_per_replica["ImageRenderer"])
    clips = classes["ClipRenderer"].options(**options["ClipRenderer"]).bind(
        models_dir, max_models=placement.models_per_replica["ClipRenderer"])
    audio = classes["AudioRenderer"].options(**options["AudioRenderer"]).bind(
        models_dir, max_models=placement.models_per_replica["AudioRenderer"])
    compositor = Compositor.options(**options["Compositor"]).bind(settings)
    return Api.options(**options["Api"]).bind(settings, images, clips, placement, audio=audio,
                                              compositor=compositor)


def _renderer_classes(replaced: Mapping[str, Deployment]) -> dict[str, Deployment]:
    unknown = set(replaced) - {"ImageRenderer", "ClipRenderer", "AudioRenderer"}
    if unknown:
        raise ValueError(f"unknown renderer deployments: {', '.join(sorted(unknown))}")
    classes = dict(replaced)
    # The real renderers import torch and diffusers: only when they are used.
    if "ImageRenderer" not in classes:
        from actors.image_renderer import ImageRenderer

        classes["ImageRenderer"] = ImageRenderer
    if "ClipRenderer" not in classes:
        from actors.clip_renderer import ClipRenderer

        classes["ClipRenderer"] = ClipRenderer
    if "AudioRenderer" not in classes:
        from actors.audio_renderer import AudioRenderer

        classes["AudioRenderer"] = AudioRenderer
    return classes


def app(args: dict[str, str] | None = None) -> Application:
    """The application builder ``serve run serve_app:app`` and ``serve deploy`` call, with
    ``key=value`` arguments: ``profile`` (local or cluster) and ``render_gpus`` (GPUs per
    renderer replica; 0 runs the cluster profile on machines without GPUs)."""
    args = dict(args or {})
    gpus = args.pop("render_gpus", None)
    unknown = set(args) - {"profile"}
    if unknown:
        raise ValueError(f"unknown application arguments: {', '.join(sorted(unknown))}")
    return build_app(get_settings(), profile=args.get("profile", "local"),
                     render_gpus=float(gpus) if gpus not in (None, "") else None)
