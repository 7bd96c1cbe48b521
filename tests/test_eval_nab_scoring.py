"""NAB scoring against the published numbers and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from plantwatch.detectors.scoring import nab


def sig(x: float) -> float:
    return -1.0 if x > 3 else 2 / (1 + math.exp(5 * x)) - 1


# numenta/NAB results/numenta/realTraffic/numenta_speed_7578.csv and numenta_standard_scores.csv
# (commit 07671350): HTM's detections at the corpus threshold 0.5126953125 (row index: anomaly
# score), the file's windows as row ranges, and the published per-file raw score. The low-FP /
# low-FN values are the sums of the file's published per-row S(t) columns.
SPEED_7578_N = 1127
SPEED_7578_WINDOWS = [[303, 331], [740, 768], [909, 937], [945, 973]]
SPEED_7578_DETECTIONS = {363: 0.544952187004, 632: 0.52465055532, 679: 0.58679383224,
                         754: 0.565666370505, 924: 0.544952187004, 960: 0.544952187004, 966: 0.608335100359}
SPEED_7578_PUBLISHED = {"standard": 1.23649741556,  # Score column, Totals file
                        "reward_low_FP_rate": -1 + 0.871604206333 + 2 * 0.847084961863 - 0.21855342899 - 0.44,
                        "reward_low_FN_rate": -2 + 0.871604206333 + 2 * 0.847084961863 - 0.109276714495 - 0.22}
SPEED_7578_COUNTS = {"tp": 4, "fp": 3, "fn": 112, "tn": 839}


def published_scores() -> np.ndarray:
    s = np.full(SPEED_7578_N, 0.02)
    s[500] = 0.5  # below the threshold: not a detection
    for i, v in SPEED_7578_DETECTIONS.items():
        s[i] = v
    return s


@pytest.mark.parametrize("profile", list(nab.PROFILES))
def test_reproduces_published_htm_file_score(profile: str) -> None:
    prof = nab.PROFILES[profile]
    rows = nab.file_rows(SPEED_7578_N, np.array(SPEED_7578_WINDOWS), prof)
    res = nab.score_file(published_scores(), rows, 0.5126953125, prof)
    assert res["score"] == pytest.approx(SPEED_7578_PUBLISHED[profile], abs=1e-9)
    assert {k: res[k] for k in SPEED_7578_COUNTS} == SPEED_7578_COUNTS


def test_published_per_row_weights() -> None:
    rows = nab.file_rows(SPEED_7578_N, np.array(SPEED_7578_WINDOWS), nab.PROFILES["standard"])
    assert rows.weight[363] == pytest.approx(-0.109276714495, abs=1e-12)
    assert rows.weight[754] == pytest.approx(0.871604206333, abs=1e-12)
    assert rows.weight[924] == pytest.approx(0.847084961863, abs=1e-12)
    assert rows.weight[632] == pytest.approx(-0.11)


def test_hand_computed_example() -> None:
    n = 100  # probation: floor(15) rows
    win = np.array([[40, 49]])
    s = np.zeros(n)
    s[[10, 20, 42, 45, 55]] = 1.0  # 10 is probationary, 20 before the window, 42/45 inside, 55 after
    prof = nab.PROFILES["standard"]
    res = nab.score_file(s, nab.file_rows(n, win, prof), 0.5, prof)
    tp = sig(-(49 - 42 + 1) / 10) / sig(-1.0)  # only the earliest detection of the window counts
    fp_before = -0.11
    fp_after = 0.11 * sig(abs(49 - 55) / (10 - 1))
    assert res["score"] == pytest.approx(tp + fp_before + fp_after, abs=1e-12)
    assert nab.probation_length(100) == 15 and nab.probation_length(10_000) == 750


def corpus(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    scores, windows = {}, {}
    for k in range(6):
        n = int(rng.integers(300, 900))
        lo = int(rng.integers(int(0.2 * n), int(0.6 * n)))
        w = np.array([[lo, lo + 20], [lo + 80, lo + 110]]) if k % 3 else np.zeros((0, 2), np.int64)
        windows[f"f{k}.csv"] = w
        scores[f"f{k}.csv"] = np.round(rng.random(n), 2)
    return scores, windows


@pytest.mark.parametrize("profile", list(nab.PROFILES))
def test_null_and_perfect_detectors(profile: str) -> None:
    scores, windows = corpus()
    null = {k: np.zeros(len(v)) for k, v in scores.items()}
    perfect = {}
    for k, v in scores.items():
        p = np.zeros(len(v))
        p[windows[k][:, 0]] = 1.0  # a detection on the first row of every window, nothing else
        perfect[k] = p
    assert nab.score_corpus(null, windows, [profile])[profile].normalised == pytest.approx(0.0)
    assert nab.score_corpus(perfect, windows, [profile])[profile].normalised == pytest.approx(100.0)


@pytest.mark.parametrize("profile", list(nab.PROFILES))
def test_sweep_equals_per_file_scoring_at_every_threshold(profile: str) -> None:
    scores, windows = corpus(1)
    prof = nab.PROFILES[profile]
    names = sorted(scores)
    rows = [nab.file_rows(len(scores[f]), windows[f], prof) for f in names]
    sw = nab.sweep([scores[f] for f in names], rows, prof)
    for th in [1.5, 0.99, 0.9, 0.5, 0.31, 0.0]:
        direct = sum(nab.score_file(scores[f], r, th, prof)["score"] for f, r in zip(names, rows))
        assert sw.at(th) == pytest.approx(direct, abs=1e-9)
    th, best = sw.best()
    assert best == pytest.approx(max(sw.scores))
    res = nab.score_corpus(scores, windows, [profile])[profile]
    assert res.threshold == th and res.raw == pytest.approx(best)


def test_tie_goes_to_highest_threshold() -> None:
    s = np.zeros(200)
    s[150] = 0.9  # inside the window: the best possible
    s[160] = 0.8  # later in the same window: free, equal score
    res = nab.score_corpus({"a": s}, {"a": np.array([[150, 170]])}, ["standard"])["standard"]
    assert res.threshold == 0.9 and res.normalised == pytest.approx(100.0)


def test_normalisation_matches_published_htm_total() -> None:
    # NAB README: numenta standard raw score 46.634 over 116 windows -> 70.1
    assert nab.normalise(46.6344501971, 116, nab.PROFILES["standard"]) == pytest.approx(70.10, abs=0.005)
