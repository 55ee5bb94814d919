"""Render presets: every shipped file validates, lookups fail clearly, bad files are refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest
import yaml

from models import presets
from models.presets import (
    ASPECT_RATIOS,
    PresetError,
    RenderPreset,
    UnknownPreset,
    apply_prompt_template,
    default_preset_name,
    get_preset,
    list_presets,
    load_preset_file,
)

TINY_YAML = presets.PRESETS_DIR / "tiny.yaml"


def _write_variant(tmp_path: Path, name: str, edit) -> Path:
    """A copy of the tiny preset under ``name``, changed by ``edit(data)``."""
    data = yaml.safe_load(TINY_YAML.read_text())
    data["name"] = name
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_presets_include_tiny_and_a_gpu_preset():
    names = list_presets()
    assert "tiny" in names
    assert presets.GPU_PRESET in names
    assert names == sorted(names)


@pytest.mark.parametrize("name", list_presets())
def test_every_shipped_preset_validates_with_all_sizes(name):
    preset = get_preset(name)
    assert preset.name == name
    for table, multiple in ((preset.image_size, 8), (preset.clip_size, 8), (preset.output_size, 2)):
        assert set(table) == set(ASPECT_RATIOS)
        for width, height in table.values():
            assert width > 0 and height > 0
            assert width % multiple == 0 and height % multiple == 0
    assert preset.estimate.image_seconds_per_scene > 0
    assert preset.estimate.clip_seconds_per_scene > 0


@pytest.mark.parametrize("name", [n for n in list_presets() if n != "tiny"])
def test_production_presets_name_real_models_and_hd_output(name):
    preset = get_preset(name)
    assert "/" in preset.image.model and "/" in preset.clip.model  # hub ids, never the tiny build
    assert preset.output_size == {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}


def test_tiny_preset_stays_tiny():
    preset = get_preset("tiny")
    assert preset.image.model == "tiny" and preset.clip.model == "tiny"
    for width, height in [*preset.image_size.values(), *preset.clip_size.values()]:
        assert width <= 128 and height <= 128
    assert 2 <= preset.image.steps <= 4
    assert preset.clip.steps <= 2
    assert 4 <= preset.clip.num_frames <= 8
    assert preset.image.dtype in ("auto", "float32") and preset.clip.dtype in ("auto", "float32")


def test_unknown_preset_lists_valid_names():
    with pytest.raises(UnknownPreset) as caught:
        get_preset("no-such-preset")
    message = str(caught.value)
    assert "no-such-preset" in message
    for name in list_presets():
        assert name in message
    # Callers doing dictionary-style lookups can catch it as a KeyError.
    assert isinstance(caught.value, KeyError)


def test_default_preset_follows_cuda(monkeypatch):
    import torch

    monkeypatch.delenv(presets.DEFAULT_PRESET_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_preset_name() == "tiny"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_preset_name() == presets.GPU_PRESET


def test_default_preset_env_override(monkeypatch):
    monkeypatch.setenv(presets.DEFAULT_PRESET_ENV, "sd15-ltx")
    assert default_preset_name() == "sd15-ltx"
    monkeypatch.setenv(presets.DEFAULT_PRESET_ENV, "bogus")
    with pytest.raises(UnknownPreset, match="bogus"):
        default_preset_name()


def test_prompt_template_with_and_without_style():
    preset = get_preset("tiny")
    assert preset.image.prompt_template == "{prompt}, {style}, advertising photo"
    assert apply_prompt_template(preset, "a red car", "neon noir") == "a red car, neon noir, advertising photo"
    assert apply_prompt_template(preset, "a red car", None) == "a red car, advertising photo"
    assert apply_prompt_template(preset, "  a red car ", "  ") == "a red car, advertising photo"


def _set(path: tuple, value):
    def edit(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _drop(path: tuple):
    def edit(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_drop(("image_size", "1:1")), "image_size: missing aspect ratios ['1:1']"),
        (_set(("clip_size", "16:9"), [100, 64]), "clip_size: 16:9 size 100x64 must be multiples of 8"),
        (_set(("output_size", "9:16"), [145, 256]), "output_size: 9:16 size 145x256 must be multiples of 2"),
        (_set(("image_size", "9:16"), [96, 64]), "image_size: 9:16 size 96x64 has the wrong orientation"),
        (_set(("image", "steps"), "4"), "image.steps: Input should be a valid integer"),
        (_set(("image", "steps"), 0), "image.steps: Input should be greater than or equal to 1"),
        (_set(("image", "stepz"), 4), "image.stepz: Extra inputs are not permitted"),
        (_set(("image", "dtype"), "float8"), "image.dtype: Input should be"),
        (_set(("image", "prompt_template"), "{style} only"), "prompt_template must contain {prompt}"),
        (_set(("image", "prompt_template"), "{prompt} {brand}"), "may only use {prompt} and {style}"),
        (_set(("clip", "min_guidance_scale"), 5.0),
         "min_guidance_scale 5.0 is above max_guidance_scale 3.0"),
        (_drop(("estimate",)), "estimate: Field required"),
    ],
)
def test_invalid_preset_files_are_refused_concisely(tmp_path, edit, expected):
    path = _write_variant(tmp_path, "broken", edit)
    with pytest.raises(PresetError) as caught:
        load_preset_file(path)
    message = str(caught.value)
    assert message.startswith("preset broken.yaml: ")
    assert expected in message
    # One line, without pydantic's documentation links or input dumps.
    assert "\n" not in message and "errors.pydantic.dev" not in message


def test_unquoted_aspect_ratio_gets_a_hint(tmp_path):
    # YAML 1.1 reads a bare 16:9 as the base-60 number 969.
    text = TINY_YAML.read_text().replace('"16:9":', "16:9:", 1)
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    with pytest.raises(PresetError, match='must be a quoted string such as "16:9"'):
        load_preset_file(path)


def test_preset_name_must_match_file_name(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(TINY_YAML.read_text())
    with pytest.raises(PresetError, match="must match the file name 'other'"):
        load_preset_file(path)


def test_unreadable_yaml_is_a_preset_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        name: bad
        image: [unclosed
    """))
    with pytest.raises(PresetError, match="bad.yaml: cannot read"):
        load_preset_file(path)


def test_presets_are_immutable():
    preset = get_preset("tiny")
    assert isinstance(preset, RenderPreset)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        preset.image.steps = 50  # shared, cached instance: nobody may change it for everyone
