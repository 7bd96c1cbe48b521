"""The vectorised shape memory (detectors/resonance_batch.py) scores like the per-sensor reference
engine (detectors/resonance_core.py), on random and NAB-like series fed in rounds: exactly with
float64 categories, and within float32 rounding with the float32 categories the detector uses.

Float32 categories are the reference's categories rounded to 24 bits (6e-8 relative); a match sums
``4 x window`` of them, and the confidence divides by ``1 - match``, so a score moves by ~1e-6 at
most. The tolerance (1e-5) is far below any score that matters (thresholds are 0.3 and up) and a
decision that flips (a new category, a refinement) moves a score by far more, so the float32 runs
also check that every detection falls on the same reading as the reference's."""
from __future__ import annotations

import numpy as np
import pytest

from plantwatch.daemon.lab.evaluate.common import sensors
from plantwatch.detectors import create
from plantwatch.detectors.resonance_batch import ShapeBank
from plantwatch.detectors.resonance_core import ShapeMemory
from plantwatch.detectors.resonance_match import min_sums, row_sums

KW = dict(learn=200, stride=3, window=8, levels=80, margin=0.3, chomp=0.075, rho0=0.8, rho_cap=0.97, mask=12,
          grow=True, settle=0.5, extreme=1.0)


def nab_like(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Daily-cycle, noise, drift, steps, spikes, flat stretches, plateaus and a few missing values."""
    t = np.arange(length)
    X = np.empty((n, length))
    for j in range(n):
        kind = j % 5
        x = rng.normal(0, rng.uniform(0.05, 2), length)
        if kind == 0:
            x += 10 * np.sin(2 * np.pi * t / rng.integers(20, 300))
        elif kind == 1:
            x = np.cumsum(x) * 0.1
        elif kind == 2:
            x[rng.integers(300, length):] += rng.uniform(-20, 20)
        elif kind == 3:
            x = np.round(x * 3) + 50
            x[rng.integers(0, length, 5)] = rng.uniform(-500, 500, 5)
        else:
            x += np.where((t // rng.integers(30, 200)) % 2 == 0, 0.0, 7.0)
        s = rng.integers(250, length - 50)
        x[s:s + rng.integers(5, 50)] = x[s]  # a flat stretch
        x[rng.integers(0, length, 3)] = np.nan
        X[j] = x * rng.uniform(0.01, 1000) + rng.uniform(-1e3, 1e3)
    return X


DTYPES = [np.float64, np.float32]
ATOL = {np.float64: 1e-9, np.float32: 1e-5}


def compare(X: np.ndarray, kw: dict, rng: np.random.Generator, lanes: int = 256, dtype: type = np.float64) -> int:
    n, length = X.shape
    bank = ShapeBank(n, lanes=lanes, dtype=dtype, **kw)
    atol = ATOL[dtype]
    refs = [ShapeMemory(**kw) for _ in range(n)]
    got, want = np.zeros_like(X), np.zeros_like(X)
    for k in range(length):
        idx = rng.permutation(n)[: rng.integers(n // 2, n + 1)] if k % 7 == 3 else np.arange(n)
        if k % 11 == 5:  # two sensors, often far apart among the places
            idx = rng.permutation(n)[:2]
        got[idx, k] = bank.push(idx, X[idx, k])
        want[idx, k] = [refs[j].push(float(X[j, k])) for j in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    assert np.array_equal(got > 0, want > 0)  # the same detections
    for j in (0, n - 1):  # the state too
        a, b = bank.export(j).to_arrays(), refs[j].to_arrays()
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)
    return int((want > 0).sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_equals_reference_on_nab_like_series(seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    hits = compare(nab_like(rng, 25, 1500), KW, rng, dtype=dtype)
    print("detections", hits)
    assert hits >= 10  # the comparison covers detections, not only zeros


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lanes", [4, 8])
def test_batch_equals_reference_across_blocks_of_places(lanes: int, dtype: type) -> None:
    """Sensors in many blocks of the category store: full blocks are matched in place, partial
    rounds through copies, places are re-sorted and swapped as counts change."""
    rng = np.random.default_rng(11 + lanes)
    hits = compare(nab_like(rng, 30, 1200), dict(KW, learn=150), rng, lanes=lanes, dtype=dtype)
    print("detections", hits)
    assert hits >= 10


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_equals_reference_on_random_series_and_params(dtype: type) -> None:
    rng = np.random.default_rng(7)
    for kw in (dict(KW, stride=1, window=4, mask=3, settle=0.0, extreme=0.0),
               dict(KW, learn=64, stride=2, window=16, levels=20, grow=False),
               dict(KW, learn=100, stride=5, chomp=0.0, mask=0),
               dict(KW, learn=90, stride=9, window=4),  # blocks of 9 readings: sums of 8 and more
               dict(KW, learn=400, stride=1, window=64)):  # 256 elements per category: summed in halves
        X = rng.normal(0, 1, (12, 900)).cumsum(axis=1) * rng.uniform(0.1, 10, (12, 1))
        X[:, 600:620] += 40
        hits = compare(X, kw, rng, dtype=dtype)
        print(kw, "detections", hits)
        assert hits > 0


def test_several_readings_of_a_sensor_in_one_update_are_taken_in_order() -> None:
    """The detector splits a batch with repeated sensors into rounds of distinct sensors."""
    rng = np.random.default_rng(3)
    X = nab_like(rng, 3, 900)
    params = {"learn": 200, "stride": 3, "threshold": 0.4}
    one, batched = create("shape_novelty", params, sensors(["a", "b", "c"])), \
        create("shape_novelty", params, sensors(["a", "b", "c"]))
    want = np.zeros_like(X)
    for k in range(X.shape[1]):
        want[:, k] = one.update(np.arange(3), np.full(3, float(k)), X[:, k]).score
    got = np.zeros_like(X)
    for k in range(0, X.shape[1], 4):  # four readings of each sensor per call, interleaved
        idx = np.tile(np.arange(3), 4)
        col = np.repeat(np.arange(k, k + 4), 3)
        got[idx, col] = batched.update(idx, col.astype(float), X[idx, col]).score
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert (want > 0).sum() > 0
    assert one.bank.cats.W.dtype == np.float32  # the detector's store: what the float32 comparisons cover


@pytest.mark.parametrize("d", [3, 8, 9, 16, 24, 32, 100, 128, 256])
def test_row_sums_add_in_numpys_order(d: int) -> None:
    """The store's sums equal numpy's own row sums bit for bit (the reference engine sums rows)."""
    rng = np.random.default_rng(d)
    a = rng.random((5, d, 7)) * rng.choice([1e-9, 1.0, 1e9], (5, d, 7))
    want = np.moveaxis(a, 1, 2).copy().sum(axis=2)  # each row contiguous, as the reference has it
    assert np.array_equal(row_sums(a), want)
    x = rng.random((d, 7))
    assert np.array_equal(min_sums(x, a), np.moveaxis(np.minimum(x, a), 1, 2).copy().sum(axis=2))
