"""Queries for the demo's scoring table (asyncpg, against ``migrations/001_core.sql``).

Each function takes an open asyncpg connection and returns plain dicts with times as Unix seconds,
so the scoring (:mod:`plantwatch.daemon.lab.demo_report`) needs no database to be tested.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from .pgcopy import pg_datetime

#: Alarm raises: every alarm change that makes a (detector, sensor) alarm active (from normal or
#: after it returned to normal) or moves it to a more severe severity while active (high →
#: high_high). Acknowledgements, de-escalations and clears are not raises; changes while the alarm
#: is shelved, suppressed or out of service are not annunciated, so they are not raises either.
#: The previous condition and severity are taken over the alarm's whole history (not only the
#: window), so an alarm already active before ``$1`` does not count again.
ALARM_RAISES_SQL = """
WITH ch AS (
    SELECT c.alarm_id, c.time, c.to_state, c.condition, c.severity,
           lag(c.condition) OVER w AS prev_condition,
           lag(c.severity) OVER w AS prev_severity
    FROM alarm_changes c
    WHERE c.time <= $2
    WINDOW w AS (PARTITION BY c.alarm_id ORDER BY c.time, c.id)
)
SELECT ch.time, s.tag AS sensor, s.area_id AS area, a.detector_id, ch.condition, ch.severity,
       ch.to_state
FROM ch
JOIN alarms a ON a.id = ch.alarm_id
JOIN sensors s ON s.id = a.sensor_id
WHERE ch.time >= $1
  AND ch.condition <> 'normal'
  AND ch.to_state NOT IN ('normal', 'shelved', 'suppressed', 'out_of_service')
  AND (ch.prev_condition IS NULL OR ch.prev_condition = 'normal'
       OR array_position(ARRAY['low', 'medium', 'high', 'critical'], ch.severity)
          > coalesce(array_position(ARRAY['low', 'medium', 'high', 'critical'], ch.prev_severity), 0))
ORDER BY ch.time, a.detector_id, s.tag
"""

#: Detector events (spans in a non-normal condition), whether or not they became alarms.
EVENTS_SQL = """
SELECT e.started_at AS time, e.ended_at, s.tag AS sensor, s.area_id AS area, e.detector_id,
       e.condition, e.severity
FROM events e
JOIN sensors s ON s.id = e.sensor_id
WHERE e.started_at >= $1 AND e.started_at <= $2
ORDER BY e.started_at, e.detector_id, s.tag
"""


def _ts(t: float | datetime) -> datetime:
    return t if isinstance(t, datetime) else pg_datetime(t)


def _unix(v: datetime | None) -> float | None:
    return None if v is None else v.timestamp()


async def fetch_alarm_raises(conn: Any, since: float | datetime, until: float | datetime) -> list[dict[str, Any]]:
    """Alarm raises between ``since`` and ``until`` (Unix seconds or aware datetimes)."""
    rows = await conn.fetch(ALARM_RAISES_SQL, _ts(since), _ts(until))
    return [{"time": _unix(r["time"]), "sensor": r["sensor"], "area": r["area"], "detector_id": r["detector_id"],
             "condition": r["condition"], "severity": r["severity"], "to_state": r["to_state"]} for r in rows]


async def fetch_events(conn: Any, since: float | datetime, until: float | datetime) -> list[dict[str, Any]]:
    """Detector events that started between ``since`` and ``until``."""
    rows = await conn.fetch(EVENTS_SQL, _ts(since), _ts(until))
    return [{"time": _unix(r["time"]), "cleared": _unix(r["ended_at"]), "sensor": r["sensor"], "area": r["area"],
             "detector_id": r["detector_id"], "condition": r["condition"], "severity": r["severity"]} for r in rows]


async def create_database(admin_dsn: str, name: str) -> str:
    """Create database ``name`` on the server of ``admin_dsn`` (the demo's fresh database per
    run); returns its DSN."""
    import asyncpg
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


async def count_rows(conn: Any, table: str) -> int:
    """Rows in ``table`` (one of the tables the evaluations wait on)."""
    if table not in ("readings", "transfers", "alarm_changes", "events"):
        raise ValueError(f"not a table the evaluations count: {table!r}")
    return await conn.fetchval(f"SELECT count(*) FROM {table}")


async def fetch_first_raises(conn: Any) -> list[dict[str, Any]]:
    """Every alarm change out of normal: time (Unix s), detector and condition, in time order."""
    return [dict(r) for r in await conn.fetch(
        "SELECT extract(epoch FROM c.time)::float8 AS t, a.detector_id, c.condition FROM alarm_changes c"
        " JOIN alarms a ON a.id = c.alarm_id WHERE c.from_state = 'normal' ORDER BY c.time")]
