"""A short run of the decoders' fuzzer (atheris): both targets run their inputs, and a decoder
defect found at volume stays fixed."""
from __future__ import annotations

import json

import pytest

from plantwatch.daemon.bench import fuzz

pytestmark = pytest.mark.slow


def test_short_fuzz_run_of_both_decoders(tmp_path):
    out = tmp_path / "fuzz.json"
    assert fuzz.main(["--runs", "3000", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["target"] for r in res["results"]] == ["wire", "sparkplug"]
    for r in res["results"]:
        assert r["inputs"] == 3000 and r["coverage"]["edges"] > 50, r
        assert r["findings"] == [], r["findings"]
