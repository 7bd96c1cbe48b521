"""What a message about one committed alarm change says (MQTT ``alarms/changes`` and webhooks).

One function builds the content; the publishers decide when and how it goes out. The fields
(docs/alarms.md, "Alarm change messages"; schema ``connectors/schema/alarm-change-v1.json``):

* ``alarm_id`` and ``seq``: the alarm's database id and the change's audit sequence number (its
  place in the alarm record: consumers order by it);
* ``detector``, ``sensor_id`` (numeric), ``tag``, ``area`` (where the alarm was raised), ``unit``
  (engineering unit);
* ``from``, ``to``, ``active``, ``condition``, ``severity``;
* ``value`` (the reading that made the change, as the detector judged it: an over-range reading
  is at least the top of the range; null for a time-driven change or an operator action) and
  ``limit`` (the configured level of the condition, the top of the range for over range; null when
  the condition has none);
* ``time`` (reading time of the change, or the action's time) and ``cause`` (why, as recorded);
* ``collector``, on a ``comm_lost`` alarm only: the collector it is about.
"""
from __future__ import annotations

from typing import Any

from plantwatch.connectors.store import AlarmWrite


def change_payload(w: AlarmWrite) -> dict[str, Any]:
    """The content of an alarm change message (both MQTT and webhooks)."""
    info = w.info
    extra = {"collector": info["collector"]} if "collector" in info else {}  # a comm_lost alarm's collector
    return {**extra, "alarm_id": w.alarm_id, "seq": w.seq, "detector": w.detector_id, "sensor_id": w.sensor_id,
            "tag": info.get("tag"), "area": w.area, "unit": info.get("unit"), "from": w.from_state,
            "to": w.to_state, "active": w.active, "condition": w.condition, "severity": w.severity,
            "value": info.get("value"), "limit": info.get("limit"), "time": w.t, "cause": w.cause}


def console_link(base_url: str | None, alarm_id: int | None) -> str | None:
    """The alarm's page in the operator console, from the console's public base URL."""
    if not base_url or alarm_id is None:
        return None
    return f"{base_url.rstrip('/')}/alarms/{alarm_id}"
