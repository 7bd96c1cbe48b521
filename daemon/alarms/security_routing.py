"""Security alarms: which alarms they are, who may act on them and where they go (docs/security.md).

A security alarm is one raised by a detector named in ``inventory.security.detectors`` (by default
every enabled ``unexplained_loss``, ``inventory_balance`` and ``inventory_integrity`` detector),
or an instrument alarm (a sensor-health detector: stale, flatline ...) on a sensor listed in
``inventory.security.toxic``. Such an alarm

* belongs to the security position (``inventory.security.position``): its change records carry
  ``route: security`` and the position, the API lists it with ``route`` and filters on
  ``?route=security`` (the console's security view);
* is also published on ``{prefix}/{site}/{inventory.security.topic}`` (MQTT, QoS 1);
* may be acknowledged, shelved, unshelved or commented only by the ``security`` role: an operator
  or engineer gets 403 with the reason; the ``security`` role acts on security alarms only. Every
  action is recorded and audit-chained like any other.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from plantwatch.connectors.store import AlarmWrite
from plantwatch.detectors import REGISTRY

from plantwatch.daemon.config.model import Config

SECURITY_TYPES = frozenset({"unexplained_loss", "inventory_balance", "inventory_integrity"})
SECURITY_ROLE = "security"
#: actions only the security role may take on a security alarm (taking an alarm out of service
#: stays an engineer's: the instrument is repaired by maintenance, and the record says who)
GUARDED = frozenset({"ack", "shelve", "unshelve", "comment"})


class SecurityRouting:
    """Built from the config alone (pure): the daemon, the alarm book and the API each hold one."""

    def __init__(self, cfg: Config, tag_of: dict[int, str] | None = None):
        sec = cfg.inventory.security
        if sec.detectors is not None:
            self.detectors = frozenset(sec.detectors)
        else:
            self.detectors = frozenset(d.id for d in cfg.detectors if d.type in SECURITY_TYPES and d.enabled)
        self.health = frozenset(d.id for d in cfg.detectors if REGISTRY[d.type].SENSOR_HEALTH)
        self.toxic = frozenset(sec.toxic)
        self.position = sec.position
        prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
        self.topic = f"{prefix}/{cfg.site.id}/{sec.topic}"
        self.tag_of = tag_of or {}

    @property
    def enabled(self) -> bool:
        return bool(self.detectors or self.toxic)

    def is_security(self, detector_id: str, tag: str) -> bool:
        return detector_id in self.detectors or (detector_id in self.health and tag in self.toxic)

    def of_key(self, key: tuple[str, int]) -> bool:
        return self.is_security(key[0], self.tag_of.get(key[1], ""))

    def refusal(self, key: tuple[str, int], role: str, action: str) -> str | None:
        """Why ``role`` may not take ``action`` on the alarm of ``key`` (None: it may)."""
        sec = self.of_key(key)
        if sec and action in GUARDED and role != SECURITY_ROLE:
            return (f"this is a security alarm (routed to position {self.position!r}): only the"
                    f" {SECURITY_ROLE!r} role may {action} it, not {role!r}")
        if not sec and role == SECURITY_ROLE:
            return f"the {SECURITY_ROLE!r} role acts on security alarms only"
        return None

    def mark(self, op: AlarmWrite) -> None:
        """Route a change of a security alarm: its record says so."""
        if self.of_key((op.detector_id, op.sensor_id)):
            op.cause["route"] = "security"
            op.cause["security_position"] = self.position

    def messages(self, writes: Iterable[Any]) -> list[tuple[str, bytes]]:
        """The security topic's messages for these alarm changes."""
        out = []
        for w in writes:
            if isinstance(w, AlarmWrite) and self.of_key((w.detector_id, w.sensor_id)):
                out.append((self.topic, json.dumps({
                    "detector": w.detector_id, "sensor": self.tag_of.get(w.sensor_id, str(w.sensor_id)),
                    "from": w.from_state, "to": w.to_state, "active": w.active, "condition": w.condition,
                    "severity": w.severity, "time": w.t, "position": self.position}).encode()))
        return out

    def annotate(self, rows: list[dict[str, Any]], route: str | None) -> list[dict[str, Any]]:
        """API rows with their ``route``; only those of ``route`` when it is given."""
        for r in rows:
            r["route"] = "security" if self.is_security(r["detector_id"], r.get("sensor") or "") else "operator"
        return rows if route is None else [r for r in rows if r["route"] == route]
