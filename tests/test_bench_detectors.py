"""Smoke tests of ``plantwatch bench detectors`` (tiny sizes, so they run in a few seconds).

No assertion is about speed: the figures are checked for what they are computed from.
"""
from __future__ import annotations

import json

import pytest

from plantwatch.daemon.lab import bench_detectors
from plantwatch.daemon.lab.bench_groups import DEFAULT_SET, group_sizes, resolve
from plantwatch.daemon.lab.evaluate.skab import site_params
from plantwatch.detectors import REGISTRY
from plantwatch.detectors.group import GroupDetector


def test_bench_runs_every_univariate_and_group_detector_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_detectors.main(["--sensors", "20", "--seconds", "0.01", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    ran = {r["detector"] for r in report["results"]}
    groups = {n for n, c in REGISTRY.items() if issubclass(c, GroupDetector)}
    assert groups >= {"pca_monitor", "pyod_group"}
    assert ran == {n for n, c in REGISTRY.items() if c.univariate and n not in groups} | groups | {"pca_monitor:skab"}
    assert "increment_variance" in ran
    for r in report["results"]:
        assert r["readings_per_s"] > 0 and r["np_add_ratio"] > 0 and r["sensors"] == 20
    assert report["reference"]["20"]["ns_per_element"] > 0
    text = capsys.readouterr().out
    assert "readings/s" in text and "ns/row" in text and "pca_monitor:skab" in text


def test_bench_all_and_selection(tmp_path):
    out = tmp_path / "b.json"
    bench_detectors.main(["--sensors", "8", "--seconds", "0.01", "--detectors", "neighbour_drift", "jump",
                          "--json", str(out)])
    assert {r["detector"] for r in json.loads(out.read_text())["results"]} == {"neighbour_drift", "jump", *DEFAULT_SET}


def test_group_path_times_pca_monitor_plain_and_skab_per_reading_per_row_and_refit():
    report = bench_detectors.run(["pca_monitor", "pca_monitor:skab"], [16], 0.01, False)
    res = {r["detector"]: r for r in report["results"]}
    for label in ("pca_monitor", "pca_monitor:skab"):
        r = res[label]
        assert r["kind"] == "group" and r["groups"] == 2 and r["layout"] == "2 × 8" and r["samples"] >= 9
        # every group forms one row per round (complete mode): a row costs its 8 members' readings
        assert r["rows_per_round"] == 2
        assert r["ns_per_row"] == pytest.approx(8 * r["ns_per_reading"])
        assert r["readings_per_s"] == pytest.approx(1e9 / r["ns_per_reading"])
    plain, skab = res["pca_monitor"]["refit"], res["pca_monitor:skab"]["refit"]
    # plain: refits every 50 rows on a full ring of 300; amortised over the rows and their readings
    assert plain["samples"] == 5 and plain["refit_every"] == 50 and plain["ring_rows"] == plain["window"] == 300
    assert plain["ns_per_row"] == pytest.approx(plain["fit_ms"] * 1e6 / 50)
    assert plain["ns_per_reading"] == pytest.approx(plain["ns_per_row"] / 8)
    assert res["pca_monitor"]["total_ns_per_reading"] == pytest.approx(
        res["pca_monitor"]["ns_per_reading"] + plain["ns_per_reading"])
    # skab: fitted once, never refitted, and the bench says so
    assert skab["samples"] == 0 and "refit_every 0" in skab["why"] and skab["fit_ms"] > 0
    assert res["pca_monitor:skab"]["total_ns_per_reading"] == res["pca_monitor:skab"]["ns_per_reading"]


def test_skab_preset_is_the_site_configs_entry_and_plain_is_example_params():
    label, cls, params = resolve("pca_monitor:skab")
    assert label == "pca_monitor:skab" and cls is REGISTRY["pca_monitor"]
    assert params == site_params() and params["detrend_t"] == 8.0 and params["smooth"] == 0.9
    assert resolve("pca_monitor")[2] == REGISTRY["pca_monitor"].example_params()


def test_ratio_column_is_against_the_default_set_of_the_same_run():
    report = bench_detectors.run(["increment_variance", "pca_monitor"], [12, 30], 0.01, False, group_sizes=[6])
    assert {r["detector"] for r in report["results"]} == {*DEFAULT_SET, "increment_variance", "pca_monitor"}
    for n in (12, 30):
        rows = [r for r in report["results"] if r["sensors"] == n]
        default = sum(r["ns_per_reading"] for r in rows if r["detector"] in DEFAULT_SET)
        assert report["default_set"]["ns_per_reading"][str(n)] == pytest.approx(default)
        for r in rows:
            assert r["default_ratio"] == pytest.approx(r["ns_per_reading"] / default)
        pca = next(r for r in rows if r["detector"] == "pca_monitor")
        assert pca["total_default_ratio"] == pytest.approx(pca["total_ns_per_reading"] / default)


def test_unknown_preset_or_detector_is_one_line_and_exit_2(capsys):
    assert bench_detectors.main(["--detectors", "pca_monitor:nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown preset 'nope'" in err and "presets of pca_monitor: skab" in err
    assert bench_detectors.main(["--detectors", "limit:skab"]) == 2
    assert "limit has no presets" in capsys.readouterr().err
    assert bench_detectors.main(["--detectors", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown detector 'nope'" in err


def test_group_detector_with_too_few_rounds_says_why_it_has_no_samples(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench_detectors.main(["--sensors", "16", "--seconds", "0.01", "--detectors", "pca_monitor:skab",
                                 "--warm-rounds", "100", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "pca_monitor:skab" not in {r["detector"] for r in report["results"]}
    (why,) = [s for s in report["skipped"] if s["detector"] == "pca_monitor:skab"]
    assert why["phase"] == "monitoring" and why["sensors"] == 16
    assert "not fitted after 100 warm-up rounds" in why["reason"] and "400 rows (min_rows)" in why["reason"]
    assert "--warm-rounds" in why["reason"]
    text = " ".join(capsys.readouterr().out.split())
    assert "no samples, pca_monitor:skab at 16 sensors" in text and "min_rows" in text


def test_group_sizes_split_sensors_like_areas():
    assert group_sizes(1000, 8) == [8] * 125
    assert group_sizes(1000, 33) == [33] * 30 + [10]
    assert group_sizes(10000, 33) == [33] * 302 + [34]  # no group of one sensor
    assert group_sizes(5, 8) == [5]
    assert sum(group_sizes(10000, 8)) == 10000


def test_cases_of_one_sensor_count_are_warmed_up_then_timed_in_interleaved_slices():
    said = []
    report = bench_detectors.run(["increment_variance", "pca_monitor"], [12], 0.01, False, progress=said.append,
                                 group_sizes=[6])
    timing = [i for i, s in enumerate(said) if s.startswith("timing ")]
    warming = [i for i, s in enumerate(said) if s.startswith("warming up ")]
    assert len(warming) == 6 and len(timing) == 3 and max(warming) < min(timing)
    assert said[timing[0]] == "timing 6 cases at 12 sensors, slice 1 of 3"
    # each case took one slice per turn, each slice at least three rounds
    assert all(r["rounds"] >= 9 for r in report["results"]) and len(report["results"]) == 6
