"""The models a renderer replica keeps loaded, one per preset, loaded once and off the event
loop (a hub download or a ``from_pretrained`` can take minutes; health checks must still be
answered meanwhile)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable, Generic, TypeVar

from models.presets import RenderPreset, get_preset

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")


class ModelShelf(Generic[ModelT]):
    def __init__(self, loader: Callable[[RenderPreset, Path], ModelT], models_dir: Path, kind: str):
        self._loader = loader
        self._models_dir = models_dir
        self._kind = kind
        self._models: dict[str, ModelT] = {}
        self._lock = asyncio.Lock()

    def load_now(self, preset_name: str) -> ModelT:
        """Loads synchronously: for a replica's constructor, before it takes traffic."""
        if preset_name not in self._models:
            started = time.perf_counter()
            self._models[preset_name] = self._loader(get_preset(preset_name), self._models_dir)
            log.info("loaded %s model of preset %s in %.1fs", self._kind, preset_name,
                     time.perf_counter() - started)
        return self._models[preset_name]

    async def get(self, preset_name: str) -> ModelT:
        """The preset's model, loading it in a worker thread the first time it is asked for."""
        if preset_name in self._models:
            return self._models[preset_name]
        async with self._lock:  # one load at a time: two would double the memory for nothing
            if preset_name not in self._models:
                await asyncio.to_thread(self.load_now, preset_name)
        return self._models[preset_name]

    def __bool__(self) -> bool:
        return bool(self._models)
