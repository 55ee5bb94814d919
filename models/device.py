"""Where models run and in which precision.

One place decides, so every worker on a machine agrees: CUDA when present (or whatever
``RENDERFARM_DEVICE`` names), and half precision only where it is fast and supported.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

DEVICE_ENV = "RENDERFARM_DEVICE"

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def choose_device() -> str:
    """``$RENDERFARM_DEVICE`` if set (e.g. ``cpu``, ``cuda:1``), else ``cuda`` if available, else ``cpu``."""
    override = os.environ.get(DEVICE_ENV, "").strip()
    if override:
        try:
            torch.device(override)
        except (RuntimeError, ValueError):
            raise ValueError(f"{DEVICE_ENV}={override!r} is not a torch device") from None
        return override
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_dtype(device: str, requested: str = "auto") -> torch.dtype:
    """The weights' dtype for ``requested`` ("auto", "float16", "bfloat16", "float32") on ``device``.

    "auto" is float16 on CUDA and float32 elsewhere. Half precision asked for on a device
    other than CUDA becomes float32 (with a warning): CPU kernels for it are slow or missing,
    and it lets a production preset still run, slowly, on a machine without a GPU.
    """
    on_cuda = torch.device(device).type == "cuda"
    if requested == "auto":
        return torch.float16 if on_cuda else torch.float32
    try:
        dtype = _DTYPES[requested]
    except KeyError:
        raise ValueError(f"unknown dtype {requested!r}; use auto, {', '.join(_DTYPES)}") from None
    if dtype != torch.float32 and not on_cuda:
        log.warning("%s requested on %s; using float32", requested, device)
        return torch.float32
    return dtype
