"""The category store's match pieces (detectors/resonance_match.py) against plain numpy: the sums
and the minimum a block keeps for its refinement, the refinement from that minimum, and the place
swaps that keep the store sorted by category count."""
from __future__ import annotations

import numpy as np
import pytest

from plantwatch.detectors.resonance_match import CategoryStore, min_sums, refine


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [4, 8, 32, 256])
def test_min_sums_keeps_the_minimum_it_sums(d: int, dtype: type) -> None:
    rng = np.random.default_rng(d)
    W = rng.random((6, d, 9)).astype(dtype)
    x = rng.random((d, 9)).astype(dtype)
    em = np.full_like(W, np.nan)
    got = min_sums(x, W, em)
    assert np.array_equal(em, np.minimum(x, W))
    assert np.array_equal(got, min_sums(x, W))  # the same sums, added in the same order
    assert np.array_equal(got, np.moveaxis(np.minimum(x, W), 1, 2).copy().sum(axis=2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pattern", ["dense", "few slots far apart", "none"])
def test_refine_from_the_kept_minimum_equals_refine_from_the_shape(pattern: str, dtype: type) -> None:
    rng = np.random.default_rng(5)
    W = rng.random((12, 32, 16)).astype(dtype)
    x = rng.random((32, 16)).astype(dtype)
    up = rng.random((12, 16)) < 0.45
    if pattern == "few slots far apart":
        up[:] = False
        up[1, 3], up[10, 7] = True, True
    elif pattern == "none":
        up[:] = False
    want = W.copy()
    for s, p in zip(*np.nonzero(up)):
        want[s, :, p] = np.minimum(want[s, :, p], x[:, p])
    a, b = W.copy(), W.copy()
    refine(a, x, up)
    em = np.minimum(x, b)
    refine(b, x, up, em)
    assert np.array_equal(a, want)
    assert np.array_equal(b, want)


def test_a_gaining_sensor_swaps_places_with_all_its_categories() -> None:
    """Sensors of several counts gain categories; every sensor keeps its own categories and sums,
    the places stay sorted by count, and the slots past a sensor's count stay empty."""
    rng = np.random.default_rng(2)
    n, dim = 40, 8
    store = CategoryStore(n, dim, lanes=8, dtype=np.float64)
    cats: list[list[np.ndarray]] = [[] for _ in range(n)]
    for _ in range(12):
        rows = np.flatnonzero(rng.random(n) < 0.4)
        x = rng.random((len(rows), dim))
        store.add(rows, x)
        for j, v in zip(rows, x):
            cats[j].append(v)
        assert store.ordered
        assert np.all(np.diff(store.k[store.at]) <= 0)
        for j in range(n):
            want = np.array(cats[j]).reshape(-1, dim)
            assert np.array_equal(store.get(j), want)
            b, lane = divmod(int(store.pos[j]), store.L)
            assert np.array_equal(store.nW[b, : len(want), lane], want.sum(axis=1))
            assert not store.W[b, len(want):, :, lane].any() and not store.nW[b, len(want):, lane].any()
