"""Composition of detector conditions: k-of-n votes within a time window."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from pydantic import ValidationError

from plantwatch.detectors import REGISTRY, SensorInfo, create
from plantwatch.detectors.compose import Composer, CompositionConfig
from plantwatch.detectors.events import EventTracker

GAS = [SensorInfo(id="G1", kind="gas", unit="ppm", range_min=0, range_max=100, area="a", neighbours=("G2",)),
       SensorInfo(id="G2", kind="gas", unit="ppm", range_min=0, range_max=100, area="a", neighbours=("G3",)),
       SensorInfo(id="G3", kind="gas", unit="ppm", range_min=0, range_max=100, area="a"),
       SensorInfo(id="G4", kind="gas", unit="ppm", range_min=0, range_max=100, area="b")]
CONDS = {"h2s-limit": REGISTRY["limit"].CONDITIONS, "h2s-z": REGISTRY["robust_zscore"].CONDITIONS}
HIGH = REGISTRY["limit"].CONDITIONS.index("high")
LOW = REGISTRY["limit"].CONDITIONS.index("low")


def neighbours_cfg(**kw):
    return CompositionConfig.model_validate({"id": "gas-2oo", "inputs": [{"detector": "h2s-limit", "conditions": ["high", "high_high"]}],
                                             "scope": "neighbourhood", "require": 2, "within": 60} | kw)


def feed(c, det, sensor, t, code):
    return c.feed(det, np.array([sensor]), np.array([float(t)]), np.array([code]))


def test_two_neighbours_high_within_window():
    c = Composer(neighbours_cfg(), GAS, CONDS)
    out = feed(c, "h2s-limit", 0, 0, HIGH)
    assert not out.code.any()  # one sensor alone: no composite
    out = feed(c, "h2s-limit", 1, 30, HIGH)  # its neighbour 30 s later
    assert dict(zip(out.idx.tolist(), out.code.tolist())) == {0: 1, 1: 1, 2: 0}  # G3 is silent: never alarmed
    assert out.score[list(out.idx).index(0)] == 2
    # G1 clears at 100; its vote counts until 160
    out = feed(c, "h2s-limit", 0, 100, 0)
    assert c.code[0] == 1 and c.code[1] == 1
    assert c.tick(150).code.tolist() == [1, 1]
    out = c.tick(161)  # G1's vote expired: G1 has none of its own, G2 is alone
    assert out.idx.tolist() == [0, 1] and out.code.tolist() == [0, 0]
    assert c.tick(200) is None


def test_not_neighbours_or_too_far_apart():
    c = Composer(neighbours_cfg(), GAS, CONDS)
    feed(c, "h2s-limit", 0, 0, HIGH)
    out = feed(c, "h2s-limit", 2, 10, HIGH)  # G3 is not G1's neighbour
    assert not c.code.any()
    c = Composer(neighbours_cfg(), GAS, CONDS)
    feed(c, "h2s-limit", 0, 0, HIGH)
    feed(c, "h2s-limit", 0, 10, 0)
    out = feed(c, "h2s-limit", 1, 100, HIGH)  # 90 s after G1 ended: outside the 60 s window
    assert not out.code.any()
    # a non-voting condition (low) does not count
    c = Composer(neighbours_cfg(), GAS, CONDS)
    feed(c, "h2s-limit", 0, 0, LOW)
    out = feed(c, "h2s-limit", 1, 1, HIGH)
    assert not out.code.any()


def test_statistic_and_limit_on_same_sensor():
    cfg = CompositionConfig(id="both", inputs=[{"detector": "h2s-limit"}, {"detector": "h2s-z"}], require=2, within=30)
    c = Composer(cfg, GAS, CONDS)
    assert c.feed("h2s-limit", np.array([0, 3]), np.array([0.0, 0.0]), np.array([HIGH, HIGH])).code.tolist() == [0, 0]
    out = c.feed("h2s-z", np.array([3]), np.array([20.0]), np.array([1]))
    assert out.idx.tolist() == [3] and out.code.tolist() == [1]
    out = c.feed("h2s-z", np.array([0]), np.array([20.0]), np.array([0]))
    assert out.code.tolist() == [0]
    assert c.feed("other-detector", np.array([0]), np.array([1.0]), np.array([1])) is None


def test_area_scope_counting_inputs():
    cfg = CompositionConfig(id="area", inputs=[{"detector": "h2s-limit"}, {"detector": "h2s-z"}], scope="area",
                            count="inputs", require=2)
    c = Composer(cfg, GAS, CONDS)
    feed(c, "h2s-limit", 0, 0, HIGH)
    out = feed(c, "h2s-z", 2, 5, 2)  # another input, same area (G3 is not G1's neighbour, but same area)
    assert dict(zip(out.idx.tolist(), out.code.tolist())) == {0: 1, 1: 0, 2: 1}
    feed(c, "h2s-z", 3, 5, 2)  # area b: alone
    assert c.code[3] == 0


def test_with_real_detectors_and_event_tracker():
    lim = create("limit", {"high": 10}, GAS)
    comp = Composer(neighbours_cfg(), GAS, CONDS)
    tracker = EventTracker(len(GAS))
    rng = np.random.default_rng(0)
    starts = []
    for k in range(200):
        x = rng.normal(2, 0.5, size=4)
        if k in range(50, 53):
            x[0] = 15  # a single spike on G1: a lone sensor, no composite alarm
        if k >= 120:
            x[:2] = 20  # a real release seen by G1 and G2
        out = lim.update(np.arange(4), np.full(4, 10.0 * k), x)
        c = comp.feed("h2s-limit", out.idx, out.t, out.code)
        starts += [tr for tr in tracker.feed(c) if tr.old == 0]
    assert [(tr.sensor, tr.t) for tr in starts] == [(0, 1200.0), (1, 1200.0)]


def test_state_roundtrip():
    c = Composer(neighbours_cfg(), GAS, CONDS)
    feed(c, "h2s-limit", 0, 0, HIGH)
    d = Composer(neighbours_cfg(), GAS, CONDS)
    d.set_state(pickle.loads(pickle.dumps(c.get_state())))
    a, b = feed(c, "h2s-limit", 1, 5, HIGH), feed(d, "h2s-limit", 1, 5, HIGH)
    assert np.array_equal(a.code, b.code) and np.array_equal(a.score, b.score)


def test_config_validation():
    with pytest.raises(ValidationError, match="count 'sensors' needs scope"):
        CompositionConfig(id="x", inputs=[{"detector": "a"}], count="sensors")
    with pytest.raises(ValidationError, match="require \\(3\\) exceeds the number of inputs \\(2\\)"):
        CompositionConfig(id="x", inputs=[{"detector": "a"}, {"detector": "b"}], require=3)
    with pytest.raises(ValidationError, match="listed twice"):
        CompositionConfig(id="x", inputs=[{"detector": "a"}, {"detector": "a"}], require=1)
    with pytest.raises(ValidationError):
        CompositionConfig(id="x", inputs=[], require=1)
    with pytest.raises(ValidationError):
        CompositionConfig(id="x", inputs=[{"detector": "a"}], require=1, bogus=1)
    cfg = CompositionConfig(id="x", inputs=[{"detector": "h2s-limit", "conditions": ["hihg"]}, {"detector": "nope"}])
    problems = cfg.check(CONDS)
    assert any("no condition 'hihg'" in p for p in problems) and any("unknown detector 'nope'" in p for p in problems)
    with pytest.raises(ValueError, match="composition 'x'"):
        Composer(cfg, GAS, CONDS)
