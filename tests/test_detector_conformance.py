"""Conformance suite: every registered detector goes through the same checks.

The checks are generated over :data:`plantwatch.detectors.REGISTRY`, so a detector added in
another module (or branch) is checked as soon as it registers -- river's ``check_estimator``
idea applied to the plantwatch protocol. A detector takes part through two optional class
methods: ``example_params()`` (a valid params dict that makes it do something on the test
stream) and ``example_sensors(n)`` (sensors it can watch). Detectors whose outputs depend on
other sensors set ``univariate = False`` and skip the one-call-per-sensor equivalence check.

The test stream is a few sensors over a few hundred irregular rounds: noise around a slow cycle,
with steps, stuck values, spikes, ramps, drifts, excursions below and above the range and long
gaps (with a ``tick`` inside each gap), plus ``tick`` calls, so that every detector enters and leaves
conditions during the run.
"""
from __future__ import annotations

import ast
import inspect
import json
import math
import pickle
import typing
import warnings

import numpy as np
import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import ValidationError

from plantwatch.detectors import REGISTRY, SensorInfo
from plantwatch.detectors.base import Detector, Output

NAMES = sorted(REGISTRY)
N_SENSORS = 5
ROUNDS = 320
T0 = 1_700_000_000.0
SEVERITIES = {"low", "medium", "high", "critical"}


# --- helpers ------------------------------------------------------------------------------------
def example_params(cls) -> dict:
    fn = getattr(cls, "example_params", None)
    return dict(fn()) if fn else {}


def example_sensors(cls, n: int = N_SENSORS) -> list[SensorInfo]:
    fn = getattr(cls, "example_sensors", None)
    if fn is not None:
        return list(fn(n))
    return list(Detector.example_sensors.__func__(cls, n))


def build(cls, n: int = N_SENSORS) -> Detector:
    return cls(cls.Params.model_validate(example_params(cls)), example_sensors(cls, n))


def make_stream(sensors, rounds: int = ROUNDS, seed: int = 0) -> list[tuple]:
    """Events: ("update", idx, t, x) and ("tick", now). Readings scale with each sensor's range."""
    rng = np.random.default_rng(seed)
    n = len(sensors)
    lo = np.array([s.range_min for s in sensors])
    span = np.array([s.range_max - s.range_min for s in sensors])
    level = np.full(n, 0.5)
    offset = np.zeros(n)
    mode = ["normal"] * n
    left = np.zeros(n, dtype=int)
    last_x = lo + 0.5 * span
    T = T0
    events: list[tuple] = []
    for r in range(rounds):
        gap = rng.uniform(600, 4000) if rng.random() < 0.015 else 0.0
        if gap:  # the daemon's clock ticks on while nothing arrives (time-driven detectors fire here)
            events.append(("tick", T + 0.5 * gap))
        T += 0.5 + rng.exponential(8.0) + gap
        present = rng.random(n) < 0.85
        if not present.any():
            present[rng.integers(n)] = True
        idx = rng.permutation(np.flatnonzero(present))  # any order within a call
        t = T + rng.uniform(0.0, 0.4, len(idx))
        x = np.empty(len(idx))
        for k, i in enumerate(idx):
            if left[i] <= 0:
                mode[i], left[i] = "normal", 0
                if rng.random() < 0.06:
                    mode[i] = str(rng.choice(["step", "stuck", "spike", "ramp", "drift", "dip", "high"]))
                    left[i] = {"spike": 1, "dip": 3, "high": 3}.get(mode[i], int(rng.integers(20, 45)))
                    if mode[i] == "step":
                        level[i] = 0.5 + rng.choice([-0.3, 0.3])
            left[i] -= 1
            base = level[i] + 0.1 * math.sin(2 * math.pi * (t[k] - T0) / 3000.0) + rng.normal(0, 0.01)
            m = mode[i]
            if m == "stuck":
                x[k] = last_x[i]
                continue
            if m == "ramp":
                level[i] -= 0.015
            elif m == "drift":
                offset[i] += 0.004
            u = base + offset[i]
            if m == "spike":
                u = float(rng.choice([0.98, 1.05, -0.03, 0.02]))
            elif m == "dip":
                u = float(rng.choice([-0.2, -0.03, -0.06]))
            elif m == "high":
                u = 1.1
            if m == "normal" and left[i] == -1:
                level[i] += 0.2 * (0.5 - level[i])  # drift back after a step
                offset[i] *= 0.9
            x[k] = lo[i] + u * span[i]
            last_x[i] = x[k]
        events.append(("update", idx, t, x))
        if r % 7 == 6:
            events.append(("tick", T + 0.45))
    return events


def run(det: Detector, events, *, split: bool = False, reverse: bool = False) -> dict:
    """Feed events; return {(kind, sensor, t): (score, code)} and check output shapes on the way."""
    out: dict = {}
    for ev in events:
        if ev[0] == "tick":
            o = det.tick(ev[1])
            if o is not None:
                for i, s, c in zip(o.idx, o.score, o.code):
                    out[("tick", int(i), ev[1])] = (float(s), int(c))
            continue
        _, idx, t, x = ev
        calls = [[k] for k in range(len(idx))] if split else [list(range(len(idx)))[::-1 if reverse else 1]]
        for sel in calls:
            sel = np.array(sel, dtype=np.int64)
            o = det.update(idx[sel].copy(), t[sel].copy(), x[sel].copy())
            assert len(o.score) == len(o.code) == len(sel)
            assert np.array_equal(o.idx, idx[sel])
            for i, tt, s, c in zip(idx[sel], t[sel], o.score, o.code):
                out[("update", int(i), float(tt))] = (float(s), int(c))
    return out


def ordered(out: dict) -> list:
    return [out[k] for k in sorted(out, key=lambda k: (k[2], k[1], k[0]))]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def first_difference(a: dict, b: dict) -> str:
    for k in sorted(a.keys() | b.keys(), key=lambda k: (k[2], k[1], k[0])):
        if a.get(k) != b.get(k):
            return f"first difference at {k}: {a.get(k)} vs {b.get(k)}"
    return "no difference"


def states_equal(s1: dict, s2: dict) -> bool:
    if s1.keys() != s2.keys():
        return False
    for k in s1:
        a, b = np.asarray(s1[k]), np.asarray(s2[k])
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind in "fc" and not np.array_equal(a, b, equal_nan=True):
            return False
        if a.dtype.kind not in "fc" and not np.array_equal(a, b):
            return False
    return True


@pytest.fixture(scope="module")
def streams():
    cache: dict = {}

    def get(name, seed=0, rounds=ROUNDS):
        key = (name, seed, rounds)
        if key not in cache:
            cache[key] = make_stream(example_sensors(REGISTRY[name]), rounds, seed)
        return cache[key]

    return get


# --- declaration checks -------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_declaration(name):
    cls = REGISTRY[name]
    assert cls.name == name
    assert cls.CONDITIONS[0] == "normal"
    assert len(set(cls.CONDITIONS)) == len(cls.CONDITIONS), "condition names must be distinct"
    assert len(cls.CONDITIONS) <= 127, "codes are int8"
    for cond, sev in cls.SEVERITY.items():
        assert cond in cls.CONDITIONS[1:], f"SEVERITY names unknown condition {cond!r}"
        assert sev in SEVERITIES, f"severity {sev!r} of {cond!r} is not one of {sorted(SEVERITIES)}"
    missing = [c for c in cls.CONDITIONS[1:] if c not in cls.SEVERITY]
    assert not missing, f"conditions without a default severity: {missing}"
    assert isinstance(getattr(cls, "univariate", True), bool)


@pytest.mark.parametrize("name", NAMES)
def test_params_documented(name):
    for fname, f in REGISTRY[name].Params.model_fields.items():
        assert f.description, f"{name}.{fname} has no description"


@pytest.mark.parametrize("name", NAMES)
def test_example_params_valid_and_describe_json(name):
    det = build(REGISTRY[name])
    d = det.describe()
    assert d["type"] == name
    json.dumps(d)  # (h) describe() is JSON-serialisable
    json.loads(json.dumps(det.params.model_dump(mode="json")))


# --- (e) bad params -----------------------------------------------------------------------------
def _is_int(annotation) -> bool:
    args = typing.get_args(annotation)
    return annotation is int or (bool(args) and int in args and float not in args)


def _is_float(annotation) -> bool:
    args = typing.get_args(annotation)
    return annotation is float or (bool(args) and float in args)


def bad_values(field) -> list:
    """Values just beyond each bound of a field (plus NaN / inf for float fields)."""
    out = []
    as_int = _is_int(field.annotation)
    for m in field.metadata:
        if isinstance(m, Gt):
            out.append(m.gt)
        elif isinstance(m, Lt):
            out.append(m.lt)
        elif isinstance(m, Ge):
            out.append(m.ge - 1 if as_int else m.ge - max(abs(m.ge), 1.0) * 0.01)
        elif isinstance(m, Le):
            out.append(m.le + 1 if as_int else m.le + max(abs(m.le), 1.0) * 0.01)
    if _is_float(field.annotation):
        out += [float("nan"), float("inf"), float("-inf")]
    return out


def literal_choices(annotation) -> list | None:
    for a in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(a) is typing.Literal:
            return list(typing.get_args(a))
    return None


@pytest.mark.parametrize("name", NAMES)
def test_bad_params_rejected(name):
    cls = REGISTRY[name]
    base = example_params(cls)
    checked = 0
    for fname, f in cls.Params.model_fields.items():
        for v in bad_values(f):
            with pytest.raises(ValidationError):
                cls.Params.model_validate({**base, fname: v})
            checked += 1
        if literal_choices(f.annotation) is not None:
            with pytest.raises(ValidationError):
                cls.Params.model_validate({**base, fname: "no-such-choice"})
    with pytest.raises(ValidationError):
        cls.Params.model_validate({**base, "no_such_param": 1})
    if cls.Params.model_fields:
        fname = next(iter(cls.Params.model_fields))
        with pytest.raises(ValidationError):
            cls.Params.model_validate({**base, fname: {"not": "a value"}})


# --- behaviour on the test stream ---------------------------------------------------------------
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_determinism_and_conditions(name, streams):
    """(c) two runs give identical output; codes are valid; the example exercises conditions."""
    cls = REGISTRY[name]
    ev = streams(name)
    a, b = run(build(cls), ev), run(build(cls), ev)
    assert same(a, b), first_difference(a, b)
    codes = np.array([c for _, c in a.values()])
    scores = np.array([s for s, _ in a.values()])
    assert np.isfinite(scores).all()
    assert ((codes >= 0) & (codes < len(cls.CONDITIONS))).all()
    assert (codes != 0).any(), f"{name}: example_params never left normal on the test stream"


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_causality(name, streams):
    """(a) outputs for the first k events do not depend on what comes after them."""
    cls = REGISTRY[name]
    ev = streams(name)
    k = len(ev) // 2
    rng = np.random.default_rng(11)
    # same first k events, then a different future: other values, same (increasing) times
    tail = [("update", e[1], e[2], e[3] * rng.uniform(0.3, 1.7, len(e[3])) - 3.0) if e[0] == "update" else e
            for e in ev[k:]]
    a = run(build(cls), ev[:k])
    b = run(build(cls), ev[:k] + tail)
    b_prefix = {key: v for key, v in b.items() if key in a}
    assert same(a, b_prefix), first_difference(a, b_prefix)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_save_restore(name, streams):
    """(b) half a run, get_state, pickle, restore into a fresh instance, second half: identical."""
    cls = REGISTRY[name]
    ev = streams(name)
    k = len(ev) // 2
    whole = build(cls)
    full = run(whole, ev)
    first = build(cls)
    run(first, ev[:k])
    state = first.get_state()
    blob = pickle.dumps(state)
    second = build(cls)
    second.set_state(pickle.loads(blob))
    assert states_equal(second.get_state(), state), "get_state after set_state differs from what was restored"
    rest = run(second, ev[k:])
    head = run(build(cls), ev[:k])
    expected = {key: v for key, v in full.items() if key not in head}
    assert same(rest, expected), first_difference(rest, expected)
    assert states_equal(second.get_state(), whole.get_state()), "final state differs after a restore"


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_score_does_not_change_state(name, streams):
    cls = REGISTRY[name]
    ev = streams(name)
    det = build(cls)
    run(det, ev[: len(ev) // 2])
    before = det.get_state()
    _, idx, t, x = next(e for e in ev[len(ev) // 2:] if e[0] == "update")
    det.score_many(idx.copy(), t.copy(), x.copy())
    if hasattr(det, "evaluate_many"):
        det.evaluate_many(idx.copy(), t.copy(), x.copy())
    assert states_equal(det.get_state(), before), "score_many / evaluate_many changed the state"


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_input_and_outputs_not_mutated(name, streams):
    """(d) inputs are left alone, and returned arrays are not changed by later calls."""
    cls = REGISTRY[name]
    det = build(cls)
    kept = []
    for e in streams(name):
        if e[0] != "update":
            det.tick(e[1])
            continue
        _, idx, t, x = e
        ci, ct, cx = idx.copy(), t.copy(), x.copy()
        o = det.update(idx, t, x)
        assert np.array_equal(idx, ci) and np.array_equal(t, ct) and np.array_equal(x, cx, equal_nan=True)
        kept.append((o, o.score.copy(), o.code.copy()))
    for o, s, c in kept:
        assert np.array_equal(o.score, s) and np.array_equal(o.code, c), "an earlier Output changed"


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", NAMES)
def test_order_within_call_irrelevant(name, streams):
    """Reversing the order of sensors within each call changes nothing (all detectors)."""
    cls = REGISTRY[name]
    ev = streams(name)
    a, b = run(build(cls), ev), run(build(cls), ev, reverse=True)
    assert same(a, b), first_difference(a, b)


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", [n for n in NAMES if getattr(REGISTRY[n], "univariate", True)])
def test_vectorised_equals_one_at_a_time(name, streams):
    """(g) scoring N sensors in one call equals scoring them one call each. Detectors that compare
    sensors with each other (``univariate = False``: neighbour drift, group models) are left out:
    splitting their sensors changes what they see, by design."""
    cls = REGISTRY[name]
    ev = streams(name)
    a, b = run(build(cls), ev), run(build(cls), ev, split=True)
    assert same(a, b), first_difference(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_empty_call(name):
    det = build(REGISTRY[name])
    e = np.empty(0)
    o = det.update(np.empty(0, dtype=np.int64), e, e)
    assert len(o.score) == len(o.code) == 0


@pytest.mark.parametrize("name", NAMES)
def test_hostile_values(name, streams):
    """(f) NaN, +-inf, 1e300 readings: no exception, finite scores, valid codes, and afterwards
    normal readings still give finite scores."""
    cls = REGISTRY[name]
    rng = np.random.default_rng(7)
    bad = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0, -0.0, 1e308])
    ev = []
    for e in streams(name):
        if e[0] == "update" and rng.random() < 0.3:
            x = e[3].copy()
            hit = rng.random(len(x)) < 0.3
            x[hit] = rng.choice(bad, hit.sum())
            e = ("update", e[1], e[2], x)
        ev.append(e)
    det = build(cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = run(det, ev)
    scores = np.array([s for s, _ in out.values()])
    codes = np.array([c for _, c in out.values()])
    assert np.isfinite(scores).all()
    assert ((codes >= 0) & (codes < len(cls.CONDITIONS))).all()
    # the detector must still be usable: a hostile-free continuation gives finite scores
    later = streams(name, seed=3, rounds=40)
    shift = max(e[2].max() for e in ev if e[0] == "update") - T0 + 100.0
    tail = [("update", e[1], e[2] + shift, e[3]) if e[0] == "update" else ("tick", e[1] + shift) for e in later]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = run(det, tail)
    assert np.isfinite([s for s, _ in out.values()]).all()
    json.dumps(det.describe())
    pickle.loads(pickle.dumps(det.get_state()))


# --- capabilities: declared in detectors/base.py, never found with hasattr ----------------------
#: a capability flag and the methods a detector overrides exactly when it declares the flag
CAPABILITY_METHODS = {
    "DEFERS_REFIT": ("needs_refit", "refit_data", "install_model", "abandon_refit"),
    "TAKES_TRANSFERS": ("declare_transfer",),
    "MARKS_STALE": ("mark_stale",),
}
ALWAYS_CALLED = ("restart_clock",)  # the daemon calls these on every detector (no flag)


def test_base_declares_capabilities():
    """Every capability the daemon uses is declared, with a default, in the base class."""
    for flag in (*CAPABILITY_METHODS, "needs_position", "defer_refit"):
        assert flag in vars(Detector), f"detectors/base.py does not declare {flag}"
        assert getattr(Detector, flag) is False
    for name in (*(m for ms in CAPABILITY_METHODS.values() for m in ms), *ALWAYS_CALLED):
        assert callable(vars(Detector).get(name)), f"detectors/base.py has no default {name}()"


def test_daemon_finds_no_capability_by_name():
    """daemon/detection.py reads declared flags; it never asks hasattr/getattr of a detector."""
    import plantwatch.daemon.detection as detection

    tree = ast.parse(inspect.getsource(detection))
    calls = [f"line {n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
             if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("hasattr", "getattr")]
    assert calls == []


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_consistent(name, streams):
    """A declared capability is implemented, and an implemented one is declared."""
    cls = REGISTRY[name]
    for flag, methods in CAPABILITY_METHODS.items():
        declared = getattr(cls, flag)
        assert isinstance(declared, bool), f"{name}.{flag} must be a bool"
        for m in methods:
            overridden = getattr(cls, m) is not getattr(Detector, m)
            assert overridden == declared, (
                f"{name}: {flag} is {declared} but {m}() is {'' if overridden else 'not '}overridden")
    takes_pos = "pos" in inspect.signature(cls.update).parameters
    assert takes_pos == cls.needs_position, f"{name}: needs_position is {cls.needs_position}, update(pos=) {takes_pos}"
    det = build(cls)
    assert det.defer_refit is False  # only the daemon turns deferred refits on
    ev = streams(name, rounds=30)
    run(det, ev)
    now = max(e[2].max() for e in ev if e[0] == "update") + 1.0
    det.restart_clock(now)  # every detector answers; the default does nothing
    out = det.mark_stale(np.arange(min(2, det.n)), now)
    if cls.MARKS_STALE:
        assert isinstance(out, Output) and len(out.idx) == len(out.code)
    else:
        assert out is None
    if cls.needs_position:  # scoring with positions: one (x, y) per reading
        upd = next(e for e in streams(name, seed=5, rounds=40)[::-1] if e[0] == "update")
        idx, t = upd[1], upd[2] + (now - T0) + 10.0
        o = det.update(idx, t, upd[3], pos=np.column_stack([np.arange(len(idx), dtype=float), np.zeros(len(idx))]))
        assert isinstance(o, Output) and len(o.idx) == len(idx)
    if cls.DEFERS_REFIT:
        det.defer_refit = True
        run(det, streams(name, seed=9, rounds=ROUNDS))
        if det.needs_refit():  # a job goes out, and a failed one can be abandoned
            job = det.refit_data()
            assert not det.needs_refit()  # in flight
            det.abandon_refit(job.token)
    else:
        assert det.needs_refit() is False
        with pytest.raises(NotImplementedError):
            det.refit_data()
