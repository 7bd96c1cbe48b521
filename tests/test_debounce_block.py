"""The debounce parameters (``on_delay``, ``off_delay``, ``clear_ratio``) are declared once, in
detectors/base.py, and every detector that has them includes that block with its own defaults
and bounds; the values and bounds a site's config may give are what they were."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from plantwatch.detectors import REGISTRY
from plantwatch.detectors.base import debounce

DEBOUNCE = ("on_delay", "off_delay", "clear_ratio")
#: detectors that still declare their own copy (their modules are being changed elsewhere)
OWN_COPY = {"robot_baseline"}


def _declared_by(model: type, field: str) -> type:
    return next(c for c in model.__mro__ if field in getattr(c, "__annotations__", {}))


def test_every_detector_takes_its_debounce_parameters_from_the_block():
    copies = sorted(f"{name}.{field}" for name, cls in REGISTRY.items() if name not in OWN_COPY
                    for field in DEBOUNCE if field in cls.Params.model_fields
                    and _declared_by(cls.Params, field).__name__ != "Debounce")
    assert copies == []
    with_block = [name for name, cls in REGISTRY.items() if any(f in cls.Params.model_fields for f in DEBOUNCE)]
    assert len(with_block) >= 19


@pytest.mark.parametrize("name, field, default, bad, good", [
    ("cusum", "off_delay", 300.0, 86401, 86400),
    ("lel", "on_delay", 0.0, 601, 600),
    ("lel", "off_delay", 0.0, 3601, 3600),
    ("jump", "off_delay", 60.0, 3601, 3600),
    ("gas_exposure", "clear_ratio", 0.9, 0.0, 1.0),
    ("unexplained_loss", "clear_ratio", 0.5, 1.01, 0.01),
    ("limit", "on_delay", 0.0, -1, 3600),
])
def test_each_detector_keeps_its_defaults_and_bounds(name, field, default, bad, good):
    params = REGISTRY[name].Params
    base = REGISTRY[name].example_params()
    assert params.model_fields[field].default == default
    with pytest.raises(ValidationError, match=field):
        params.model_validate({**base, field: bad})
    assert getattr(params.model_validate({**base, field: good}), field) == good


def test_a_detector_without_a_parameter_has_none():
    assert "on_delay" not in REGISTRY["flatline"].Params.model_fields
    assert set(DEBOUNCE) & set(REGISTRY["pca_monitor"].Params.model_fields) == {"clear_ratio"}
    block = debounce(on_delay=None, off_delay=5.0, longest=60)
    assert list(block.model_fields) == ["off_delay"]
    with pytest.raises(ValidationError):
        block.model_validate({"off_delay": 61})
    with pytest.raises(ValidationError):
        block.model_validate({"off_delay": 1, "on_delay": 1})  # unknown keys stay errors
