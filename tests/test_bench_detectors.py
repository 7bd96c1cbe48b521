"""Smoke test of ``plantwatch bench detectors`` (tiny sizes, so it runs in a second or two)."""
from __future__ import annotations

import json

import pytest

from plantwatch.daemon.lab import bench_detectors
from plantwatch.detectors import REGISTRY


def test_bench_runs_every_univariate_detector_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_detectors.main(["--sensors", "20", "--seconds", "0.01", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    ran = {r["detector"] for r in report["results"]}
    assert ran == {n for n, c in REGISTRY.items() if getattr(c, "univariate", True)}
    for r in report["results"]:
        assert r["readings_per_s"] > 0 and r["np_add_ratio"] > 0 and r["sensors"] == 20
    assert report["reference"]["20"]["ns_per_element"] > 0
    assert "readings/s" in capsys.readouterr().out


def test_bench_all_and_selection(tmp_path):
    out = tmp_path / "b.json"
    bench_detectors.main(["--sensors", "8", "--seconds", "0.01", "--detectors", "neighbour_drift", "jump",
                          "--json", str(out)])
    assert {r["detector"] for r in json.loads(out.read_text())["results"]} == {"neighbour_drift", "jump"}
    with pytest.raises(SystemExit):
        bench_detectors.main(["--detectors", "nope"])
