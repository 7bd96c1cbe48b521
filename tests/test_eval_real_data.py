"""The three evaluations on the shared benchmark data with the default presets (a few seconds)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plantwatch.daemon.lab.evaluate.nab import eval_nab
from plantwatch.daemon.lab.evaluate.skab import eval_skab
from plantwatch.daemon.lab.evaluate.tep import eval_tep


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
    """Mean FDR over the 18 faults (all but 3, 9, 15) >= 92 % at <= 1 % false alarms on d00_te.dat;
    the slow and random-variation faults 16, 19, 20, 21 are no longer the weak spot."""
    res = eval_tep(need(datasets / "tep" / "data"), quiet=True)
    f = res["faults"]
    kind = "fdr_test" if all("fdr_test" in f[k] for k in f) else "fdr_train"
    all18 = np.mean([f[k][kind] for k in range(1, 22) if k not in (3, 9, 15)])
    easy12 = np.mean([f[k][kind] for k in (1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14)])
    print(kind, f"mean18 {all18:.1f} easy12 {easy12:.1f}", {k: round(f[k][kind], 1) for k in (10, 16, 19, 20, 21)},
          f"FAR {res['far_d00_te_all']:.2f} / {res['far_d00_te_161_960']:.2f}")
    assert res["far_d00_te_all"] <= 1.0 and res["far_d00_te_161_960"] <= 1.0
    assert all18 >= 95.0 and easy12 >= 97.0
    assert res["summary"][kind]["all18"] == pytest.approx(all18)
    assert min(res["faults"][k][kind] for k in (16, 19, 20, 21)) >= 84.0


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
