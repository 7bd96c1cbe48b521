"""robot_baseline: per-place baselines along a simulated inspection route."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from pydantic import ValidationError

from plantwatch.detectors import REGISTRY, SensorInfo, create

CH = [SensorInfo(id="R1-H2S", kind="robot", unit="ppm", range_min=0, range_max=100, area="site"),
      SensorInfo(id="R1-TEMP", kind="robot", unit="degC", range_min=-20, range_max=200, area="site"),
      SensorInfo(id="R1-ACOUSTIC", kind="robot", unit="dB", range_min=30, range_max=130, area="site")]
DT = 2.0  # seconds between readings
SPEED = 0.5  # m/s
ROUTE = [(10, 10), (90, 10), (90, 50), (10, 50)]
LAP = 2 * (80 + 40) / SPEED  # seconds


def where(t):
    """Position on the rectangular route at time t."""
    s = (t * SPEED) % (2 * (80 + 40))
    for (x0, y0), (x1, y1) in zip(ROUTE, ROUTE[1:] + ROUTE[:1]):
        d = abs(x1 - x0) + abs(y1 - y0)
        if s <= d:
            f = s / d
            return x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        s -= d
    return ROUTE[0]


def field(x, y, rng, leak=None, warm_spot=None):
    near = lambda px, py, r: (x - px) ** 2 + (y - py) ** 2 <= r * r  # noqa: E731
    h2s = 3.0 + 0.3 * rng.normal() if near(50, 10, 4) else 0.3 + 0.1 * rng.normal()  # a flange that always smells
    temp = 60 + rng.normal() if near(90, 30, 5) else 25 + 0.5 * rng.normal()  # a hot pipe
    ac = 85 + 1.5 * rng.normal() if near(10, 30, 6) else 55 + rng.normal()  # a pump
    if leak and near(*leak, 4):
        h2s = 2.5 + 0.2 * rng.normal()  # below what the flange shows every day
    if warm_spot and near(*warm_spot, 4):
        temp = 35 + 0.5 * rng.normal()  # far below the hot pipe, but not normal here
    return np.array([h2s, temp, ac])


def run(det, laps, t0=0.0, seed=0, with_pos=True, **kw):
    rng = np.random.default_rng(seed)
    idx = np.arange(3)
    out_codes, out_scores, places = [], [], []
    for k in range(int(laps * LAP / DT)):
        t = t0 + k * DT
        x, y = where(t)
        v = field(x, y, rng, **kw)
        pos = np.array([[x, y]] * 3) if with_pos else None
        out = det.update(idx, np.full(3, t), v, pos=pos) if with_pos else det.update(idx, np.full(3, t), v)
        out_codes.append(out.code)
        out_scores.append(out.score)
        places.append((x, y))
    return np.array(out_codes), np.array(out_scores), np.array(places)


@pytest.fixture(scope="module")
def trained_state():
    det = create("robot_baseline", {"cell": 5.0, "extent": [0, 0, 100, 60]}, CH)
    run(det, 12, seed=1)
    return pickle.dumps(det.get_state())


def fresh(state, **params):
    det = create("robot_baseline", {"cell": 5.0, "extent": [0, 0, 100, 60]} | params, CH)
    det.set_state(pickle.loads(state))
    return det


T1 = 12 * LAP


def test_quiet_on_normal_laps_despite_hot_and_smelly_places(trained_state):
    det = fresh(trained_state)
    codes, scores, _ = run(det, 4, t0=T1, seed=2)
    assert codes.any(axis=1).mean() < 0.005
    assert np.all(np.isfinite(scores))


def test_without_places_the_same_route_false_alarms(trained_state):
    """The global baseline alone flags the flange, the hot pipe and the pump every lap."""
    det = create("robot_baseline", {"cell": 5.0, "extent": [0, 0, 100, 60]}, CH)
    run(det, 12, seed=1, with_pos=False)
    codes, _, _ = run(det, 2, t0=T1, seed=2, with_pos=False)
    assert codes.any(axis=0).all()


def test_leak_at_a_quiet_place_fires_there(trained_state):
    """Found on the second pass: one anomalous pass only makes the place suspect (confirm_after)."""
    det = fresh(trained_state)
    codes, scores, places = run(det, 2, t0=T1, seed=3, leak=(30, 50))
    assert not codes[: int(LAP / DT)].any()  # first pass: suspect, not yet alarmed
    hit = codes[:, 0] != 0
    assert hit.sum() >= 3
    assert np.all(np.hypot(places[hit, 0] - 30, places[hit, 1] - 50) <= 6)
    assert not codes[:, 1:].any()
    # the flange (3 ppm, higher than the leak) stays quiet
    flange = np.hypot(places[:, 0] - 50, places[:, 1] - 10) <= 3
    assert flange.any() and not codes[flange, 0].any()


def test_warm_spot_far_below_hot_pipe_fires(trained_state):
    det = fresh(trained_state)
    codes, _, places = run(det, 2, t0=T1, seed=4, warm_spot=(60, 10))
    hit = codes[:, 1] != 0
    assert hit.sum() >= 3 and np.all(np.abs(places[hit, 0] - 60) <= 6)


def test_explain_and_global_fallback_for_new_places(trained_state):
    det = fresh(trained_state)
    det.update(np.arange(3), np.full(3, T1), np.array([0.3, 25.0, 55.0]), pos=np.array([[30.0, 50.0]] * 3))
    why = det.explain(1)
    assert why["baseline"] == "place" and why["cell"] == (32.5, 52.5) and why["sensor"] == "R1-TEMP"
    # a place never visited: global baseline
    det.update(np.arange(3), np.full(3, T1 + 2), np.array([0.3, 25.0, 55.0]), pos=np.array([[70.0, 30.0]] * 3))
    assert det.explain(0)["baseline"] == "global"
    # outside extent, NaN position, no position: global too
    for pos in (np.array([[500.0, 30.0]] * 3), np.full((3, 2), np.nan), None):
        s = det.score_many(np.arange(3), np.full(3, T1 + 4), np.array([0.3, 25.0, 55.0]), pos=pos)
        assert np.all(np.isfinite(s)) and np.all(s < 3)


def test_one_value_per_cell_per_learn_interval():
    det = create("robot_baseline", {"cell": 5.0, "learn_interval": 10.0}, CH[:1])
    for k in range(10):  # robot standing in one cell, 1 reading/s for 10 s
        det.update(np.array([0]), np.array([float(k)]), np.array([1.0]), pos=np.array([[2.0, 2.0]]))
    assert det.cpos[0, 0] == 1 and det.gpos[0] == 1
    det.update(np.array([0]), np.array([10.0]), np.array([1.0]), pos=np.array([[2.0, 2.0]]))
    assert det.cpos[0, 0] == 2


def test_sparse_cells_grow_with_the_route():
    det = create("robot_baseline", {"cell": 1.0, "extent": [0, 0, 1000, 1000], "learn_interval": 0}, CH[:1])
    assert len(det.slot_of) == 1_000_000 and det.cbuf.shape[1] == 0
    for k in range(100):
        det.update(np.array([0]), np.array([float(k)]), np.array([1.0]), pos=np.array([[k + 0.5, 3.5]]))
    assert len(det.cell_of) == 100 and det.cbuf.shape[1] >= 100
    assert det.slot_of[3 * 1000 + 42] == 42


def test_save_restore_identical_and_score_many_pure(trained_state):
    a = fresh(trained_state)
    rng = np.random.default_rng(9)
    pos = np.array([[30.0, 50.0]] * 3)
    before = a.get_state()
    s = a.score_many(np.arange(3), np.full(3, T1), np.array([2.5, 25.0, 55.0]), pos=pos)
    after = a.get_state()
    for k in before:
        assert np.array_equal(before[k], after[k], equal_nan=True), k
    out = a.update(np.arange(3), np.full(3, T1), np.array([2.5, 25.0, 55.0]), pos=pos)
    assert np.array_equal(s, out.score)
    b = create("robot_baseline", a.params, CH)
    b.set_state(pickle.loads(pickle.dumps(a.get_state())))
    ca, sa, _ = run(a, 1, t0=T1 + 2, seed=5, leak=(30, 50))
    cb, sb, _ = run(b, 1, t0=T1 + 2, seed=5, leak=(30, 50))
    assert np.array_equal(ca, cb) and np.array_equal(sa, sb)
    del rng


def test_causal(trained_state):
    full = run(fresh(trained_state), 1, t0=T1, seed=6, leak=(30, 50))
    part = run(fresh(trained_state), 0.5, t0=T1, seed=6, leak=(30, 50))
    k = len(part[0])
    assert np.array_equal(full[0][:k], part[0]) and np.array_equal(full[1][:k], part[1])


def test_hostile_values_and_positions(trained_state):
    det = fresh(trained_state)
    vals = np.array([[np.nan, np.inf, -np.inf], [1e308, -1e308, 0.0], [np.nan] * 3])
    poss = [np.array([[np.nan, 1.0], [np.inf, 2.0], [1e308, -1e308]]), np.full((3, 2), np.nan), None]
    for k, (v, p) in enumerate(zip(vals, poss)):
        out = det.update(np.arange(3), np.full(3, T1 + k), v, pos=p)
        assert np.all(np.isfinite(out.score))
    assert np.all(np.isfinite(det.gmed))


def test_many_at_once_equals_one_at_a_time():
    a = create("robot_baseline", REGISTRY["robot_baseline"].example_params(), CH)
    b = create("robot_baseline", REGISTRY["robot_baseline"].example_params(), CH)
    rng = np.random.default_rng(3)
    for k in range(300):
        v = rng.normal(size=3) + np.array([1, 25, 55])
        p = rng.uniform(0, 100, size=(3, 2))
        oa = a.update(np.arange(3), np.full(3, 2.0 * k), v, pos=p)
        for j in range(3):
            ob = b.update(np.array([j]), np.array([2.0 * k]), v[j:j + 1], pos=p[j:j + 1])
            assert ob.score[0] == oa.score[j] and ob.code[0] == oa.code[j]


def test_params_validation():
    P = REGISTRY["robot_baseline"].Params
    with pytest.raises(ValidationError, match="extent must be"):
        P(extent=(10, 0, 0, 10))
    with pytest.raises(ValidationError, match="cell_warmup .* must not exceed ring"):
        P(ring=4, cell_warmup=8)
    with pytest.raises(ValidationError, match="more than 4000000"):
        P(cell=0.2, extent=(0, 0, 1000, 1000))
    assert REGISTRY["robot_baseline"].needs_position is True
