"""Alarms from detector events (ISA-18.2 states).

An alarm exists per (detector, sensor). It is raised when a detector's condition leaves normal,
follows the condition while it changes, and clears when it returns to normal:

====================  ===========================  =================================
state                 condition active             condition back to normal
====================  ===========================  =================================
normal                → unack (raised)             —
unack                 stays (severity only rises)  → rtn_unack
ack                   → unack if it got worse      → normal
rtn_unack             → unack (raised again)       stays
shelved, suppressed,  stays (tracked, not shown)   stays
out_of_service
====================  ===========================  =================================

While an alarm is unacknowledged (unack, rtn_unack) its severity, and so its priority, only
rises: a LO alarm that went LOLO and back to LO stays at the LOLO priority until an operator
acknowledges it (ISA-18.2); the acknowledgement (daemon/alarms/lifecycle.py) brings it to the severity
of the condition then in force.

Every change becomes an :class:`~plantwatch.connectors.store.AlarmWrite` (new state + a change
record with its cause), written in the same transaction as the readings that caused it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from plantwatch.connectors.store import AlarmOp, AlarmWrite, EventEnd, EventStart

from plantwatch.daemon.detection import Change

SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
HIDDEN = frozenset({"shelved", "suppressed", "out_of_service"})
#: an unacknowledged alarm keeps the highest severity (priority) it reached until acknowledged
UNACKED = frozenset({"unack", "rtn_unack"})


@dataclass(slots=True)
class AlarmState:
    state: str = "normal"
    active: bool = False
    condition: str = "normal"
    severity: str = "low"
    # kept by the lifecycle layer (daemon/alarms/lifecycle.py): operator actions, suppression, incidents
    shelved_until: float | None = None
    suppressed_by: str | None = None
    incident: str | None = None
    #: where the alarm was raised (a robot alarm keeps it through its life); None: the sensor's area
    area: str | None = None


class AlarmBook:
    def __init__(self, db_ids: np.ndarray):
        self.db_ids = db_ids
        self.alarms: dict[tuple[str, int], AlarmState] = {}  # (detector id, db sensor id)

    def load(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self.alarms[(r["detector_id"], r["sensor_id"])] = AlarmState(
                r["state"], r["active"], r["condition"], r["severity"], r.get("shelved_until"),
                r.get("suppressed_by"), r.get("incident"), r.get("area_id"))

    def apply(self, changes: Iterable[Change]) -> list[AlarmOp]:
        ops: list[AlarmOp] = []
        for ch in changes:
            det_id = ch.det.cfg.id
            sid = int(self.db_ids[ch.col])
            if ch.old != "normal":
                ops.append(EventEnd(det_id, sid, ch.t, ch.peak))
            severity = ch.det.cfg.severity_of(ch.new) if ch.new != "normal" else "low"
            if ch.new != "normal":
                ops.append(EventStart(det_id, ch.det.description, sid, ch.new, severity, ch.t, ch.score))
            if not getattr(ch.det.cfg, "alarm", True):
                continue  # events only: this detector feeds a composition
            a = self.alarms.setdefault((det_id, sid), AlarmState())
            ops.append(self._transition(a, det_id, sid, ch, severity))
        return ops

    def _transition(self, a: AlarmState, det_id: str, sid: int, ch: Change, severity: str) -> AlarmWrite:
        before = a.state
        raised = cleared = False
        cause = {"by": "detector", "detector": det_id, "from_condition": ch.old, "to_condition": ch.new,
                 "score": ch.score}
        if ch.pos is not None:
            cause["position"] = list(ch.pos)
        if ch.new == "normal":
            cleared = True
            cause["peak_score"] = ch.peak
            a.state = {"unack": "rtn_unack", "ack": "normal"}.get(a.state, a.state)
            a.active, a.condition = False, "normal"  # severity kept: the record says what it was
        else:
            worse = ch.old != "normal" and SEVERITY_RANK[severity] > SEVERITY_RANK[a.severity]
            if a.state in UNACKED and SEVERITY_RANK[a.severity] > SEVERITY_RANK[severity]:
                severity = a.severity  # not acknowledged yet: keeps the highest priority it reached
            if a.state in ("normal", "rtn_unack") or (a.state == "ack" and worse):
                raised = True
                cause["reason"] = "worsened" if a.state == "ack" else "raised"
                a.state = "unack"
            a.active, a.condition, a.severity = True, ch.new, severity
        info = {"value": ch.value} if ch.value is not None and np.isfinite(ch.value) else {}
        return AlarmWrite(det_id, sid, before, a.state, a.active, a.condition, a.severity, ch.t, cause,
                          raised=raised, cleared=cleared, info=info)

    def counts_by_severity(self) -> dict[str, int]:
        out = {k: 0 for k in SEVERITY_RANK}
        for a in self.alarms.values():
            if a.active and a.state not in HIDDEN:
                out[a.severity] += 1
        return out
