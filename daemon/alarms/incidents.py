"""Incidents and alarm floods, as a part of
:class:`~plantwatch.daemon.alarms.lifecycle.ManagedAlarmBook`: each raised alarm joins the open
incident it is related to (same area and process unit, or a declared neighbour, within
``alarms.incidents.window``) or opens one; the cause is the first alarm of the highest priority;
an incident ends when all its alarms have been inactive for ``close_after``. A flood is counted
per operator position (``alarms.flood``): more than ``start`` annunciated alarms within
``window`` seconds (docs/alarms.md, "Incidents" and "Floods").

The methods work on the book's state (``alarms``, ``incidents``, ``floods``) and return the
ops to write, like every other part of the book.
"""
from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from plantwatch.connectors.alarm_db import IncidentCause, IncidentClose, IncidentJoin, IncidentOpen
from plantwatch.connectors.store import AlarmOp, AlarmWrite

from plantwatch.daemon.alarms.book import SEVERITY_RANK, AlarmState
from plantwatch.daemon.config.model import Config


@dataclass
class Incident:
    key: str
    started_at: float
    last_alarm_at: float
    areas: set[str]
    sensors: set[str]
    members: set[tuple[str, int]]
    flood: bool = False
    last_clear: float = 0.0
    #: its cause is a sensor-health alarm (stale, flatline ...): process alarms never join it
    health: bool = False
    #: (area, process unit) of every involved alarm: related alarms share one (docs/alarms.md)
    places: set[tuple[str, str | None]] = field(default_factory=set)
    #: the alarm (detector, sensor id) that is the cause: the first of the highest priority
    cause: tuple[str, int] | None = None
    cause_severity: str = "low"


@dataclass
class FloodState:
    window: float
    start: int
    end: int
    times: deque = field(default_factory=deque)
    active: bool = False

    def add(self, t: float) -> None:
        self.times.append(t)

    def update(self, now: float) -> bool | None:
        """Returns True when a flood starts, False when it ends, None otherwise."""
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()
        n = len(self.times)
        if not self.active and n > self.start:
            self.active = True
            return True
        if self.active and n < self.end:
            self.active = False
            return False
        return None


class Incidents:
    """The incident and flood part of the alarm book (state set up by the book's constructor)."""
    alarms: dict
    cfg: Config
    clock: Callable[[], float]
    config_hash: str | None
    incidents: dict[str, Incident]
    floods: dict[str, FloodState]
    _flood_cfg: tuple[float, int, int]
    tag_of: dict[int, str]
    area_of: dict[int, str]
    unit_of: dict[int, str | None]
    area_unit: dict[str, str | None]
    neighbours: dict[str, set[str]]
    position_of_area: dict[str, str]
    health_detectors: set[str]
    comm_lost_detectors: set[str]
    collector_of: dict[int, str]

    # --- restart ------------------------------------------------------------------------------
    def load_incidents(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            members = set(zip(r["detectors"], (int(x) for x in r["sensor_ids"])))
            cause = (r["cause_detector"], int(r["cause_sensor_id"])) if r.get("cause_sensor_id") is not None else None
            places = {(self.area_of.get(sid, ""), self.unit_of.get(sid)) for _, sid in members}
            self.incidents[r["key"]] = Incident(r["key"], r["started_at"], r["last_alarm_at"], set(r["areas"]),
                                                set(r["sensors"]), members, r["flood"],
                                                health=r.get("cause_detector") in self.health_detectors,
                                                places=places, cause=cause,
                                                cause_severity=r.get("cause_severity") or "low")

    def _related(self, inc: Incident, place: tuple[str, str | None], tag: str) -> bool:
        """Same area and same process unit as an involved alarm, or a declared neighbour of an
        involved sensor (docs/alarms.md, "Incidents")."""
        if place in inc.places:
            return True
        nb = self.neighbours.get(tag, set())
        return bool(nb & inc.sensors)

    def _incident_for(self, key: tuple[str, int], a: AlarmState, op: AlarmWrite) -> list[AlarmOp]:
        det, sid = key
        t = op.t
        tag, area = self.tag_of.get(sid, str(sid)), op.cause.get("area") or self.area_of.get(sid, "")
        # a robot alarm belongs to the process unit of the area where it was raised
        unit = self.area_unit.get(area) if "area" in op.cause else self.unit_of.get(sid)
        place = (area, unit)
        health = det in self.health_detectors
        position = self.position_of_area.get(area, "site")
        fl = self.floods.setdefault(position, FloodState(*self._flood_cfg))
        if a.state != "suppressed":  # a flood counts annunciated alarms
            fl.add(t)
        started = fl.update(t)
        if started:
            op.cause["flood_started"] = position
        flood = fl.active
        if a.incident in self.incidents:  # re-alarm of an alarm already in an open incident
            inc = self.incidents[a.incident]
            inc.last_alarm_at = max(inc.last_alarm_at, t)
            op.cause.update({"incident": inc.key, "incident_role": "member", "flood": flood})
            return []
        # a process alarm (gas, pressure, anomaly ...) is never filed as a consequence of a dead or
        # failing instrument: it joins only incidents that a process alarm started
        cands = [i for i in self.incidents.values()
                 if t - i.last_alarm_at <= self.cfg.alarms.incidents.window and self._related(i, place, tag)
                 and (health or not i.health)]
        if cands:
            inc = max(cands, key=lambda i: i.last_alarm_at)
            inc.last_alarm_at = max(inc.last_alarm_at, t)
            inc.areas.add(area)
            inc.places.add(place)
            inc.sensors.add(tag)
            inc.members.add(key)
            inc.flood = inc.flood or flood
            a.incident = inc.key
            # the cause is the first alarm of the highest priority in the incident
            becomes_cause = SEVERITY_RANK.get(op.severity, 0) > SEVERITY_RANK.get(inc.cause_severity, 0)
            op.cause.update({"incident": inc.key, "incident_role": "cause" if becomes_cause else "consequence",
                             "flood": flood})
            out: list[AlarmOp] = [IncidentJoin(inc.key, t, area, tag, det, sid, op.condition, op.severity, flood)]
            if becomes_cause:
                inc.cause, inc.cause_severity = key, op.severity
                out.append(IncidentCause(inc.key, t, f"{op.condition} {tag} ({det}) in {area}", det, sid,
                                         op.condition, op.severity))
            return out
        k = uuid.uuid4().hex
        inc = Incident(k, t, t, {area}, {tag}, {key}, flood, health=health, places={place}, cause=key,
                       cause_severity=op.severity)
        self.incidents[k] = inc
        a.incident = k
        op.cause.update({"incident": k, "incident_role": "cause", "flood": flood})
        title = f"{op.condition} {tag} ({det}) in {area}"
        if det in self.comm_lost_detectors:
            title = f"communication lost with collector {self.collector_of.get(sid, '')} ({det}) in {area}"
        return [IncidentOpen(k, self.cfg.site.id, t, title, area, tag, det, sid, op.condition, op.severity,
                             self.config_hash, flood)]

    def close_incidents(self, now: float | None = None) -> list[AlarmOp]:
        """Incidents whose alarms have all been inactive for ``close_after`` end; floods that
        calmed down end too (that is only bookkeeping: nothing to write)."""
        now = self.clock() if now is None else now
        for fl in self.floods.values():
            fl.update(now)
        ops: list[AlarmOp] = []
        close_after = self.cfg.alarms.incidents.close_after
        for k, inc in list(self.incidents.items()):
            members = [self.alarms.get(m) for m in inc.members]
            if any(m is not None and m.active for m in members):
                continue
            quiet_since = max(inc.last_alarm_at, inc.last_clear)
            if now - quiet_since >= close_after:
                ops.append(IncidentClose(k, max(quiet_since, inc.last_alarm_at)))
                for m in inc.members:
                    if m in self.alarms and self.alarms[m].incident == k:
                        self.alarms[m].incident = None
                del self.incidents[k]
        return ops

    def in_flood(self) -> dict[str, bool]:
        return {p: f.active for p, f in self.floods.items()}
