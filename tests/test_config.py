"""The config base: one to_dict/from_dict and one message style for every config."""

from __future__ import annotations

import dataclasses
import json

import pytest

from genai_course.config import Config, check_choice, check_positive, check_range
from genai_course.models.diffusion import DiffusionConfig
from genai_course.models.unet import UNetConfig
from genai_course.pretrained import read_manifest
from genai_course.train import TrainConfig


@dataclasses.dataclass
class _Inner(Config):
    width: int = 4


@dataclasses.dataclass
class _Outer(Config):
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[float, float] = (0.5, 0.25)
    inner: _Inner | None = None
    norm: str = "group"

    def validate(self) -> None:
        check_choice(self, "norm", ("group", "layer"))


def test_json_round_trip_rebuilds_tuples_and_sub_configs():
    cfg = _Outer(sizes=(3, 4, 5), inner=_Inner(width=8))
    again = _Outer.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.sizes, tuple) and isinstance(again.inner, _Inner)


def test_every_shipped_config_round_trips_through_its_manifest_json():
    from genai_course.pretrained import _config_from, _model_class

    for name, entry in read_manifest().items():
        cls = _model_class(entry["class"])
        cfg = _config_from(cls, entry["config"])
        assert isinstance(cfg, Config), name
        written = json.loads(json.dumps(cfg.to_dict()))
        assert {k: written[k] for k in entry["config"]} == entry["config"], name
        defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
        # a field added after the checkpoint was written takes its default
        assert all(getattr(cfg, k) == defaults[k] for k in written.keys() - entry["config"])


def test_nested_diffusion_config_from_json():
    cfg = DiffusionConfig(unet=UNetConfig(base_width=16, norm_groups=8))
    again = DiffusionConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.unet == cfg.unet and isinstance(again.unet, UNetConfig)


def test_unknown_keys_are_an_error_listing_the_fields():
    with pytest.raises(ValueError, match=r"no field\(s\) \['widht'\].*'sizes'"):
        _Outer.from_dict({"widht": 3})
    with pytest.raises(TypeError, match="expects a mapping"):
        _Outer.from_dict([("norm", "group")])


def test_messages_name_the_config_the_field_and_what_was_expected():
    with pytest.raises(ValueError, match=r"_Outer.norm must be one of 'group', 'layer'; got 'x'"):
        _Outer(norm="x")
    with pytest.raises(ValueError, match=r"TrainConfig.steps must be >= 1, got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"TrainConfig.lr must be > 0, got 0"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match=r"TrainConfig.ema_decay must be in \(0, 1\), got 1"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match=r"UNetConfig.dropout must be in \[0, 1\), got 1"):
        UNetConfig(dropout=1.0)


def test_checks_accept_the_boundaries_they_promise():
    check_positive("", "n", value=1)
    check_positive("", "scale", minimum=0, strict=True, value=1e-9)
    check_range("", "p", 0.0, 1.0, value=0.0)  # [0, 1)
    check_range("", "g", 0.0, 1.0, closed="both", value=1.0)
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\), got 1"):
        check_range("", "p", 0.0, 1.0, value=1.0)
    with pytest.raises(ValueError, match="closed must be"):
        check_range("", "p", 0.0, 1.0, closed="open", value=0.5)
