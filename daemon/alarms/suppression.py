"""Why an alarm is suppressed (ISA-18.2 / IEC 62682 "designed suppression"), as a part of
:class:`~plantwatch.daemon.alarms.lifecycle.ManagedAlarmBook`:

* **suppression by design** (``alarms.suppress_when``): an alarm is suppressed while an upstream
  alarm is active;
* **communication loss**: while an edge collector's ``comm_lost`` alarm is active, the ``stale``
  alarms of its sensors are suppressed (one alarm per dead collector);
* **the per-sensor hierarchy**: a limit alarm on a sensor supersedes that sensor's statistical
  alarms (one physical event, one alarm per sensor).

Each returns the label of what suppresses an alarm (``"<detector>/<tag or collector>"``), which
is recorded as ``suppressed_by``; the alarm is released when no reason is left. The methods work
on the book's state (``alarms``) and write through its ``_set`` / ``_release``.
"""
from __future__ import annotations

import numpy as np

from plantwatch.connectors.store import AlarmOp
from plantwatch.detectors import REGISTRY

from plantwatch.daemon.config.model import Config

VISIBLE = frozenset({"unack", "ack", "rtn_unack"})


class Suppression:
    alarms: dict
    cfg: Config
    tag_of: dict[int, str]

    def _init_suppression(self, db_ids: np.ndarray, cfg: Config) -> None:
        # the per-sensor alarm hierarchy: a limit crossing supersedes the sensor's statistical alarms
        types = {d.id: REGISTRY[d.type] for d in cfg.detectors}
        self.limit_detectors = {d for d, c in types.items() if c.OVER_RANGE is not None and not c.SENSOR_HEALTH}
        self.statistical_detectors = {d for d, c in types.items() if c.OVER_RANGE is None and not c.SENSOR_HEALTH}
        # communication loss: a collector's comm_lost alarm suppresses its sensors' stale alarms
        self.comm_lost_detectors = {d.id for d in cfg.detectors if d.type == "comm_lost"}
        self.stale_detectors = {d.id for d in cfg.detectors if d.type == "stale"}
        self.collector_of: dict[int, str] = {int(db_ids[i]): cfg.collector_of(s) or "" for i, s in enumerate(cfg.sensors)}

    # --- communication loss: one alarm per collector --------------------------------------------
    def _lost_collectors(self) -> dict[str, str]:
        """Collector → label of its active comm_lost alarm."""
        out: dict[str, str] = {}
        if not self.comm_lost_detectors:
            return out
        for det in self.comm_lost_detectors:
            for (d, sid), a in self.alarms.items():
                if d == det and a.active:
                    out.setdefault(self.collector_of.get(sid, ""), f"{det}/{self.collector_of.get(sid, '')}")
        return out

    def _comm_lost_of(self, key: tuple[str, int]) -> str | None:
        det, sid = key
        if det not in self.stale_detectors:
            return None
        return self._lost_collectors().get(self.collector_of.get(sid, "")) if self.comm_lost_detectors else None

    def _comm_lost_resuppress(self, before: dict[str, str], after: dict[str, str], t: float) -> list[AlarmOp]:
        ops: list[AlarmOp] = []
        changed = {c for c in set(before) | set(after) if (c in before) != (c in after)}
        if not changed:
            return ops
        for key, a in self.alarms.items():
            if key[0] not in self.stale_detectors or self.collector_of.get(key[1], "") not in changed:
                continue
            up = after.get(self.collector_of.get(key[1], ""))
            if up is not None and a.state in VISIBLE:
                ops += self._set(key, a, "suppressed", t, {"by": "design", "reason": "collector communication lost",
                                                           "suppressed_by": up},
                                 {"suppressed_by": up, "state_reason": "suppressed by design"})
                a.suppressed_by = up
            elif up is None and a.state == "suppressed" and a.suppressed_by == before.get(
                    self.collector_of.get(key[1], "")) and self._suppressor(key) is None:
                ops += self._release(key, a, t, {"by": "design", "reason": "collector communication back"})
        return ops

    # --- suppression by design -----------------------------------------------------------------
    def _upstream_active(self) -> list[str | None]:
        """Per rule: label of an active upstream alarm, or None."""
        out: list[str | None] = []
        for rule in self.cfg.alarms.suppress_when:
            hit = None
            for (det, sid), a in self.alarms.items():
                if a.active and rule.upstream.matches(det, self.tag_of.get(sid, "")):
                    hit = f"{det}/{self.tag_of.get(sid, sid)}"
                    break
            out.append(hit)
        return out

    def _suppressor(self, key: tuple[str, int]) -> str | None:
        det, sid = key
        tag = self.tag_of.get(sid, "")
        for rule, up in zip(self.cfg.alarms.suppress_when, self._upstream_active()):
            if up is not None and rule.alarms.matches(det, tag) and up != f"{det}/{tag}":
                return up
        return self._comm_lost_of(key) or self._superseding(key)

    # --- the per-sensor alarm hierarchy -----------------------------------------------------------
    def _superseding(self, key: tuple[str, int]) -> str | None:
        """For a statistical alarm: the label of an active limit alarm on the same sensor, which
        supersedes it (one physical event, one alarm per sensor); else None."""
        det, sid = key
        if det not in self.statistical_detectors:
            return None
        for lim in sorted(self.limit_detectors):
            a = self.alarms.get((lim, sid))
            if a is not None and a.active:
                return f"{lim}/{self.tag_of.get(sid, sid)}"
        return None

    def _supersede(self, limit_key: tuple[str, int], t: float) -> list[AlarmOp]:
        """After a limit alarm was raised or cleared: the same sensor's statistical alarms are
        superseded (moved to suppressed, recorded) or, when no limit alarm is active any more,
        released."""
        ops: list[AlarmOp] = []
        sid = limit_key[1]
        for det in sorted(self.statistical_detectors):
            key = (det, sid)
            a = self.alarms.get(key)
            if a is None:
                continue
            up = self._superseding(key)
            if up is not None and a.state in VISIBLE and a.active:
                cause = {"by": "hierarchy", "reason": "limit crossing on the same sensor", "superseded_by": up,
                         "suppressed_by": up}
                ops += self._set(key, a, "suppressed", t, cause,
                                 {"suppressed_by": up, "state_reason": "superseded by a limit alarm on the same sensor"})
                a.suppressed_by = up
            elif up is None and a.state == "suppressed" and a.suppressed_by is not None \
                    and a.suppressed_by.split("/", 1)[0] in self.limit_detectors and self._suppressor(key) is None:
                ops += self._release(key, a, t, {"by": "hierarchy", "reason": "no limit alarm on the sensor"})
        return ops

    def _resuppress(self, before: list[str | None], after: list[str | None], t: float) -> list[AlarmOp]:
        ops: list[AlarmOp] = []
        for rule, b, a_up in zip(self.cfg.alarms.suppress_when, before, after):
            if (b is None) == (a_up is None):
                continue
            for key, a in self.alarms.items():
                det, sid = key
                tag = self.tag_of.get(sid, "")
                if not rule.alarms.matches(det, tag) or a_up == f"{det}/{tag}":
                    continue
                if a_up is not None and a.state in VISIBLE:
                    ops += self._set(key, a, "suppressed", t, {"by": "design", "reason": "upstream active",
                                                               "suppressed_by": a_up},
                                     {"suppressed_by": a_up, "state_reason": "suppressed by design"})
                    a.suppressed_by = a_up
                elif a_up is None and a.state == "suppressed" and self._suppressor(key) is None:
                    ops += self._release(key, a, t, {"by": "design", "reason": "upstream back to normal"})
                    a.suppressed_by = None
        return ops

