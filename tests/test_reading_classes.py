"""Which readings each detector judges (a declared property), and over range / signal failure.

The daemon routes every reading by its class (quality, or the ``over_range`` / ``signal_failure``
flag, or a value at the top of the range) to the detectors that declare that class in ``JUDGES``:
limit-type detectors judge over-range gas at full scale and raise ``over_range`` at once,
statistical detectors never see it, a signal failure is ``out_of_range``'s ``signal_failure``.
"""
from __future__ import annotations

import numpy as np

from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.detection import DetectorSet
from plantwatch.detectors import REGISTRY, SensorInfo, create
from plantwatch.detectors.base import MEASUREMENTS, READING_CLASSES

from .helpers import site_config

T0 = 1_800_000_000.0
DETECTORS = """detectors:
  - {id: lim, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, on_delay: 10, off_delay: 3}}
  - {id: low-only, type: limit, select: {kind: gas}, params: {low: 1}}
  - {id: z, type: robust_zscore, select: {kind: gas}, params: {window: 30, threshold: 4, min_scale: 0.1}}
  - {id: range, type: out_of_range, select: {kind: gas}}
  - {id: silent, type: stale, select: {kind: gas}, params: {timeout: 5}}
"""
GOOD, UNCERTAIN, BAD, OVER, FAILED = range(5)


def _set():
    return DetectorSet(load_config_text(site_config(n_gas=2, detectors=DETECTORS)))


def _feed(ds, t, values, quality=(0, 0), flag=None):
    col = np.array([0, 1])
    return ds.process(col, np.full(2, t), np.array(values, dtype=float), quality=np.array(quality, dtype=np.int16),
                      flag=None if flag is None else np.array(flag, dtype=np.int8))


def _changes(chs):
    return sorted((c.det.cfg.id, c.col, c.new) for c in chs)


def test_judged_classes_are_declared_by_the_detector_types():
    assert set(READING_CLASSES) >= MEASUREMENTS
    for name in ("limit", "lel", "gas_exposure"):
        assert REGISTRY[name].JUDGES == MEASUREMENTS and REGISTRY[name].OVER_RANGE == "over_range"
    assert "signal_failure" in REGISTRY["out_of_range"].JUDGES
    assert REGISTRY["stale"].JUDGES == MEASUREMENTS
    for name in ("robust_zscore", "seasonal_zscore", "flatline", "neighbour_drift", "cusum", "ewma"):
        assert REGISTRY[name].JUDGES == frozenset({"good"}), name


def test_over_range_gas_raises_over_range_at_once_and_statistics_never_see_it():
    ds = _set()
    for k in range(40):  # quiet gas, statistics warm up
        assert _feed(ds, T0 + k, [1.5 + 0.1 * (k % 3), 1.5]) == []
    # 20.8 mA from the controller: uncertain, flagged over range, value at the top of the range
    chs = _feed(ds, T0 + 40, [100.0, 1.5], quality=(UNCERTAIN, GOOD), flag=(1, 0))
    assert _changes(chs) == [("lim", 0, "over_range"), ("range", 0, "above_range")]  # not waiting 10 s on-delay
    # 22 mA: bad quality, still over range; a value above the range (a PLC that does not clamp) too
    assert _feed(ds, T0 + 41, [100.0, 1.5], quality=(BAD, GOOD), flag=(1, 0)) == []
    assert _feed(ds, T0 + 42, [112.0, 1.5]) == []
    z = next(w for w in ds.watches if w.cfg.id == "z")
    assert z.detector.decider.code[0] == 0  # the z-score never judged a full-scale value
    # back inside the range at 50 ppm: high_high after the off-delay, not before
    assert ("range", 0, "normal") in _changes(_feed(ds, T0 + 43, [50.0, 1.5]))
    assert [c for c in _changes(_feed(ds, T0 + 44, [50.0, 1.5])) if c[0] == "lim"] == []
    assert [c for c in _changes(_feed(ds, T0 + 46, [50.0, 1.5])) if c[0] == "lim"] == [("lim", 0, "high_high")]
    # no stale alarm: over-range readings show the sensor is alive
    assert not [c for c in ds.tick(T0 + 49) if c.new == "stale"]


def test_uncertain_gas_is_judged_by_limits_not_by_statistics():
    ds = _set()
    for k in range(40):
        _feed(ds, T0 + k, [1.5, 1.5])
    chs = []
    for k in range(12):  # calibration gas: uncertain, 20 ppm
        chs += _feed(ds, T0 + 40 + k, [20.0, 1.5], quality=(UNCERTAIN, GOOD))
    assert _changes(chs) == [("lim", 0, "high_high")]


def test_signal_failure_is_alarmed_at_once_and_bad_readings_are_not_judged():
    ds = _set()
    for k in range(10):
        _feed(ds, T0 + k, [1.5, 1.5])
    chs = _feed(ds, T0 + 10, [0.0, 0.0], quality=(BAD, BAD), flag=(2, 0))
    assert _changes(chs) == [("range", 0, "signal_failure")]  # sensor 1: bad, unflagged: nobody judges it
    # not a measurement: after the timeout the failed sensor is also stale (and so is the bad one)
    for k in range(11, 17):
        _feed(ds, T0 + k, [0.0, 0.0], quality=(BAD, BAD), flag=(2, 0))
    assert sorted(c.col for c in ds.tick(T0 + 16) if c.new == "stale") == [0, 1]
    # a measurement again: the signal failure clears
    assert ("range", 0, "normal") in _changes(_feed(ds, T0 + 17, [1.5, 1.5]))


def test_a_limit_without_an_upper_level_ignores_over_range():
    det = create("limit", {"low": 1.0}, [SensorInfo("g", "gas", "ppm", 0.0, 100.0, "A")])
    o = det.update(np.array([0]), np.array([T0]), np.array([100.0]))
    assert o.code.tolist() == [0]


def test_lel_and_exposure_raise_over_range_at_the_top_of_the_range():
    lel = create("lel", {"preset": "10/20", "on_delay": 30}, REGISTRY["lel"].example_sensors(1))
    o = lel.update(np.array([0]), np.array([T0]), np.array([100.0]))
    assert lel.CONDITIONS[o.code[0]] == "over_range"
    o = lel.update(np.array([0]), np.array([T0 + 1]), np.array([30.0]))
    assert lel.CONDITIONS[o.code[0]] == "lel_alarm2"  # off-delay 0: back to the ordinary level
    gx = create("gas_exposure", {"preset": "H2S", "on_delay": 30}, [SensorInfo("g", "gas", "ppm", 0.0, 50.0, "A")])
    o = gx.update(np.array([0]), np.array([T0]), np.array([50.0]))
    assert gx.CONDITIONS[o.code[0]] == "over_range"


def test_every_detector_declares_classes_it_can_judge():
    for name, cls in REGISTRY.items():
        assert isinstance(cls.JUDGES, frozenset) and "good" in cls.JUDGES and cls.JUDGES <= set(READING_CLASSES), name
        assert cls.OVER_RANGE is None or (cls.OVER_RANGE in cls.CONDITIONS and "over_range" in cls.JUDGES), name
