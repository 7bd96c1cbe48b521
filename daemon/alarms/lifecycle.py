"""The alarm lifecycle around the detector-driven :class:`~plantwatch.daemon.alarms.book.AlarmBook`:
operator actions, shelving with expiry, suppression by design, out of service, incidents and
alarm floods (ISA-18.2 / IEC 62682, EEMUA 191).

States and who moves an alarm between them:

=================  =====================================  =========================================
from               event                                  to
=================  =====================================  =========================================
normal             condition active (detector)            unack (or suppressed, if its upstream is)
unack              operator acknowledges                  ack
unack              condition back to normal               rtn_unack
ack                condition worse (high → high-high)     unack (re-alarm)
ack                condition back to normal               normal
rtn_unack          operator acknowledges                  normal
rtn_unack          condition active again                 unack
any but o.o.s.     operator shelves for a time            shelved
shelved            operator unshelves, or time is up      unack if the condition is active, else normal
visible states     an upstream alarm becomes active       suppressed (by design)
suppressed         no upstream alarm active any more      unack if the condition is active, else normal
any                engineer takes it out of service       out_of_service
out_of_service     engineer returns it to service         unack if the condition is active, else normal
any                comment                                (unchanged)
=================  =====================================  =========================================

While shelved, suppressed or out of service the condition is still tracked (``active``), so the
alarm comes back right when it is released. Everything here is synchronous and in memory: the
book is the one authority on alarm state, and every method returns *ops* that the caller hands
to the pipeline's ordered alarm write path (``Pipeline.flush`` for detector changes,
``Pipeline.submit_alarm_ops`` for everything else). That is what serializes operator actions
with detector-driven changes: both mutate the book on the event loop and both are written, in
that order, by the same chain of transactions.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

import numpy as np

from plantwatch.connectors.alarm_db import AlarmFields, OperatorAction
from plantwatch.connectors.store import AlarmOp, AlarmWrite
from plantwatch.detectors import REGISTRY

from plantwatch.daemon.alarms.incidents import FloodState, Incident, Incidents
from plantwatch.daemon.alarms.suppression import VISIBLE, Suppression
from plantwatch.daemon.alarms.book import SEVERITY_RANK, AlarmBook, AlarmState
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.detection import Change
from plantwatch.daemon.alarms.security_routing import SecurityRouting


#: action → roles allowed (engineer can do everything an operator can)
#: (``security`` acts on security alarms only, and only it on them: daemon/alarms/security_routing.py)
ACTIONS: dict[str, frozenset[str]] = {
    "ack": frozenset({"operator", "engineer", "security"}),
    "shelve": frozenset({"operator", "engineer", "security"}),
    "unshelve": frozenset({"operator", "engineer", "security"}),
    "comment": frozenset({"operator", "engineer", "security"}),
    "out_of_service": frozenset({"engineer"}),
    "return_to_service": frozenset({"engineer"}),
}


class ActionError(Exception):
    """An operator action that cannot be done now; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ManagedAlarmBook(Suppression, Incidents, AlarmBook):
    def __init__(self, db_ids: np.ndarray, cfg: Config, *, config_hash: str | None = None,
                 clock=time.time):
        super().__init__(db_ids)
        self.cfg = cfg
        self.config_hash = config_hash
        self.clock = clock
        self.tag_of: dict[int, str] = {int(db_ids[i]): s.id for i, s in enumerate(cfg.sensors)}
        self.area_of: dict[int, str] = {int(db_ids[i]): s.area for i, s in enumerate(cfg.sensors)}
        self.sid_of: dict[str, int] = {t: sid for sid, t in self.tag_of.items()}
        self.unit_of: dict[int, str | None] = {int(db_ids[i]): cfg.process_unit_of(s) for i, s in enumerate(cfg.sensors)}
        self.area_unit: dict[str, str | None] = {a.id: a.process_unit for a in cfg.site.areas}
        self._init_suppression(db_ids, cfg)
        self.security = SecurityRouting(cfg, self.tag_of)  # security alarms: daemon/alarms/security_routing.py
        self.area_bounds = [(a.id, *a.bounds) for a in cfg.site.areas if a.bounds]
        self.health_detectors = {d.id for d in cfg.detectors if REGISTRY[d.type].SENSOR_HEALTH}
        self.detector_cfg = {d.id: d for d in cfg.detectors}
        self.composition_severity = {c.id: c.severity for c in cfg.compositions}
        nb: dict[str, set[str]] = {s.id: set(s.neighbours) for s in cfg.sensors}
        for s in cfg.sensors:
            for n in s.neighbours:
                nb.setdefault(n, set()).add(s.id)
        self.neighbours = nb
        pos = {a: p.id for p in cfg.alarms.positions for a in p.areas}
        self.position_of_area = {a.id: pos.get(a.id, "site") for a in cfg.site.areas}
        fl = cfg.alarms.flood
        self.floods: dict[str, FloodState] = {}
        self._flood_cfg = (fl.window, fl.start, fl.end)
        self.incidents: dict[str, Incident] = {}
        self.unit_sym: dict[int, str] = {int(db_ids[i]): s.unit for i, s in enumerate(cfg.sensors)}
        self.range_top: dict[int, float] = {int(db_ids[i]): s.range[1] for i, s in enumerate(cfg.sensors)}
        self.levels: dict[str, dict[str, float]] = {
            d.id: {k: float(v) for k, v in d.validated_params().model_dump().items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)} for d in cfg.detectors}

    # --- detector-driven changes ----------------------------------------------------------------
    def apply(self, changes: Iterable[Change]) -> list[AlarmOp]:
        # a collector's communication loss first: its sensors' stale alarms of the same moment are
        # then raised suppressed, never annunciated and withdrawn
        changes = sorted(changes, key=lambda c: c.det.cfg.id not in self.comm_lost_detectors)
        before = self._upstream_active()
        lost_before = self._lost_collectors()
        base_ops = super().apply(changes)
        ops: list[AlarmOp] = []
        for op in base_ops:
            ops.append(op)
            if not isinstance(op, AlarmWrite):
                continue
            key = (op.detector_id, op.sensor_id)
            a = self.alarms[key]
            self.security.mark(op)  # security alarms: routed to the security position
            if "position" in op.cause:  # a robot reading: the alarm belongs where the raising one was taken
                here = self._area_at(*op.cause["position"]) or self.area_of.get(op.sensor_id, "")
                if op.raised or a.area is None:
                    a.area = here
                op.cause["area"] = a.area
                op.cause["reading_area"] = here
            elif op.raised or a.area is None:
                a.area = self.area_of.get(op.sensor_id)
            self._stamp(op, a)
            if key[0] in self.comm_lost_detectors:  # one alarm per collector, held on one of its sensors
                op.cause["collector"] = self.collector_of.get(op.sensor_id, "")
            if op.raised and op.to_state == "unack":
                up = self._suppressor(key)
                if up is not None:  # raised while its upstream cause is active: suppressed by design
                    a.state, a.suppressed_by = "suppressed", up
                    op.to_state = "suppressed"
                    op.cause["suppressed_by"] = up
                    reason = "suppressed by design"
                    if up == self._superseding(key):
                        op.cause["superseded_by"] = up
                        reason = "superseded by a limit alarm on the same sensor"
                    ops.append(AlarmFields(*key, {"suppressed_by": up, "state_reason": reason}))
            if key[0] in self.limit_detectors and (op.raised or op.cleared):
                ops.extend(self._supersede(key, op.t))
            if op.raised and a.state not in ("shelved", "out_of_service"):
                ops.extend(self._incident_for(key, a, op))
            if op.cleared and a.incident in self.incidents:
                inc = self.incidents[a.incident]
                inc.last_clear = max(inc.last_clear, op.t)
        after = self._upstream_active()
        t_last = max((c.t for c in changes), default=self.clock())
        ops.extend(self._resuppress(before, after, t_last))
        ops.extend(self._comm_lost_resuppress(lost_before, self._lost_collectors(), t_last))
        return ops

    # --- operator actions -----------------------------------------------------------------------
    def act(self, key: tuple[str, int], action: str, *, actor: str, role: str, reason: str = "",
            duration: float | None = None, now: float | None = None) -> list[AlarmOp]:
        """Apply an operator action to the alarm of ``key``; raises :class:`ActionError`."""
        now = self.clock() if now is None else now
        if action not in ACTIONS:
            raise ActionError(404, f"unknown action {action!r}")
        if role not in ACTIONS[action]:
            raise ActionError(403, f"role {role!r} may not {action}")
        if (why := self.security.refusal(key, role, action)) is not None:  # daemon/alarms/security_routing.py
            raise ActionError(403, why)
        a = self.alarms.get(key)
        if a is None:
            raise ActionError(404, "no such alarm")
        reason = (reason or "").strip()
        if action in ("shelve", "out_of_service", "return_to_service") and not reason:
            raise ActionError(400, f"{action} needs a reason")
        if action == "comment" and not reason:
            raise ActionError(400, "comment needs text")
        cause = {"by": "operator", "action": action, "actor": actor, "role": role, "reason": reason}
        before = a.state
        ops: list[AlarmOp] = []
        params: dict[str, Any] = {}
        if action == "ack":
            if a.state == "unack":
                if a.active:  # acknowledged: the priority held since it was raised drops to the condition's
                    a.severity = self._severity_of(key[0], a.condition, a.severity)
                ops += self._set(key, a, "ack", now, cause, {"acked_at": now, "acked_by": actor})
            elif a.state == "rtn_unack":
                ops += self._set(key, a, "normal", now, cause, {"acked_at": now, "acked_by": actor})
            else:
                raise ActionError(409, f"cannot acknowledge an alarm in state {a.state!r}")
        elif action == "shelve":
            if a.state == "out_of_service":
                raise ActionError(409, "cannot shelve an alarm that is out of service")
            dur = float(duration if duration is not None else self.cfg.alarms.default_shelve)
            if not (0 < dur <= self.cfg.alarms.max_shelve):
                raise ActionError(400, f"shelve duration must be in (0, {self.cfg.alarms.max_shelve:g}] seconds")
            until = now + dur
            params = {"duration": dur, "until": until}
            cause["until"] = until
            a.shelved_until = until
            ops += self._set(key, a, "shelved", now, cause, {"shelved_at": now, "shelved_until": until,
                                                             "shelved_by": actor, "state_reason": reason})
        elif action == "unshelve":
            if a.state != "shelved":
                raise ActionError(409, f"alarm is not shelved (state {a.state!r})")
            ops += self._release(key, a, now, cause)
        elif action == "out_of_service":
            if a.state == "out_of_service":
                raise ActionError(409, "alarm is already out of service")
            a.shelved_until = None
            ops += self._set(key, a, "out_of_service", now, cause, {"oos_at": now, "oos_by": actor,
                                                                    "shelved_until": None, "state_reason": reason})
        elif action == "return_to_service":
            if a.state != "out_of_service":
                raise ActionError(409, f"alarm is not out of service (state {a.state!r})")
            ops += self._release(key, a, now, cause)
        ops.append(OperatorAction(key[0], key[1], now, action, actor, role, reason, params, before, a.state))
        for op in ops:  # security alarms: routed to the security position (daemon/alarms/security_routing.py)
            if isinstance(op, AlarmWrite):
                self.security.mark(op)
        return ops

    def expire_shelves(self, now: float | None = None) -> list[AlarmOp]:
        """Shelved alarms whose time is up return on their own."""
        now = self.clock() if now is None else now
        ops: list[AlarmOp] = []
        for key, a in self.alarms.items():
            if a.state == "shelved" and a.shelved_until is not None and a.shelved_until <= now:
                before = a.state
                ops += self._release(key, a, now, {"by": "system", "action": "shelve_expired",
                                                   "reason": "shelve time is up"})
                ops.append(OperatorAction(key[0], key[1], now, "shelve_expired", "system", "system",
                                          "shelve time is up", {}, before, a.state))
        return ops

    def _release(self, key: tuple[str, int], a: AlarmState, t: float, cause: dict[str, Any]) -> list[AlarmOp]:
        """Leave a hidden state: back to suppressed if the upstream still is active, else unack if
        the condition is active (annunciated anew), else normal."""
        up = self._suppressor(key) if a.active else None
        a.shelved_until = None
        fields: dict[str, Any] = {"shelved_until": None, "state_reason": None, "suppressed_by": up}
        if up is not None:
            a.suppressed_by = up
            return self._set(key, a, "suppressed", t, {**cause, "suppressed_by": up}, fields)
        a.suppressed_by = None
        new = "unack" if a.active else "normal"
        return self._set(key, a, new, t, cause, fields, raised=a.active)

    def _set(self, key: tuple[str, int], a: AlarmState, new: str, t: float, cause: dict[str, Any],
             fields: dict[str, Any] | None = None, *, raised: bool = False) -> list[AlarmOp]:
        before = a.state
        a.state = new
        w = AlarmWrite(key[0], key[1], before, new, a.active, a.condition, a.severity, t, cause, raised=raised)
        self._stamp(w, a)
        ops: list[AlarmOp] = [w]
        if fields:
            ops.append(AlarmFields(key[0], key[1], fields))
        return ops

    def _stamp(self, w: AlarmWrite, a: AlarmState) -> None:
        """What a message about the change says besides the state (daemon/alarms/message.py): the
        area where the alarm was raised, the tag, engineering unit and the limit of the condition."""
        sid = w.sensor_id
        w.area = a.area or self.area_of.get(sid)
        limit = self.range_top.get(sid) if a.condition in ("over_range", "above_range") \
            else self.levels.get(w.detector_id, {}).get(a.condition)
        w.info.update({"tag": self.tag_of.get(sid, str(sid)), "unit": self.unit_sym.get(sid), "limit": limit})
        if w.detector_id in self.comm_lost_detectors:
            w.info["collector"] = self.collector_of.get(sid, "")

    def _severity_of(self, detector_id: str, condition: str, default: str) -> str:
        if detector_id in self.detector_cfg:
            return self.detector_cfg[detector_id].severity_of(condition)
        return self.composition_severity.get(detector_id, default)

    # --- incidents and floods ---------------------------------------------------------------------
    def _area_at(self, x: float, y: float) -> str | None:
        """The area whose bounds hold a site position (as validate.Registry places robot readings)."""
        for a, x0, y0, x1, y1 in self.area_bounds:
            if x0 <= x <= x1 and y0 <= y <= y1:
                return a
        return None

    def counts_by_severity(self) -> dict[str, int]:
        out = {k: 0 for k in SEVERITY_RANK}
        for a in self.alarms.values():
            if a.active and a.state in VISIBLE:
                out[a.severity] += 1
        return out
