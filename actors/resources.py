"""Where renderers run: one GPU per replica where the cluster has GPUs, CPU otherwise."""

from __future__ import annotations

import os


def renderer_actor_options(cpus_without_gpu: float = 1.0) -> dict:
    """Ray actor options for a renderer replica.

    ``RENDERFARM_RENDER_GPUS`` (0 or 1) forces the choice; otherwise a GPU is requested when
    this process sees CUDA (a GPU head node) or the connected Ray cluster advertises GPUs.
    """
    forced = os.environ.get("RENDERFARM_RENDER_GPUS")
    if forced is not None:
        gpus = float(forced)
    else:
        gpus = 1.0 if _cluster_has_gpus() else 0.0
    if gpus > 0:
        return {"num_gpus": gpus, "num_cpus": 1}
    return {"num_cpus": float(os.environ.get("RENDERFARM_RENDER_CPUS", cpus_without_gpu))}


def _cluster_has_gpus() -> bool:
    import ray

    if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0:
        return True
    import torch

    return torch.cuda.is_available()
