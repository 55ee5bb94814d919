"""Where the farm's work runs and what it asks the scheduler for: the one place for every
replica count, resource request and batching knob.

Two profiles, because the two ways people run the farm need different things:

- ``local`` (``scripts/serve``, ``serve run serve_app:app``): one machine. Everything the farm
  schedules must fit the CPUs the local Ray has, so the renderers and the compositor take
  fractions of them. A renderer asks for a GPU only when this machine has one.
- ``cluster`` (``serve deploy serve_config.yaml`` after ``ray up cluster.yaml``): renderers take
  one card each (¾ of its GPU, leaving the audio renderer's ¼), so only GPU nodes hold them,
  and scale with load. The API, job actors and
  the compositor ask for a sliver of the ``coordinator`` resource, which only the nodes that
  ``cluster.yaml`` marks (the head) advertise, so they never land on a GPU node.

A resource request is only added when some node of the cluster offers it: a laptop's Ray has
no ``coordinator`` resource, and asking for one there would wait forever.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

Profile = Literal["local", "cluster"]
PROFILES: tuple[str, ...] = ("local", "cluster")

COORDINATOR_RESOURCE = "coordinator"
# Small enough that a head node advertising 1000 holds a million job actors: this only places.
COORDINATOR_SLIVER = 0.001
RENDER_GPUS_ENV = "RENDERFARM_RENDER_GPUS"
CPU_SHARE = 0.25

# How many presets one renderer replica keeps loaded; Serve's model multiplexing unloads the
# least recently used beyond this (``actors.model_shelf``). Sized for one 24 GB card per
# replica, with fp16 weights: SDXL-Turbo (~7 GB, ~10 GB at peak with a batch) and SD 1.5
# (~2 GB, ~4 GB at peak) fit side by side, so an image replica holds 2. Stable Video Diffusion
# XT (~4 GB of weights, but decoding 25 frames peaks well above 12 GB) and LTX-Video (~4 GB
# plus a ~9 GB T5 text encoder) do not fit together, so a clip replica holds 1. The local
# profile keeps the same numbers: a workstation's card is no bigger, and on CPU the tiny
# models then behave as they will on the cluster. An audio replica's presets are small (MMS-TTS
# voices ~0.15 GB each, MusicGen small ~1.2 GB in fp16, ~3 GB at peak): 2 fit its GPU share.
MODELS_PER_REPLICA: dict[str, dict[str, int]] = {
    "local": {"ImageRenderer": 2, "ClipRenderer": 1, "AudioRenderer": 2},
    "cluster": {"ImageRenderer": 2, "ClipRenderer": 1, "AudioRenderer": 2},
}
# The audio renderer's share of a GPU on the cluster: a quarter of a 24 GB card holds MusicGen
# small at its peak and a few voices, and lets it sit beside another audio replica.
AUDIO_GPU_SHARE = 0.25
# Compositing replicas on the cluster's head: one video each at a time (ffmpeg's encode uses up
# to 4 threads); more start while videos queue, up to this many.
COMPOSITOR_MAX_REPLICAS = 4
# Requests one API replica serves at once (polls, uploads, open progress streams).
API_MAX_ONGOING_REQUESTS = 256
# On one machine the audio renderer asks for a fifth of a renderer's CPU share: it is busy only
# briefly per job, and the image and clip renderers plus the compositor must still fit.
AUDIO_CPU_FRACTION = 0.2


@dataclass(frozen=True)
class Placement:
    """What the scheduler is asked for: Serve deployment options per deployment, and Ray
    options for the per-job actors. Picklable: the job actors get it."""

    profile: Profile
    render_gpus: float
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_actor: dict[str, Any] = field(default_factory=dict)
    # Presets held per replica, by renderer deployment (passed to the renderer at bind).
    models_per_replica: dict[str, int] = field(default_factory=dict)

    @property
    def renderer_resources(self) -> dict[str, float]:
        """What one renderer replica needs from a node, in the scheduler's terms (for telling
        whether any node could ever hold one)."""
        options = self.deployments["ImageRenderer"]["ray_actor_options"]
        wanted = {"CPU": float(options.get("num_cpus", 0)), "GPU": float(options.get("num_gpus", 0))}
        wanted.update(options.get("resources", {}))
        return {name: amount for name, amount in wanted.items() if amount > 0}


def make_placement(profile: Profile = "local", *, render_gpus: float | None = None,
                   cluster_resources: dict[str, float] | None = None) -> Placement:
    """The placement for ``profile`` on the cluster this process is connected to.

    ``render_gpus`` (or ``$RENDERFARM_RENDER_GPUS``) forces GPUs per renderer replica, e.g. 0 to
    run the cluster profile on machines without GPUs; otherwise the cluster profile asks for one
    GPU and the local profile asks for one only where this machine has CUDA.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    resources = cluster_resources if cluster_resources is not None else _cluster_resources()
    gpus = _render_gpus(profile, render_gpus)
    cpus = max(resources.get("CPU", 0.0), 1.0)
    pinned = ({"resources": {COORDINATOR_RESOURCE: COORDINATOR_SLIVER}}
              if resources.get(COORDINATOR_RESOURCE) else {})
    # A renderer and the compositor each take a quarter of the CPUs, at most one: two
    # renderers and the compositor fit together on any machine (on 2 cores, 0.5 each).
    # With a GPU, the CPU request covers the replica's host work (decode, encode, batching).
    cpu_share = min(1.0, round(max(cpus * CPU_SHARE, 0.05), 2))
    # A renderer on one GPU leaves the audio renderer's share of that card free, so every GPU
    # node holds one renderer plus an audio replica, whichever the scheduler places first (with
    # whole cards, an audio replica landing first would strand a renderer: no card left whole).
    renderer_gpus = 1.0 - AUDIO_GPU_SHARE if gpus == 1 else gpus
    renderer = ({"num_gpus": renderer_gpus, "num_cpus": cpu_share} if gpus > 0
                else {"num_cpus": cpu_share})
    audio_cpus = max(0.01, round(cpu_share * AUDIO_CPU_FRACTION, 2))
    audio = ({"num_gpus": min(gpus, AUDIO_GPU_SHARE), "num_cpus": audio_cpus} if gpus > 0
             else {"num_cpus": audio_cpus})
    # Compositing is ffmpeg on CPUs, next to the API on the head; a replica takes one video at
    # a time (see ``actors.compositor_deployment``), waiting ones queue in Serve's router.
    compositor = {"max_ongoing_requests": 1,
                  "ray_actor_options": {"num_cpus": cpu_share, **pinned}}
    # The API is async and mostly waits on the database: a replica serves many requests at
    # once. With Serve's default of 5, the proxy holds the rest back and probes the busy
    # replica's queue before each send, backing off when the probe is slow: measured with 200
    # pollers, 96 ms in the replica but 20 s at the proxy (bench/README.md, API under load).
    api = {"max_ongoing_requests": API_MAX_ONGOING_REQUESTS,
           "ray_actor_options": {"num_cpus": 0, **pinned}}
    if profile == "local":
        deployments = {
            "Api": {"num_replicas": 1, **api},
            "ImageRenderer": {"num_replicas": 1, "max_ongoing_requests": 32,
                              "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.02},
                              "ray_actor_options": dict(renderer)},
            # Clips run one at a time on a replica, and a clip is long: a replica takes one at
            # a time, so waiting clips stay in Serve's router and go to whichever replica is
            # free first (with 2, a clip could queue behind another while a replica idles).
            "ClipRenderer": {"num_replicas": 1, "max_ongoing_requests": 1,
                             "ray_actor_options": dict(renderer)},
            "AudioRenderer": {"num_replicas": 1, "max_ongoing_requests": 16,
                              "ray_actor_options": dict(audio)},
            # One: on one machine a second ffmpeg would only share the same cores.
            "Compositor": {"num_replicas": 1, **compositor},
        }
    else:
        deployments = {
            "Api": {"num_replicas": 2, **api},
            "ImageRenderer": {"max_ongoing_requests": 32,
                              "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.05},
                              "autoscaling_config": {"min_replicas": 1, "max_replicas": 8,
                                                     "target_ongoing_requests": 8},
                              "ray_actor_options": dict(renderer)},
            "ClipRenderer": {"max_ongoing_requests": 1,
                             "autoscaling_config": {"min_replicas": 1, "max_replicas": 16,
                                                    "target_ongoing_requests": 1},
                             "ray_actor_options": dict(renderer)},
            # On the GPU nodes, a fraction of a GPU each (see AUDIO_GPU_SHARE).
            "AudioRenderer": {"max_ongoing_requests": 16,
                              "autoscaling_config": {"min_replicas": 1, "max_replicas": 4,
                                                     "target_ongoing_requests": 4},
                              "ray_actor_options": dict(audio)},
            "Compositor": {"autoscaling_config": {"min_replicas": 1,
                                                  "max_replicas": COMPOSITOR_MAX_REPLICAS,
                                                  "target_ongoing_requests": 1},
                           **compositor},
        }
    return Placement(
        profile=profile, render_gpus=gpus, deployments=deployments,
        # Job actors wait on I/O and other actors; they take no CPU so any number fit.
        job_actor={"num_cpus": 0, **pinned},
        models_per_replica=dict(MODELS_PER_REPLICA[profile]),
    )


def _render_gpus(profile: Profile, forced: float | None) -> float:
    if forced is None and os.environ.get(RENDER_GPUS_ENV, "").strip():
        forced = float(os.environ[RENDER_GPUS_ENV])
    if forced is not None:
        if forced < 0:
            raise ValueError(f"{RENDER_GPUS_ENV} must be >= 0")
        return float(forced)
    if profile == "cluster":
        return 1.0
    return 1.0 if _local_cuda() else 0.0


def _local_cuda() -> bool:
    # Imported here only: the API process must not pay for torch to decide this.
    import torch

    return torch.cuda.is_available()


def _cluster_resources() -> dict[str, float]:
    import ray

    if ray.is_initialized():
        return dict(ray.cluster_resources())
    return {"CPU": float(os.cpu_count() or 1)}
