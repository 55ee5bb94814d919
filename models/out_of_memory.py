"""The error a render raises when the GPU runs out of memory even after a smaller retry.

Kept apart from ``models.pipelines`` (and free of torch) so the job actor, which maps renderer
failures to job error codes, can recognise it without loading model code.
"""

from __future__ import annotations

from models.presets import ClipSpec, ImageSpec

OUT_OF_MEMORY_CODE = "gpu_out_of_memory"


class GpuOutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message says which preset and which options would help."""

    code = OUT_OF_MEMORY_CODE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def out_of_memory_message(preset: str, role: str, spec: ImageSpec | ClipSpec, retried: str) -> str:
    """What an operator reads: the preset, what was already retried, and what to turn on."""
    remedies = _untried_options(spec)
    section = f"the {role} section of preset {preset!r}"
    advice = (f"turn on {', '.join(remedies)} in {section}, or use a GPU with more memory"
              if remedies else f"every memory option in {section} is already on: use a GPU with "
                               "more memory or a smaller preset")
    return f"the GPU ran out of memory with preset {preset!r} ({retried}); {advice}"


def _untried_options(spec: ImageSpec | ClipSpec) -> list[str]:
    options = []
    if spec.dtype == "float32":
        options.append('dtype: "float16"')
    if not spec.attention_slicing:
        options.append("attention_slicing: true")
    if not spec.vae_slicing:
        options.append("vae_slicing: true")
    if not spec.vae_tiling:
        options.append("vae_tiling: true")
    if spec.cpu_offload == "none":
        options.append('cpu_offload: "model"')
    elif spec.cpu_offload == "model":
        options.append('cpu_offload: "sequential"')
    return options
