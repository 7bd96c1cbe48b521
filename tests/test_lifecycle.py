"""Every ISA-18.2 state transition of the managed alarm book, in memory, plus the ops each
produces (operator actions, alarm fields, incidents)."""
from __future__ import annotations

import numpy as np
import pytest

from plantwatch.connectors.alarm_db import AlarmFields, IncidentClose, IncidentJoin, IncidentOpen, OperatorAction
from plantwatch.connectors.store import AlarmWrite
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.detection import Change, DetectorSet
from plantwatch.daemon.alarms.lifecycle import ActionError, ManagedAlarmBook

CFG_TEXT = """
site:
  id: s1
  areas: [{id: area1, bounds: [0, 0, 100, 100], collector: edge1}, {id: area2, bounds: [100, 0, 200, 100], collector: edge1},
          {id: area3, collector: edge1}]
sensors:
  - {id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area1, location: [10, 10], neighbours: [G3]}
  - {id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area1, location: [20, 10]}
  - {id: G2, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area2, location: [150, 10]}
  - {id: G3, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: area3, location: [95, 50]}
  - {id: P0, kind: pressure, unit: bar, range: [0, 40], area: area2, location: [160, 20]}
detectors:
  - {id: h2s, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}
  - {id: p, type: limit, select: {kind: pressure}, params: {low: 2, low_low: 1}}
alarms:
  suppress_when:
    - {alarms: {detector: p, sensors: [P0]}, upstream: {detector: h2s, sensors: [G2]}}
  flood: {window: 600, start: 3, end: 2}
  incidents: {window: 600, close_after: 60}
"""
CFG = load_config_text(CFG_TEXT)
DS = DetectorSet(CFG)
H2S, P = DS.watches
IDS = np.array([11, 12, 13, 14, 15], dtype=np.int32)
G0, G1, G2, G3, P0 = (("h2s", 11), ("h2s", 12), ("h2s", 13), ("h2s", 14), ("p", 15))


def ch(w, col, old, new, t):
    return Change(w, col, t, old, new, 7.0, 9.0)


def book() -> ManagedAlarmBook:
    return ManagedAlarmBook(IDS, CFG, config_hash="abc", clock=lambda: 1000.0)


def writes(ops):
    return [o for o in ops if isinstance(o, AlarmWrite)]


def raise_(b, key=G0, t=100.0, cond="high"):
    col = int(np.flatnonzero(IDS == key[1])[0])
    w = H2S if key[0] == "h2s" else P
    return b.apply([ch(w, col, "normal", cond, t)])


def clear(b, key=G0, t=200.0, old="high"):
    col = int(np.flatnonzero(IDS == key[1])[0])
    w = H2S if key[0] == "h2s" else P
    return b.apply([ch(w, col, old, "normal", t)])


def st(b, key=G0):
    return b.alarms[key].state


def test_normal_unack_ack_normal():
    b = book()
    (w,) = writes(raise_(b))
    assert (w.from_state, w.to_state, w.raised) == ("normal", "unack", True)
    ops = b.act(G0, "ack", actor="ann", role="operator", reason="seen")
    (w,) = writes(ops)
    assert (w.from_state, w.to_state, w.cause["by"], w.cause["actor"]) == ("unack", "ack", "operator", "ann")
    f = next(o for o in ops if isinstance(o, AlarmFields))
    assert f.fields["acked_by"] == "ann"
    a = next(o for o in ops if isinstance(o, OperatorAction))
    assert (a.action, a.actor, a.role, a.from_state, a.to_state, a.reason) == ("ack", "ann", "operator", "unack", "ack", "seen")
    (w,) = writes(clear(b))
    assert (w.from_state, w.to_state) == ("ack", "normal")


def test_unack_rtn_unack_then_ack_to_normal_and_rtn_unack_reraised():
    b = book()
    raise_(b)
    (w,) = writes(clear(b))
    assert w.to_state == "rtn_unack"
    (w,) = writes(raise_(b, t=300.0))
    assert (w.from_state, w.to_state) == ("rtn_unack", "unack")
    clear(b, t=400.0)
    (w,) = writes(b.act(G0, "ack", actor="ann", role="operator"))
    assert (w.from_state, w.to_state) == ("rtn_unack", "normal")


def test_ack_realarms_when_worse():
    b = book()
    raise_(b)
    b.act(G0, "ack", actor="ann", role="operator")
    (w,) = writes(b.apply([ch(H2S, 0, "high", "high_high", 150.0)]))
    assert (w.from_state, w.to_state, w.cause["reason"]) == ("ack", "unack", "worsened")


def test_ack_refused_in_wrong_states_and_roles():
    b = book()
    raise_(b)
    with pytest.raises(ActionError) as e:
        b.act(G0, "ack", actor="ins", role="inspector")
    assert e.value.status == 403
    b.act(G0, "ack", actor="ann", role="operator")
    with pytest.raises(ActionError) as e:
        b.act(G0, "ack", actor="ann", role="operator")
    assert e.value.status == 409
    with pytest.raises(ActionError) as e:
        b.act(G0, "out_of_service", actor="ann", role="operator", reason="x")
    assert e.value.status == 403
    with pytest.raises(ActionError) as e:
        b.act(("h2s", 999), "ack", actor="ann", role="operator")
    assert e.value.status == 404


@pytest.mark.parametrize("start", ["normal", "unack", "ack", "rtn_unack"])
def test_shelve_from_each_state_then_expiry_returns_by_itself(start):
    b = book()
    if start != "normal":
        raise_(b)
    if start == "ack":
        b.act(G0, "ack", actor="ann", role="operator")
    if start == "rtn_unack":
        clear(b)
    if start == "normal":
        raise_(b)
        clear(b)
        b.act(G0, "ack", actor="ann", role="operator")
    assert st(b) == start
    active = b.alarms[G0].active
    ops = b.act(G0, "shelve", actor="ann", role="operator", reason="nuisance", duration=60, now=1000.0)
    (w,) = writes(ops)
    assert (w.from_state, w.to_state, w.cause["until"]) == (start, "shelved", 1060.0)
    assert b.alarms[G0].shelved_until == 1060.0
    assert b.expire_shelves(1059.0) == []
    ops = b.expire_shelves(1060.0)
    (w,) = writes(ops)
    assert w.to_state == ("unack" if active else "normal")
    assert w.cause["by"] == "system"
    (a,) = [o for o in ops if isinstance(o, OperatorAction)]
    assert (a.action, a.actor) == ("shelve_expired", "system")


def test_shelved_tracks_condition_and_unshelve():
    b = book()
    raise_(b)
    b.act(G0, "shelve", actor="ann", role="operator", reason="maintenance", duration=600)
    (w,) = writes(clear(b))
    assert (w.to_state, w.active) == ("shelved", False)
    (w,) = writes(raise_(b, t=300.0))
    assert (w.to_state, w.active) == ("shelved", True)
    (w,) = writes(b.act(G0, "unshelve", actor="ann", role="operator", reason="done"))
    assert (w.from_state, w.to_state, w.raised) == ("shelved", "unack", True)
    with pytest.raises(ActionError):
        b.act(G0, "unshelve", actor="ann", role="operator")


def test_shelve_limits():
    b = book()
    raise_(b)
    with pytest.raises(ActionError) as e:
        b.act(G0, "shelve", actor="ann", role="operator", reason="x", duration=10 * 3600)
    assert e.value.status == 400
    with pytest.raises(ActionError):
        b.act(G0, "shelve", actor="ann", role="operator", reason="")
    b.act(G0, "shelve", actor="ann", role="operator", reason="x")  # default duration
    assert b.alarms[G0].shelved_until == 1000.0 + CFG.alarms.default_shelve


def test_out_of_service_and_return():
    b = book()
    raise_(b)
    (w,) = writes(b.act(G0, "out_of_service", actor="eve", role="engineer", reason="sensor replaced"))
    assert (w.from_state, w.to_state) == ("unack", "out_of_service")
    (w,) = writes(clear(b))
    assert w.to_state == "out_of_service"
    with pytest.raises(ActionError):
        b.act(G0, "shelve", actor="eve", role="engineer", reason="x")
    (w,) = writes(b.act(G0, "return_to_service", actor="eve", role="engineer", reason="calibrated"))
    assert (w.from_state, w.to_state) == ("out_of_service", "normal")
    raise_(b, t=500.0)
    b.act(G0, "out_of_service", actor="eve", role="engineer", reason="again")
    (w,) = writes(b.act(G0, "return_to_service", actor="eve", role="engineer", reason="back"))
    assert w.to_state == "unack"  # still active: annunciated anew


def test_comment_changes_nothing_but_is_recorded():
    b = book()
    raise_(b)
    ops = b.act(G0, "comment", actor="ann", role="operator", reason="field crew on the way")
    assert writes(ops) == []
    (a,) = ops
    assert (a.action, a.reason, a.from_state, a.to_state) == ("comment", "field crew on the way", "unack", "unack")
    with pytest.raises(ActionError):
        b.act(G0, "comment", actor="ann", role="operator", reason=" ")


def test_suppressed_by_design_while_upstream_active():
    b = book()
    raise_(b, G2, t=100.0)  # upstream
    (w,) = writes(raise_(b, P0, t=110.0, cond="low"))  # downstream raised while upstream active
    assert (w.to_state, w.cause["suppressed_by"]) == ("suppressed", "h2s/G2")
    ops = clear(b, G2, t=120.0)
    ws = writes(ops)
    assert [(x.detector_id, x.from_state, x.to_state) for x in ws] == [("h2s", "unack", "rtn_unack"),
                                                                      ("p", "suppressed", "unack")]
    assert ws[1].cause["by"] == "design"


def test_visible_downstream_alarm_suppressed_when_upstream_becomes_active_and_released_to_normal():
    b = book()
    raise_(b, P0, t=100.0, cond="low")
    assert st(b, P0) == "unack"
    ws = writes(raise_(b, G2, t=110.0))
    assert [(x.detector_id, x.to_state) for x in ws] == [("h2s", "unack"), ("p", "suppressed")]
    clear(b, P0, t=115.0, old="low")
    assert (st(b, P0), b.alarms[P0].active) == ("suppressed", False)
    ws = writes(clear(b, G2, t=120.0))
    assert [(x.detector_id, x.to_state) for x in ws] == [("h2s", "rtn_unack"), ("p", "normal")]


def test_incident_groups_same_area_and_neighbours_cause_first():
    b = book()
    ops = raise_(b, G0, t=100.0)
    (o,) = [x for x in ops if isinstance(x, IncidentOpen)]
    assert (o.sensor, o.area, o.config_hash) == ("G0", "area1", "abc")
    (w,) = writes(ops)
    assert w.cause["incident_role"] == "cause"
    (j,) = [x for x in raise_(b, G1, t=150.0) if isinstance(x, IncidentJoin)]  # same area
    assert j.key == o.key
    (j,) = [x for x in raise_(b, G3, t=160.0) if isinstance(x, IncidentJoin)]  # other area, neighbour of G0
    assert j.key == o.key
    (o2,) = [x for x in raise_(b, G2, t=170.0) if isinstance(x, IncidentOpen)]  # unrelated area: its own
    assert o2.key != o.key
    # closes once all its alarms have been inactive for close_after
    for k in (G0, G1, G3):
        clear(b, k, t=200.0)
    assert [x for x in b.close_incidents(now=230.0) if isinstance(x, IncidentClose) and x.key == o.key] == []
    closed = [x for x in b.close_incidents(now=300.0) if isinstance(x, IncidentClose)]
    assert [c.key for c in closed] == [o.key]
    assert b.alarms[G0].incident is None
    # a later alarm in area1, beyond the window, opens a new incident
    assert any(isinstance(x, IncidentOpen) for x in raise_(b, G0, t=2000.0))


def test_flood_marks_consequences():
    b = book()
    raise_(b, G0, t=100.0)
    raise_(b, G1, t=101.0)
    raise_(b, G3, t=102.0)
    ops = raise_(b, G2, t=103.0)  # 4 > start 3: flood
    (w,) = [x for x in writes(ops) if x.detector_id == "h2s"]
    assert w.cause["flood"] is True and w.cause["flood_started"] == "site"
    assert b.in_flood() == {"site": True}
    ops = raise_(b, P0, t=104.0, cond="low")  # suppressed downstream of G2, consequence in a flood
    (w,) = writes(ops)
    assert w.cause["flood"] is True and w.cause["incident_role"] == "consequence"
    b.close_incidents(now=103.0 + 601)
    assert b.in_flood() == {"site": False}
