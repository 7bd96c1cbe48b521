"""The three evaluations on the shared benchmark data with the default presets (a few seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest

from plantwatch.daemon.evaluate.nab import eval_nab
from plantwatch.daemon.evaluate.skab import eval_skab
from plantwatch.daemon.evaluate.tep import eval_tep


def need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


def test_nab_default_reaches_target(datasets: Path) -> None:
    res = eval_nab(need(datasets / "nab"), quiet=True)
    assert res["files"] == 58 and res["windows"] == 116
    assert res["profiles"]["standard"]["score"] >= 65.0


def test_tep_default_false_alarm_rate(datasets: Path) -> None:
    res = eval_tep(need(datasets / "tep" / "data"), quiet=True)
    assert res["far_d00_te_all"] <= 5.0 and res["far_d00_te_161_960"] <= 5.0
    assert res["faults"][1]["fdr_train"] > 95 and res["faults"][6]["fdr_train"] > 95


def test_skab_default(datasets: Path) -> None:
    res = eval_skab(need(datasets / "skab" / "data"), quiet=True)
    assert res["files"] >= 16 and res["outlier"]["f1"] > 0.75
