"""The three evaluations on the shared benchmark data with the default presets (a few seconds)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.lab.evaluate.nab import eval_nab
from plantwatch.daemon.lab.evaluate.skab import eval_skab
from plantwatch.daemon.lab.evaluate.tep import SITE, braatz_column, eval_tep, read_dat
from plantwatch.detectors.presets import TEP_LITERATURE



def need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


def test_nab_default_reaches_target(datasets: Path) -> None:
    res = eval_nab(need(datasets / "nab"), quiet=True)
    assert res["files"] == 58 and res["windows"] == 116
    print({k: round(v["score"], 1) for k, v in res["profiles"].items()})
    # issue 20's targets: standard >= 72 and low FP >= 62 (this preset: 72.5 / 64.6 / 77.6)
    assert res["profiles"]["standard"]["score"] >= 72.0
    assert res["profiles"]["reward_low_FP_rate"]["score"] >= 64.0
    assert res["profiles"]["reward_low_FN_rate"]["score"] >= 77.0


def test_tep_default_false_alarm_rate(datasets: Path) -> None:
    res = eval_tep(need(datasets / "tep" / "data"), quiet=True)
    assert res["far_d00_te_all"] <= 5.0 and res["far_d00_te_161_960"] <= 5.0
    assert res["faults"][1]["fdr_train"] > 95 and res["faults"][6]["fdr_train"] > 95


def test_tep_default_reaches_issue_targets(datasets: Path) -> None:
    """The shipped site config's detectors: mean FDR over the 18 faults (all but 3, 9, 15) >= 92 %
    at <= 1 % false alarms on d00_te.dat; the slow and random-variation faults 16, 19, 20, 21 are
    no longer the weak spot."""
    res = eval_tep(need(datasets / "tep" / "data"), quiet=True)
    f = res["faults"]
    kind = "fdr_test" if all("fdr_test" in f[k] for k in f) else "fdr_train"
    all18 = np.mean([f[k][kind] for k in range(1, 22) if k not in (3, 9, 15)])
    easy12 = np.mean([f[k][kind] for k in (1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14)])
    print(kind, f"mean18 {all18:.1f} easy12 {easy12:.1f}", {k: round(f[k][kind], 1) for k in (10, 16, 19, 20, 21)},
          f"FAR {res['far_d00_te_all']:.2f} / {res['far_d00_te_161_960']:.2f}")
    assert [d["id"] for d in res["detectors"]] == ["tep-pca", "tep-variability"]
    assert res["far_d00_te_all"] <= 1.0 and res["far_d00_te_161_960"] <= 1.0
    assert all18 >= 94.5 and easy12 >= 96.5  # issue targets 92 / 95; today 95.2 / 96.9 on dXX.dat
    assert res["summary"][kind]["all18"] == pytest.approx(all18)
    assert min(res["faults"][k][kind] for k in (16, 19, 20, 21)) >= 84.0


def test_tep_literature_preset_reproduces_published_false_alarms(datasets: Path) -> None:
    """The textbook monitor (TEP_LITERATURE, through the registered pca_monitor): 9 / 17 PCs at
    99 % limits give Yin et al.'s 6.13 % / 6.38 % false alarms on d00_te.dat rows 161-960."""
    data = need(datasets / "tep" / "data")
    far = [eval_tep(data, config=dict(TEP_LITERATURE, n_components=k), quiet=True)["far_d00_te_161_960"]
           for k in (9, 17)]
    print(far)
    assert far == pytest.approx([6.13, 6.38], abs=0.02)


def test_tep_runs_stay_inside_the_site_ranges(datasets: Path) -> None:
    """Every reading of the Braatz runs is below its sensor's range top in the site config, so the
    daemon scores all of them as the runner does (an over-range reading is not scored)."""
    data = need(datasets / "tep" / "data")
    cfg = load_config_text(resources.files("plantwatch.daemon.lab").joinpath(SITE).read_text(encoding="utf-8"))
    cols = [braatz_column(s.id) for s in cfg.sensors]
    top = np.array([s.range[1] for s in cfg.sensors])
    files = sorted(data.glob("d[0-9][0-9]*.dat"))
    assert len(files) >= 2
    highest = np.max([read_dat(p)[:, cols].max(axis=0) for p in files], axis=0)
    assert np.all(highest < top), [s.id for s, h, m in zip(cfg.sensors, highest, top) if h >= m]


def test_skab_default(datasets: Path) -> None:
    res = eval_skab(need(datasets / "skab" / "data"), quiet=True)
    assert res["files"] >= 16 and res["outlier"]["f1"] > 0.75


def test_skab_default_reaches_issue_targets(datasets: Path) -> None:
    """Pooled over valve1: F1 >= 0.80 with false alarms <= 12 % and missed alarms <= 20 % at once
    (the scorer's counts are checked against the rates it reports)."""
    res = eval_skab(need(datasets / "skab" / "data"), quiet=True)
    o = res["outlier"]
    print(f"F1 {o['f1']:.3f} FAR {o['far']:.1f} MAR {o['mar']:.1f}", res.get("halves"), res.get("anomaly_free"))
    assert o["far"] == pytest.approx(100 * o["fp"] / (o["fp"] + o["tn"]))
    assert o["mar"] == pytest.approx(100 * o["fn"] / (o["fn"] + o["tp"]))
    assert o["f1"] >= 0.85 and o["far"] <= 11.0 and o["mar"] <= 19.0
    # each half of the files on its own still beats the plain monitor's F1 and the targets' F1
    assert all(h["f1"] >= 0.84 for h in res["halves"].values())


def test_tep_normal_test_run_starts_without_a_false_alarm(datasets: Path, tmp_path: Path) -> None:
    """Regression: the runner restarted the PCA smoothing at every run, and the unsmoothed first row
    of d00_te.dat went over the smoothed rows' limit (a false alarm the process did not cause). The
    detectors now carry on from the end of d00.dat, as on the plant."""
    eval_tep(need(datasets / "tep" / "data"), out=tmp_path, quiet=True)
    rows = (tmp_path / "tep" / "d00_te.csv").read_text().splitlines()
    assert rows[0].startswith("row,score,alarm")
    first = rows[1].split(",")
    assert first[2] == "0", rows[1]
    assert sum(r.split(",")[2] == "1" for r in rows[1:]) <= 9  # at most 9 of 960 rows: FAR <= 1 %
