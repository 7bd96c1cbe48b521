"""SKAB scoring rules and the SKAB runner on a small synthetic folder in upstream layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plantwatch.daemon.lab.evaluate.skab import eval_skab
from plantwatch.detectors.presets import SKAB_PLAIN
from plantwatch.detectors.scoring import skab


def test_binary_metrics_pooled() -> None:
    b = skab.binary([np.array([0, 0, 1, 1]), np.array([1, 0])], [np.array([1, 0, 1, 0]), np.array([1, 1])])
    assert (b.tp, b.fp, b.fn, b.tn) == (2, 2, 1, 1)
    assert b.f1 == pytest.approx(2 / (2 + 1.5))
    assert b.far == pytest.approx(100 * 2 / 3)
    assert b.mar == pytest.approx(100 * 1 / 3)


def test_changepoints_from_prediction() -> None:
    assert skab.changepoints_from_prediction(np.array([1, 1, 0, 0, 1])).tolist() == [1, 0, 1, 0, 1]


def test_windows_cut_right_on_overlap() -> None:
    t = np.arange(200.0)
    cps = np.zeros(200)
    cps[[10, 50, 150]] = 1
    assert skab.cp_windows(t, cps, 60) == [(10, 70), (70, 110), (150, 210)]


def test_tanh_curve_runs_from_a_tp_to_a_fp() -> None:
    y = skab.tanh_curve(1.0, -0.11)
    assert y[0] == pytest.approx(1.0) and y[-1] == pytest.approx(-0.11)
    assert np.all(np.diff(y) < 0)


def test_changepoint_nab_hand_computed() -> None:
    t = np.arange(300.0)
    cp = np.zeros(300)
    cp[[100, 200]] = 1  # windows [100, 160] and [200, 260]
    pred = np.zeros(300)
    pred[[50, 130, 140, 280]] = 1  # FP, TP at r = 0.5 (140 is a later one: free), FP
    out = skab.nab([t], [cp], [pred], 60)
    y = skab.tanh_curve(1.0, -0.11)
    raw = -0.11 * 2 + -1.0 + y[500]  # second window missed
    assert out["Standard"] == pytest.approx(round(100 * (raw + 2) / 4, 2))
    perfect = np.zeros(300)
    perfect[[100, 200]] = 1
    assert skab.nab([t], [cp], [perfect], 60)["Standard"] == pytest.approx(100.0)
    assert skab.nab([t], [cp], [np.zeros(300)], 60) == {"Standard": 0.0, "LowFP": 0.0, "LowFN": 0.0}


def write_skab_file(path: Path, rng: np.random.Generator, n: int = 700, start: int = 500, end: int = 600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = ("datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;"
            "Volume Flow RateRMS;anomaly;changepoint")
    t0 = np.datetime64("2020-03-09T10:00:00")
    lines = [head]
    for i in range(n):
        x = rng.normal(0, 1, 8) + np.arange(8)
        bad = start <= i < end
        if bad:
            x[3] += 8.0  # pressure jumps during the episode
        cp = 1.0 if i in (start, end) else 0.0
        stamp = str(t0 + np.timedelta64(i, "s")).replace("T", " ")
        lines.append(";".join([stamp, *[f"{v:.5f}" for v in x], "1.0" if bad else "0.0", str(cp)]))
    path.write_text("\n".join(lines) + "\n")


def test_runner_on_upstream_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for folder, k in [("valve1", 0), ("valve2", 0), ("other", 1)]:
        write_skab_file(tmp_path / folder / f"{k}.csv", rng)
    (tmp_path / "anomaly-free").mkdir()
    (tmp_path / "anomaly-free" / "anomaly-free.csv").write_text("datetime;Current\n2020-01-01 00:00:00;1.0\n")
    res = eval_skab(tmp_path, out=tmp_path / "out", config=SKAB_PLAIN, quiet=True)
    assert res["files"] == 3 and set(res["per_folder"]) == {"valve1", "valve2", "other"}
    assert res["outlier"]["f1"] > 0.9 and res["outlier"]["far"] < 5
    assert res["changepoint_counts"]["total"] == 6
    csv = (tmp_path / "out" / "skab" / "valve2" / "0.csv").read_text().splitlines()
    assert csv[0] == "datetime,score,alarm" and len(csv) == 1 + 700 - 400


def test_default_runner_drift_and_hysteresis(tmp_path: Path) -> None:
    """The default configuration on the same layout: the episode is found, the alarm holds through
    it, and a channel drifting through the whole run raises no flood of false alarms."""
    rng = np.random.default_rng(4)
    write_skab_file(tmp_path / "valve1" / "0.csv", rng, n=1100, start=700, end=900)
    f = tmp_path / "valve1" / "0.csv"
    lines = f.read_text().splitlines()
    drifted = [lines[0]]
    for i, line in enumerate(lines[1:]):
        cells = line.split(";")
        cells[5] = f"{float(cells[5]) - 0.02 * i:.5f}"  # Temperature falls through the run
        drifted.append(";".join(cells))
    f.write_text("\n".join(drifted) + "\n")
    res = eval_skab(tmp_path, quiet=True)
    assert res["outlier"]["mar"] < 5 and res["outlier"]["far"] < 5
