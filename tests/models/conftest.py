"""The tiny preset's models, built and loaded once per test module."""

from __future__ import annotations

import pytest

from models.pipelines import load_clip_model, load_image_model
from models.presets import get_preset


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def preset():
    return get_preset("tiny")


@pytest.fixture(scope="module")
def image_model(preset, models_dir):
    return load_image_model(preset, models_dir)


@pytest.fixture(scope="module")
def clip_model(preset, models_dir):
    return load_clip_model(preset, models_dir)
