"""Compositions in the daemon's detection path: an alarm only when neighbouring sensors agree."""
from __future__ import annotations

import numpy as np
import pytest

from plantwatch.connectors.store import AlarmWrite, EventStart
from plantwatch.daemon.alarms.book import AlarmBook
from plantwatch.daemon.config.model import ConfigError, load_config_text
from plantwatch.daemon.detection import DetectorSet

SITE = """
site: {id: s, areas: [{id: a, collector: edge1}]}
sensors:
  - {id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a, neighbours: [G1]}
  - {id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a}
  - {id: G2, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a}
detectors:
  - {id: lim, type: limit, select: {kind: gas}, params: {high: 5}, alarm: false}
compositions:
  - {id: two-agree, inputs: [{detector: lim}], scope: neighbourhood, require: 2, within: 30, severity: critical}
"""


def run(values: list[dict[str, float]]):
    cfg = load_config_text(SITE)
    dets = DetectorSet(cfg)
    book = AlarmBook(np.array([10, 11, 12], dtype=np.int32))
    ops = []
    for k, vals in enumerate(values):
        col = np.array([int(s[1]) for s in vals])
        ops += book.apply(dets.process(col, np.full(len(col), 1000.0 + k), np.array(list(vals.values()))))
    return ops, dets


def test_one_sensor_alone_records_an_event_but_raises_no_alarm():
    ops, _ = run([{"G0": 1, "G1": 1, "G2": 1}, {"G0": 9, "G1": 1, "G2": 9}, {"G0": 9, "G1": 1, "G2": 9}])
    assert {(o.detector_id, o.sensor_id) for o in ops if isinstance(o, EventStart)} == {("lim", 10), ("lim", 12)}
    assert [o for o in ops if isinstance(o, AlarmWrite)] == []  # G2 has no neighbour; G0's is calm


def test_neighbours_agreeing_raise_the_composite_alarm_on_both():
    ops, dets = run([{"G0": 1, "G1": 1, "G2": 1}, {"G0": 9, "G1": 1, "G2": 1}, {"G0": 9, "G1": 8, "G2": 1}])
    raised = {(o.detector_id, o.sensor_id, o.condition, o.severity) for o in ops if isinstance(o, AlarmWrite) and o.raised}
    assert raised == {("two-agree", 10, "confirmed", "critical"), ("two-agree", 11, "confirmed", "critical")}
    # the composition's state is saved and restored with the detectors'
    assert "two-agree" in [d for d, _, _ in dets.states()]


def test_composition_references_are_checked():
    with pytest.raises(ConfigError) as e:
        load_config_text(SITE.replace("inputs: [{detector: lim}]", "inputs: [{detector: nope}]"), "site.yaml")
    assert any("compositions[two-agree].inputs[0].detector: unknown detector 'nope'" in p for p in e.value.problems)


def test_restore_gives_detectors_and_compositions_their_state():
    _, dets = run([{"G0": 1, "G1": 1, "G2": 1}, {"G0": 9, "G1": 8, "G2": 1}])
    saved = {d: (fp, st) for d, fp, st in dets.states()}
    fresh = DetectorSet(load_config_text(SITE))
    assert sorted(fresh.restore(saved)) == ["lim", "two-agree"]
    assert fresh.watches[0].tracker.code.tolist() == dets.watches[0].tracker.code.tolist() == [3, 3, 0]
    assert fresh.compositions[0].tracker.code.tolist() == [1, 1, 0]
