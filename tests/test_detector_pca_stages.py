"""pca_monitor's stages (detrend_t, smooth, calibrate, limit_scale): validated params, a drift the
stage takes out, and a state that survives a restart mid-stream (docs/detectors-multivariate.md)."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from plantwatch.detectors import create
from plantwatch.daemon.lab.evaluate.common import sensors

STAGES = {"window": 300, "min_rows": 300, "refit_every": 0, "variance": 0.95, "detrend_t": 8.0,
          "detrend_settle": 50, "smooth": 0.9, "calibrate": 1.0, "limit_scale": 2.0, "confirm_rows": 1,
          "clear_rows": 1}


def rows(n: int = 900, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1, (n, 1))
    X = np.hstack([base + 0.3 * rng.normal(0, 1, (n, 1)) for _ in range(4)])
    X[:, 3] = 50.0 - 0.02 * np.arange(n) + 0.3 * rng.normal(0, 1, n)  # member 3 falls through the run
    return X


def stream(det, X: np.ndarray, t0: int = 0) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(X.shape[1], dtype=np.int64)
    score, code = np.zeros(len(X)), np.zeros(len(X), dtype=int)
    for i, r in enumerate(X):
        out = det.update(idx, np.full(len(idx), float(t0 + i)), r)
        score[i], code[i] = out.score[0], int(out.code.max())
    return score, code


def test_stage_params_are_validated() -> None:
    with pytest.raises(ValidationError, match="detrend_settle"):
        create("pca_monitor", STAGES | {"detrend_settle": 299}, sensors(list("abcd")))
    with pytest.raises(ValidationError, match="smooth"):
        create("pca_monitor", STAGES | {"smooth": 1.0}, sensors(list("abcd")))


def test_drift_stage_takes_a_steady_drift_out() -> None:
    X = rows()
    drift_off = {k: v for k, v in STAGES.items() if k != "detrend_t"}
    _, off = stream(create("pca_monitor", drift_off, sensors(list("abcd"))), X)
    det = create("pca_monitor", STAGES, sensors(list("abcd")))
    _, on = stream(det, X)
    assert det.drift.tolist() == [False, False, False, True]
    print("rows in alarm after the fit: drift stage off", int((off[300:] != 0).sum()), "on", int((on[300:] != 0).sum()))
    assert (off[300:] != 0).mean() > 0.2 and (on[300:] != 0).sum() == 0
    # a fault on a drifting member still shows: a step on member 3
    Y = X.copy()
    Y[700:760, 3] += 20.0
    _, fault = stream(create("pca_monitor", STAGES, sensors(list("abcd"))), Y)
    assert fault[700:760].any()


def test_stage_state_survives_a_restart() -> None:
    X = rows()
    a = create("pca_monitor", STAGES, sensors(list("abcd")))
    stream(a, X[:400])
    b = create("pca_monitor", STAGES, sensors(list("abcd")))
    b.set_state(a.get_state())
    sa, ca = stream(a, X[400:], 400)
    sb, cb = stream(b, X[400:], 400)
    assert np.array_equal(sa, sb) and np.array_equal(ca, cb)
