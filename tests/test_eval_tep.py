"""PCA T²/SPE monitor and the TEP runner on a small synthetic folder in Braatz layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from plantwatch.daemon.lab.evaluate.tep import eval_tep
from plantwatch.detectors.pca_control import PCAMonitor, spe_limit, t2_limit
from plantwatch.detectors.scoring import tep


def latent_data(rng: np.random.Generator, n: int, fault: float = 0.0) -> np.ndarray:
    """52 correlated variables driven by 5 latent factors (TEP-like shape)."""
    load = np.random.default_rng(0).normal(size=(5, 52))
    X = rng.normal(size=(n, 5)) @ load + 0.3 * rng.normal(size=(n, 52))
    X[:, 3] += fault
    return X


def test_limits_match_textbook_values() -> None:
    # a = 1, n large: T² limit -> chi2(1) 99 % = 6.635; SPE with one residual eigenvalue -> lam * chi2(1)
    assert t2_limit(1, 100_000, 0.99) == pytest.approx(6.635, rel=1e-3)
    assert spe_limit(np.array([2.0]), 0.99) == pytest.approx(2.0 * 6.635, rel=0.02)


def test_streaming_equals_batch_and_false_alarms_near_alpha() -> None:
    rng = np.random.default_rng(1)
    mon = PCAMonitor(5, 0.99).fit(latent_data(rng, 2000))
    X = latent_data(rng, 400)
    t2, spe = mon.score_rows(X)
    rows = [mon.score_rows(x) for x in X]
    assert np.allclose(t2, [r[0][0] for r in rows]) and np.allclose(spe, [r[1][0] for r in rows])
    assert tep.rate(mon.alarm(*mon.score_rows(latent_data(rng, 5000)))) < 0.04


def test_scoring_helpers() -> None:
    alarm = np.zeros(960, dtype=bool)
    alarm[170:] = True
    alarm[5] = True
    assert tep.fdr(alarm) == pytest.approx(790 / 800)
    assert tep.far(alarm[:160]) == pytest.approx(1 / 160)
    assert tep.detection_delay(alarm) == 10


def test_runner_on_braatz_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    np.savetxt(tmp_path / "d00.dat", latent_data(rng, 500).T)  # stored transposed, as upstream
    np.savetxt(tmp_path / "d00_te.dat", latent_data(rng, 960))
    np.savetxt(tmp_path / "d01.dat", latent_data(rng, 480, fault=6.0))
    te = latent_data(rng, 960)
    te[160:, 3] += 6.0
    np.savetxt(tmp_path / "d01_te.dat", te)
    res = eval_tep(tmp_path, out=tmp_path / "out", config={"columns": list(range(52)), "n_components": 5,
                                                            "alpha": 0.99}, quiet=True)
    f1 = res["faults"][1]
    assert f1["fdr_test"] > 95 and f1["fdr_train"] > 95 and f1["far_test_first160"] < 5
    assert res["far_d00_te_all"] < 5
    assert (tmp_path / "out" / "tep" / "d01_te.csv").read_text().startswith("row,score,alarm,t2,spe")
