"""docs/detectors.md stays in step with the code: parameters, defaults, and YAML examples that validate."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from plantwatch.daemon.config.model import DetectorConfig
from plantwatch.detectors import REGISTRY

DOC = (Path(__file__).resolve().parents[1] / "docs" / "detectors.md").read_text()
LIBRARY = ["gas_exposure", "lel", "flatline", "out_of_range", "fault_code", "jump", "neighbour_drift",
           "rate_of_change", "ewma", "cusum", "seasonal_zscore", "increment_variance",
           "shape_novelty"]


def section(name: str) -> str:
    m = re.search(rf"^### `{name}`.*?(?=^### |\Z)", DOC, re.S | re.M)
    assert m, f"docs/detectors.md has no section for {name}"
    return m.group(0)


@pytest.mark.parametrize("name", LIBRARY)
def test_every_parameter_documented_with_its_default(name):
    text = section(name)
    for k, f in REGISTRY[name].Params.model_fields.items():
        row = re.search(rf"^\| `{k}` \|.*$", text, re.M)
        assert row, f"{name}: parameter {k} missing from the docs"
        default = f.default_factory() if f.default_factory else f.default
        assert f"`{default}`" in row.group(0), f"{name}.{k}: docs disagree on the default {default!r}"
    for cond in REGISTRY[name].CONDITIONS[1:]:
        assert f"`{cond}` ({REGISTRY[name].SEVERITY[cond]})" in text


def test_yaml_examples_validate():
    blocks = re.findall(r"```yaml\n(.*?)```", DOC, re.S)
    assert len(blocks) >= len(LIBRARY)
    for b in blocks:
        for entry in yaml.safe_load(b):
            d = DetectorConfig.model_validate(entry)
            d.validated_params()
