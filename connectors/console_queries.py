"""The operator console's reads (daemon/alarms/console_api.py): the alarm summary with what a
DCS summary shows per row (the condition that alarmed, the value at alarm and the live value),
a tag's trend around an alarm, and the alarms of an incident. Plain SQL on the tables of
migrations 001/003/060; works on PostgreSQL and TimescaleDB alike."""
from __future__ import annotations

from typing import Any, Sequence

import asyncpg

from .alarm_db import ALARM_AREA, ts

#: the condition that alarmed during the alarm's current episode (since it was raised): the most
#: severe limit crossing (high_high over high, low_low over low), else the last non-normal one;
#: kept when the alarm has cleared, so a cleared row says "high_high (cleared)", not "normal"
_ALARMED = (
    "SELECT c.condition FROM alarm_changes c WHERE c.alarm_id = a.id AND c.condition <> 'normal'"
    " AND (a.raised_at IS NULL OR c.time >= a.raised_at)"
    " ORDER BY (c.condition IN ('high_high', 'low_low')) DESC, c.time DESC, c.id DESC LIMIT 1")

#: the reading of the alarm's sensor when it was raised, and the latest one, from ``{t}`` (fixed
#: sensors' readings, or a robot channel's robot_readings)
_AT_ALARM = ("(SELECT r.value, r.time FROM {t} r WHERE r.sensor_id = a.sensor_id AND r.time <= a.raised_at"
             " ORDER BY r.time DESC LIMIT 1)")
_LIVE = "(SELECT r.value, r.time FROM {t} r WHERE r.sensor_id = a.sensor_id ORDER BY r.time DESC LIMIT 1)"

_SUMMARY = (
    f"SELECT a.id, a.detector_id, s.tag AS sensor, s.description, {ALARM_AREA} AS area,"
    " coalesce(p.position, 'site') AS position, s.unit, a.state, a.active, a.condition, a.severity, a.priority,"
    " coalesce(ac.condition, a.condition) AS alarm_condition,"
    " extract(epoch FROM a.raised_at)::float8 AS raised_at, extract(epoch FROM a.cleared_at)::float8 AS cleared_at,"
    " extract(epoch FROM a.acked_at)::float8 AS acked_at, a.acked_by,"
    " extract(epoch FROM a.shelved_at)::float8 AS shelved_at, extract(epoch FROM a.shelved_until)::float8 AS shelved_until,"
    " a.shelved_by, a.oos_by, a.suppressed_by, a.state_reason, a.incident_id,"
    " va.value AS value_at_alarm, lv.value AS live_value, extract(epoch FROM lv.time)::float8 AS live_time"
    " FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
    f" LEFT JOIN operator_positions p ON p.area_id = {ALARM_AREA}"
    f" LEFT JOIN LATERAL ({_ALARMED}) ac ON true"
    f" LEFT JOIN LATERAL ({_AT_ALARM.format(t='readings')} UNION ALL {_AT_ALARM.format(t='robot_readings')}"
    "   ORDER BY time DESC LIMIT 1) va ON true"
    f" LEFT JOIN LATERAL ({_LIVE.format(t='readings')} UNION ALL {_LIVE.format(t='robot_readings')}"
    "   ORDER BY time DESC LIMIT 1) lv ON true")


async def summary(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every alarm not in state normal (shelved, suppressed and out of service included: the
    console shows those in their own lists), with the columns of a DCS alarm summary."""
    rows = await conn.fetch(_SUMMARY + " WHERE a.state <> 'normal' ORDER BY a.raised_at DESC NULLS LAST, a.id DESC")
    return [dict(r) for r in rows]


async def summary_row(conn: asyncpg.Connection, alarm_id: int) -> dict[str, Any] | None:
    r = await conn.fetchrow(_SUMMARY + " WHERE a.id = $1", alarm_id)
    return dict(r) if r is not None else None


async def trend(conn: asyncpg.Connection, sensor_tag: str, t0: float, t1: float,
                limit: int = 5000) -> list[tuple[float, float]]:
    """(time, value) of a sensor's readings (or a robot channel's) in [t0, t1], oldest first, at
    most ``limit`` (the newest are kept)."""
    rows = await conn.fetch(
        "SELECT t, v FROM (SELECT extract(epoch FROM r.time)::float8 AS t, r.value AS v FROM"
        " (SELECT time, sensor_id, value FROM readings UNION ALL SELECT time, sensor_id, value FROM robot_readings) r"
        " JOIN sensors s ON s.id = r.sensor_id WHERE s.tag = $1 AND r.time BETWEEN $2 AND $3"
        " ORDER BY r.time DESC LIMIT $4) x ORDER BY t", sensor_tag, ts(t0), ts(t1), limit)
    return [(r["t"], r["v"]) for r in rows]


async def alarm_keys(conn: asyncpg.Connection, alarm_ids: Sequence[int]) -> dict[int, tuple[str, int]]:
    """(detector id, sensor id) of each existing alarm id."""
    rows = await conn.fetch("SELECT id, detector_id, sensor_id FROM alarms WHERE id = ANY($1::bigint[])",
                            list(alarm_ids))
    return {r["id"]: (r["detector_id"], r["sensor_id"]) for r in rows}


async def incident_alarm_ids(conn: asyncpg.Connection, incident_id: int) -> list[int] | None:
    """The alarms of an incident (None: no such incident)."""
    if not await conn.fetchval("SELECT 1 FROM incidents WHERE id = $1", incident_id):
        return None
    return [r["alarm_id"] for r in await conn.fetch(
        "SELECT alarm_id FROM incident_alarms WHERE incident_id = $1 ORDER BY raised_at, alarm_id", incident_id)]
