"""One physical event, one alarm per sensor: a limit crossing supersedes the same sensor's
statistical anomaly alarm, the incident's cause is the first alarm of the highest priority, and
incidents group by time plus declared relations (same area and process unit, or neighbours)."""
from __future__ import annotations

import numpy as np

from plantwatch.connectors.alarm_db import IncidentCause, IncidentJoin, IncidentOpen
from plantwatch.connectors.store import AlarmWrite
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.detection import Change, DetectorSet
from plantwatch.daemon.alarms.lifecycle import VISIBLE, ManagedAlarmBook

# the demo leak pattern: an H2S sensor whose rise is first a z-score anomaly, then high-high
LEAK = """
site:
  id: s1
  areas: [{id: tankfarm, collector: edge1}]
sensors:
  - {id: TF-H2S-01, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: tankfarm}
  - {id: TF-H2S-02, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: tankfarm}
detectors:
  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}
  - {id: h2s-zscore, type: robust_zscore, select: {kind: gas}}
"""

# a pressure drop at reactor R-201 and an unrelated H2S anomaly at compressor K-203, same area
UNITS = """
site:
  id: s1
  areas: [{id: reactor, collector: edge1, process_unit: R-201}]
sensors:
  - {id: RX-PT-201, kind: pressure, unit: bar, range: [0, 25], area: reactor}
  - {id: RX-PT-203, kind: pressure, unit: bar, range: [0, 30], area: reactor}
  - {id: RX-H2S-03, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: reactor, process_unit: K-203}
  - {id: RX-H2S-04, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: reactor, process_unit: K-203,
     neighbours: [RX-PT-203]}
detectors:
  - {id: p-limit, type: limit, select: {kind: pressure}, params: {low: 5, low_low: 2}}
  - {id: h2s-zscore, type: robust_zscore, select: {kind: gas}}
"""


def setup(text: str):
    cfg = load_config_text(text)
    ds = DetectorSet(cfg)
    ids = np.arange(11, 11 + len(cfg.sensors), dtype=np.int32)
    return cfg, {w.cfg.id: w for w in ds.watches}, ids


def ch(w, col, old, new, t):
    return Change(w, col, t, old, new, 7.0, 9.0)


def writes(ops):
    return [o for o in ops if isinstance(o, AlarmWrite)]


def visible(book: ManagedAlarmBook, sid: int) -> list[str]:
    return sorted(d for (d, s), a in book.alarms.items() if s == sid and a.state in VISIBLE)


def test_leak_high_high_supersedes_the_sensors_zscore_alarm_and_becomes_the_incident_cause():
    cfg, w, ids = setup(LEAK)
    book = ManagedAlarmBook(ids, cfg, clock=lambda: 1000.0)
    ops = book.apply([ch(w["h2s-zscore"], 0, "normal", "anomaly", 100.0)])
    (opened,) = [o for o in ops if isinstance(o, IncidentOpen)]
    assert opened.detector_id == "h2s-zscore"
    ops = book.apply([ch(w["h2s-limit"], 0, "normal", "high_high", 104.0)])
    ws = writes(ops)
    # the limit alarm is raised, the same sensor's anomaly alarm is superseded (recorded, not shown)
    assert [(x.detector_id, x.from_state, x.to_state) for x in ws] == [
        ("h2s-limit", "normal", "unack"), ("h2s-zscore", "unack", "suppressed")]
    assert ws[1].cause["superseded_by"] == "h2s-limit/TF-H2S-01"
    assert visible(book, 11) == ["h2s-limit"]
    # the incident's cause is now the first alarm of the highest priority: high-high
    (cause,) = [o for o in ops if isinstance(o, IncidentCause)]
    assert (cause.key, cause.detector_id, cause.sensor_id) == (opened.key, "h2s-limit", 11)
    assert ws[0].cause["incident_role"] == "cause"
    assert book.incidents[opened.key].cause == ("h2s-limit", 11)
    # the anomaly keeps being tracked while superseded
    book.apply([ch(w["h2s-zscore"], 0, "anomaly", "normal", 110.0)])
    (z,) = writes(book.apply([ch(w["h2s-zscore"], 0, "normal", "severe_anomaly", 111.0)]))
    assert (z.to_state, z.active) == ("suppressed", True)
    assert book.alarms[("h2s-zscore", 11)].suppressed_by == "h2s-limit/TF-H2S-01"
    # when the limit clears, the anomaly (still active) is annunciated again
    ws = writes(book.apply([ch(w["h2s-limit"], 0, "high_high", "normal", 120.0)]))
    assert [(x.detector_id, x.to_state) for x in ws] == [("h2s-limit", "rtn_unack"), ("h2s-zscore", "unack")]
    # another sensor's anomaly is not touched by this sensor's limit
    (o,) = writes(book.apply([ch(w["h2s-zscore"], 1, "normal", "anomaly", 121.0)]))
    assert o.to_state == "unack"


def test_lower_priority_alarm_joining_later_does_not_take_the_cause():
    cfg, w, ids = setup(LEAK)
    book = ManagedAlarmBook(ids, cfg, clock=lambda: 1000.0)
    ops = book.apply([ch(w["h2s-limit"], 0, "normal", "high", 100.0)])
    (opened,) = [o for o in ops if isinstance(o, IncidentOpen)]
    ops = book.apply([ch(w["h2s-zscore"], 1, "normal", "anomaly", 101.0)])
    assert [o for o in ops if isinstance(o, IncidentCause)] == []
    assert any(isinstance(o, IncidentJoin) for o in ops)
    assert book.incidents[opened.key].cause == ("h2s-limit", 11)
    # an anomaly raised on a sensor whose limit alarm is active is raised superseded
    (z,) = writes(book.apply([ch(w["h2s-zscore"], 0, "normal", "anomaly", 102.0)]))
    assert (z.to_state, z.cause["superseded_by"]) == ("suppressed", "h2s-limit/TF-H2S-01")
    assert visible(book, 11) == ["h2s-limit"]


def test_unrelated_h2s_anomaly_in_another_unit_does_not_join_the_pressure_incident():
    cfg, w, ids = setup(UNITS)
    book = ManagedAlarmBook(ids, cfg, clock=lambda: 1000.0)
    (p_inc,) = [o for o in book.apply([ch(w["p-limit"], 0, "normal", "low", 100.0)]) if isinstance(o, IncidentOpen)]
    # same area, other process unit, no declared neighbour: an incident of its own
    ops = book.apply([ch(w["h2s-zscore"], 2, "normal", "anomaly", 110.0)])
    assert [o for o in ops if isinstance(o, IncidentJoin)] == []
    (h_inc,) = [o for o in ops if isinstance(o, IncidentOpen)]
    assert h_inc.key != p_inc.key
    # same area and process unit: joins
    (j,) = [o for o in book.apply([ch(w["p-limit"], 1, "normal", "low", 115.0)]) if isinstance(o, IncidentJoin)]
    assert j.key == p_inc.key
    # another unit, but a declared neighbour of an involved sensor: joins
    (j,) = [o for o in book.apply([ch(w["h2s-zscore"], 3, "normal", "anomaly", 120.0)]) if isinstance(o, IncidentJoin)]
    assert j.key == p_inc.key  # (its unit's incident had its last alarm earlier)
