"""Group detectors pca_monitor and pyod_group on synthetic correlated data (latent factor model)."""
from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from plantwatch.detectors import REGISTRY, SensorInfo, create
from plantwatch.detectors.events import EventTracker
from plantwatch.detectors.group import FittedModel, RefitJob, fit_group_model
from plantwatch.detectors.pca_monitor import spe_limit

D = 8  # members
K = 2  # latent factors
NOISE = 0.15


def sensors(d=D):
    return [SensorInfo(id=f"s{i}", kind="pressure", unit="bar", range_min=-100, range_max=100, area="unit1")
            for i in range(d)]


def loadings(seed=1):
    return np.random.default_rng(seed).normal(size=(D, K))


def latent(rows, seed, flip: int | None = None, shift: dict | None = None):
    """x = L f + e; ``flip``: that member follows -L f (same marginal, broken correlation)."""
    rng = np.random.default_rng(seed)
    L = loadings()
    f = rng.normal(size=(rows, K))
    X = f @ L.T + NOISE * rng.normal(size=(rows, D))
    if flip is not None:
        X[:, flip] = -(f @ L[flip]) + NOISE * rng.normal(size=rows)
    for j, v in (shift or {}).items():
        X[:, j] += v
    return X + 10.0  # an operating point away from zero


def feed(det, X, t0=0.0, dt=10.0, learn=False):
    n = X.shape[1]
    idx = np.arange(n)
    scores, codes, group = [], [], []
    for i, row in enumerate(X):
        t = np.full(n, t0 + i * dt)
        if learn:
            det.learn_many(idx, t, row)
            continue
        out = det.update(idx, t, row)
        scores.append(out.score)
        codes.append(out.code)
        group.append(int(det.decider.code[0]))
    if learn:
        return None
    return np.array(scores), np.array(codes), np.array(group)


def trained(name="pca_monitor", rows=600, **params):
    p = {"window": 1000, "min_rows": 300, "refit_every": 0} | params
    det = create(name, p, sensors())
    feed(det, latent(rows, seed=10), learn=True)
    return det


# --- pca_monitor ----------------------------------------------------------------------------------

def test_pca_quiet_on_normal_and_fires_on_broken_correlation():
    det = trained()
    assert det.fitted
    _, _, group = feed(det, latent(500, seed=11), t0=10_000)
    assert (group != 0).mean() < 0.02  # decision-level false alarms
    fault = latent(100, seed=12, shift={3: 1.0})  # a 1.2-sigma offset: a drifting transmitter
    # the fault stays within every member's own normal range: per-sensor limits cannot see it
    normal = latent(5000, seed=13)
    lo, hi = normal.min(axis=0), normal.max(axis=0)
    assert np.all(fault >= lo - 0.5) and np.all(fault <= hi + 0.5)
    scores, codes, group = feed(det, fault, t0=20_000)
    assert (group != 0).mean() > 0.9
    first = int(np.argmax(group != 0))
    assert first <= 5
    # attributed to the member whose correlation broke: only its readings carry the condition
    assert codes[:, 3].any() and not np.delete(codes, 3, axis=1).any()
    det = trained()
    for i, row in enumerate(fault):
        det.update(np.arange(D), np.full(D, 20_000.0 + 10 * i), row)
        if det.decider.code[0]:
            break
    why = det.explain()
    assert why["sensor"] == "s3" and why["statistic"] == "spe" and why["top"][0][0] == "s3"
    assert why["spe"] > why["spe_limit"]
    # a sign flip keeps the member's distribution but breaks its correlation: caught while the
    # latent factors make the difference visible
    _, _, group = feed(trained(), latent(100, seed=15, flip=3), t0=20_000)
    assert (group != 0).mean() > 0.5


def test_pca_single_event_on_the_attributed_member():
    det = trained()
    tracker = EventTracker(det.n)
    X = np.vstack([latent(50, seed=11), latent(40, seed=12, flip=5), latent(80, seed=14)])
    n = X.shape[1]
    transitions = []
    for i, row in enumerate(X):
        out = det.update(np.arange(n), np.full(n, 10_000 + 10.0 * i), row)
        transitions += tracker.feed(out)
        assert np.count_nonzero(out.code) <= 1  # never more than one member holds the condition
    starts = [tr for tr in transitions if tr.old == 0]
    ends = [tr for tr in transitions if tr.new == 0]
    assert starts and all(tr.sensor == 5 for tr in transitions)  # one member, no alarm flood
    assert len(ends) == len(starts) and det.explain() is None


def test_pca_false_alarm_rate_matches_limit():
    """Per-row exceedances of the 99 % limits are near 1 % each on Gaussian data."""
    det = trained(rows=2000, window=2000, min_rows=2000, components=2)
    X = latent(20_000, seed=21)
    t2, spe = det.statistics(X)
    assert 0.005 < np.mean(t2 > det.lim[0]) < 0.02
    assert 0.005 < np.mean(spe > det.lim[1]) < 0.02
    m, a = 2000, 2
    assert det.lim[0] == pytest.approx(a * (m * m - 1) / (m * (m - a)) * stats.f.ppf(0.99, a, m - a))


def test_spe_limits_jackson_mudholkar_close_to_box():
    res = np.array([0.3, 0.2, 0.1, 0.05, 0.05, 0.02])
    jm = spe_limit(res, 0.99, "jackson_mudholkar")
    box = spe_limit(res, 0.99, "box")
    assert jm > res.sum() and box > res.sum()
    assert jm == pytest.approx(box, rel=0.1)
    # Monte Carlo: SPE = sum(res_k * chi2_1)
    rng = np.random.default_rng(0)
    q = np.quantile((rng.normal(size=(200_000, len(res))) ** 2) @ res, 0.99)
    assert jm == pytest.approx(q, rel=0.05)


def test_pca_variance_components_and_refit():
    det = trained(variance=0.9, refit_every=100, min_rows=200, window=400)
    assert 1 <= det.lim[3] <= D
    fits = det.lim[2]
    feed(det, latent(150, seed=30), t0=10_000)
    assert det.lim[2] == 400 and fits == 400  # window full: refits keep the window size
    assert det.counts[3] < 100


def test_pca_learns_only_normal_rows():
    det = trained(refit_every=50)
    before = int(det.counts[2])
    _, _, group = feed(det, latent(60, seed=12, flip=2), t0=10_000)
    flagged = int(np.count_nonzero(group))
    assert det.counts[2] == before + 60 - flagged


@pytest.mark.parametrize("name", ["pca_monitor", "pyod_group"])
def test_relearn_after_a_new_normal(name):
    extra = {"model": "PCA"} if name == "pyod_group" else {}
    det = trained(name, **extra)
    moved = latent(400, seed=16, shift={j: 4.0 for j in range(D)})  # the plant moved for good
    _, codes, group = feed(det, moved[:50], t0=10_000)
    assert group[-1] != 0 and codes[-1].any()
    det.relearn()
    assert not det.fitted and det.explain() is None
    _, codes, group = feed(det, moved[50:], t0=20_000)
    assert not codes[0].any()  # the holding member's event ends with its next reading
    assert det.fitted and (group[-50:] == 0).all()


# --- rows: cadence, causality, hostile input ------------------------------------------------------

def test_complete_mode_rows_form_when_all_members_reported():
    det = create("pca_monitor", {"window": 100, "min_rows": 20, "refit_every": 0}, sensors(3))
    det.update(np.array([0, 1]), np.array([1.0, 1.5]), np.array([1.0, 2.0]))
    assert det.counts[0] == 0
    det.update(np.array([0]), np.array([2.0]), np.array([1.1]))  # 0 again: still waiting for 2
    assert det.counts[0] == 0
    det.update(np.array([2]), np.array([3.0]), np.array([3.0]))
    assert det.counts[0] == 1 and det.clock[0] == 3.0
    assert det.buf[0].tolist() == [1.1, 2.0, 3.0]  # latest value of each member


def test_clocked_mode_carries_values():
    det = create("pca_monitor", {"step": 60, "window": 100, "min_rows": 20, "refit_every": 0}, sensors(3))
    det.update(np.array([0, 1, 2]), np.array([0.0, 0.0, 0.0]), np.array([1.0, 2.0, 3.0]))
    assert det.counts[0] == 1
    det.update(np.array([0]), np.array([30.0]), np.array([1.5]))
    assert det.counts[0] == 1
    det.update(np.array([1]), np.array([61.0]), np.array([2.5]))  # crosses 60: row with carried 0 and 2
    assert det.counts[0] == 2 and det.buf[1].tolist() == [1.5, 2.5, 3.0]


def test_stale_member_skips_rows():
    det = create("pca_monitor", {"step": 10, "max_age": 100, "window": 100, "min_rows": 20}, sensors(2))
    det.update(np.array([0, 1]), np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    for k in range(1, 30):
        det.update(np.array([0]), np.array([10.0 * k]), np.array([1.0]))
    assert det.counts[0] == 11 and det.counts[1] == 19  # member 1 older than 100 s from t=110


@pytest.mark.parametrize("name", ["pca_monitor", "pyod_group"])
def test_hostile_input_gives_finite_scores(name):
    extra = {"model": "IForest", "n_estimators": 20} if name == "pyod_group" else {}
    det = trained(name, **extra)
    rng = np.random.default_rng(5)
    X = latent(200, seed=40)
    X[rng.random(X.shape) < 0.2] = np.nan
    X[5, 2] = np.inf
    X[6, 3] = -np.inf
    X[7] = np.nan
    X[8, 1] = 1e308
    X[9, 4] = -1e308
    scores, codes, _ = feed(det, X, t0=10_000)
    assert np.all(np.isfinite(scores))
    assert np.isfinite(det.score_many(np.arange(D), np.full(D, 1e6), np.full(D, 1e300))).all()
    # the carried value is the last finite one
    assert np.all(np.isfinite(det.last))


def test_no_members_and_empty_calls():
    det = create("pca_monitor", {"window": 100, "min_rows": 20}, [])
    out = det.update(np.array([], dtype=np.int64), np.array([]), np.array([]))
    assert len(out.score) == 0
    det = trained()
    out = det.update(np.array([], dtype=np.int64), np.array([]), np.array([]))
    assert len(out.code) == 0


@pytest.mark.parametrize("name", ["pca_monitor", "pyod_group"])
def test_save_restore_identical_and_score_many_pure(name):
    extra = {"model": "IForest", "n_estimators": 30, "refit_every": 100} if name == "pyod_group" else {"refit_every": 100}
    det = trained(name, **extra)
    X = np.vstack([latent(150, seed=50), latent(30, seed=51, shift={0: 5.0, 1: 6.0, 2: 5.0, 3: -5.0, 5: 4.0, 6: 5.0}), latent(150, seed=52)])
    feed(det, X[:100], t0=10_000)
    state = pickle.loads(pickle.dumps(det.get_state()))
    twin = create(name, det.params, sensors())
    twin.set_state(state)
    # score_many does not change anything and equals what update reports
    idx = np.arange(D)
    s0 = det.score_many(idx, np.full(D, 20_000.0), X[100])
    after = det.get_state()
    for k, v in state.items():
        assert np.array_equal(np.asarray(v), np.asarray(after[k]), equal_nan=True), k
    a = feed(det, X[100:], t0=20_000)
    b = feed(twin, X[100:], t0=20_000)
    assert a[0][0][0] == pytest.approx(s0[0])
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    assert a[2].any()  # the fault was seen


def test_causal_outputs_do_not_depend_on_future():
    X = np.vstack([latent(80, seed=60), latent(20, seed=61, flip=4)])
    full = feed(trained(), X, t0=10_000)
    part = feed(trained(), X[:50], t0=10_000)
    for u, v in zip(full, part):
        assert np.array_equal(u[:50], v)


# --- pyod_group -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["ECOD", "IForest", "HBOS", "PCA"])
def test_pyod_models_fire_on_shift_and_stay_quiet(model):
    det = trained("pyod_group", model=model, window=600)
    _, _, group = feed(det, latent(300, seed=70), t0=10_000)
    assert (group != 0).mean() < 0.03
    fault = latent(60, seed=71, shift={0: 5.0, 1: 6.0, 2: 5.0, 3: -5.0, 5: 4.0, 6: 5.0})
    _, _, group = feed(det, fault, t0=20_000)
    assert (group != 0).mean() > 0.7, model
    assert det.explain()["sensor"] in {"s0", "s1", "s2", "s3", "s5", "s6"}


def test_pyod_deferred_refit_in_executor():
    det = create("pyod_group", {"model": "HBOS", "window": 300, "min_rows": 100, "refit_every": 50}, sensors())
    det.defer_refit = True
    X = latent(400, seed=80)
    feed(det, X[:100], learn=True)
    assert not det.fitted and det.needs_refit()
    job = det.refit_data()
    assert not det.needs_refit()  # one in flight
    with ThreadPoolExecutor(1) as pool:
        fitted = pool.submit(fit_group_model, job).result()
    assert det.install_model(fitted) and det.fitted
    model0 = det.model
    feed(det, X[100:160], t0=5_000)  # 60 more normal rows: due again
    assert det.needs_refit()
    job = det.refit_data()
    s_before = feed(det, X[160:170], t0=6_000)[0]  # scoring goes on with the old model meanwhile
    assert det.model is model0 and np.all(np.isfinite(s_before))
    stale = FittedModel(job.token + 999, job.X, None)
    assert not det.install_model(stale)
    det.abandon_refit(job.token)
    assert det.needs_refit()
    job = det.refit_data()
    assert isinstance(pickle.loads(pickle.dumps(job)), RefitJob)
    with ProcessPoolExecutor(1) as pool:  # picklable both ways
        fitted = pool.submit(fit_group_model, job).result()
    assert det.install_model(fitted) and det.model is not model0
    assert det.fit_X.shape == job.X.shape


def test_inline_refit_when_not_deferred():
    det = create("pyod_group", {"model": "PCA", "window": 300, "min_rows": 100, "refit_every": 50}, sensors())
    feed(det, latent(100, seed=81), learn=True)
    assert det.fitted and not det.needs_refit()


# --- params ---------------------------------------------------------------------------------------

def test_params_validation_messages():
    with pytest.raises(ValidationError, match="min_rows .* must not exceed window"):
        REGISTRY["pca_monitor"].Params(window=100, min_rows=200)
    with pytest.raises(ValidationError, match="components .* must be below min_rows"):
        REGISTRY["pca_monitor"].Params(components=60, min_rows=50, window=100)
    with pytest.raises(ValidationError):
        REGISTRY["pyod_group"].Params(model="LOF")
    with pytest.raises(ValidationError):
        REGISTRY["pca_monitor"].Params(variance=1.0)


@pytest.mark.parametrize("name", ["pca_monitor", "pyod_group"])
def test_example_params_valid_and_not_univariate(name):
    cls = REGISTRY[name]
    det = create(name, cls.example_params(), sensors())
    assert cls.univariate is False
    assert det.describe()["type"] == name


def _row_decision_arrays(state, severe, clear_ratio, confirm, clear, t, s):
    """The row decision as array formulas (the form it had before its one-slot path): the oracle."""
    code, above, below, since = state
    cur = code
    lim1 = np.where(cur >= 1, clear_ratio, 1.0)
    lim2 = np.where(cur >= 2, severe * clear_ratio, severe)
    raw = np.select([s >= lim2, s >= lim1], [2, 1], 0).astype(np.int8)
    above = np.where(s >= 1.0, above + 1, 0)
    below = np.where(raw == 0, below + 1, 0)
    new = np.where(cur == 0, np.where(above >= confirm, np.maximum(raw, 1), 0),
                   np.where(below >= clear, 0, np.maximum(raw, 1))).astype(np.int8)
    since = np.where(new != cur, t, since)
    return new, above, below, since, raw


@pytest.mark.parametrize("severe, clear_ratio, confirm, clear", [(3.0, 1.0, 1, 1), (2.0, 0.6, 3, 2), (1.5, 0.8, 1, 4)])
def test_row_decider_one_slot_step_is_the_array_rule(severe, clear_ratio, confirm, clear):
    """The group's row decision with plain numbers (``step_one``, the per-row path, and ``step``
    over several slots) gives the codes and state of the array formulas on every row of a score
    series that crosses every level."""
    from plantwatch.detectors.group_decide import RowDecider

    rng = np.random.default_rng(7)
    scores = np.r_[rng.gamma(1.0, 0.7, 3000), [np.nan, 0.0, np.inf, 1.0, severe, severe * clear_ratio]]
    one, two = RowDecider(1, severe, clear_ratio, confirm, clear), RowDecider(2, severe, clear_ratio, confirm, clear)
    state = (np.zeros(1, np.int8), np.zeros(1, np.int64), np.zeros(1, np.int64), np.full(1, -np.inf))
    seen = set()
    for k, s in enumerate(scores):
        new, above, below, since, raw = _row_decision_arrays(state, severe, clear_ratio, confirm, clear, float(k),
                                                             np.array([s]))
        state = (new, above, below, since)
        got = one.step_one(float(k), float(s))
        both = two.step(np.array([1, 0]), np.array([float(k)] * 2), np.array([s, s]), np.zeros(2))
        assert got == int(new[0]) and both.tolist() == [got, got], (k, s)
        assert (one.above[0], one.below[0], one.pending[0], one.since[0]) == (above[0], below[0], raw[0], since[0])
        seen.add(got)
    assert seen == {0, 1, 2}
