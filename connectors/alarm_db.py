"""Database side of alarm management: operator actions, alarm fields, incidents, the audit
entries that go with them, and the queries the API, CLI and reports use.

The write-side records are *alarm ops* (plain data in ``connectors/records.py``, re-exported
here): they travel in a pipeline unit's ``ops`` list beside
:class:`~plantwatch.connectors.records.AlarmWrite` and are written, in order, by
:func:`~plantwatch.connectors.alarm_writes.apply_alarm_ops` through :func:`apply_op`,
inside the unit's transaction and after the previous alarm-writing unit committed. So an
operator action, the alarm change it causes and its audit entries commit together, in the same
order as the detector-driven changes around them.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Sequence

import asyncpg

from . import audit
from .pgcopy import pg_datetime
from .records import (AlarmFields, IncidentCause, IncidentClose, IncidentJoin, IncidentOpen,  # noqa: F401 - re-exported
                      JournalApplied, OperatorAction)


def ts(t: float) -> datetime:
    """Unix seconds as PostgreSQL stores them (connectors/pgcopy.py: the same µs as a reading's)."""
    return pg_datetime(t)


def epoch(d: datetime | None) -> float | None:
    return d.timestamp() if d is not None else None


_ALARM_ID = "SELECT id FROM alarms WHERE detector_id = $1 AND sensor_id = $2"

#: alarm columns an op may set (whitelist: the names are put into SQL)
_FIELDS = {"acked_at": "timestamptz", "acked_by": "text", "shelved_at": "timestamptz", "shelved_until": "timestamptz",
           "shelved_by": "text", "oos_at": "timestamptz", "oos_by": "text", "suppressed_by": "text",
           "state_reason": "text", "incident_id": "bigint"}


async def audit_alarm_write(conn: asyncpg.Connection, alarm_id: int, change_id: int, op: Any) -> None:
    """The audit entry of one alarm change (called by alarm_writes.apply_alarm_ops), and the change's
    place in the alarm record: its audit sequence number (the one order every timeline follows)
    and the area where the alarm was raised."""
    seq, _ = await audit.append(conn, "alarm_change", f"alarm_change:{change_id}", {
        "alarm_id": alarm_id, "change_id": change_id, "detector": op.detector_id, "sensor_id": op.sensor_id,
        "from": op.from_state, "to": op.to_state, "active": op.active, "condition": op.condition,
        "severity": op.severity, "time": op.t, "cause": op.cause})
    await conn.execute("UPDATE alarm_changes SET seq = $2, area_id = $3 WHERE id = $1", change_id, seq, op.area)
    if op.area is not None:
        await conn.execute("UPDATE alarms SET area_id = $2 WHERE id = $1 AND area_id IS DISTINCT FROM $2",
                           alarm_id, op.area)
    op.alarm_id, op.seq = alarm_id, seq


async def apply_op(conn: asyncpg.Connection, op: AlarmFields | OperatorAction | IncidentOpen | IncidentJoin
                   | IncidentCause | IncidentClose | JournalApplied) -> None:
    """Write one alarm-management operation (connectors/records.py) in the caller's transaction."""
    match op:
        case AlarmFields():
            await _alarm_fields(conn, op)
        case OperatorAction():
            await _operator_action(conn, op)
        case IncidentOpen():
            await _incident_open(conn, op)
        case IncidentJoin():
            await _incident_join(conn, op)
        case IncidentCause():
            await _incident_cause(conn, op)
        case IncidentClose():
            await _incident_close(conn, op)
        case JournalApplied():
            await conn.execute("INSERT INTO alarm_journal_applied (key) VALUES ($1) ON CONFLICT DO NOTHING", op.key)
        case _:
            raise TypeError(f"not an alarm-management operation: {type(op).__name__}")


async def _alarm_fields(conn: asyncpg.Connection, op: AlarmFields) -> None:
    sets, args = [], [op.detector_id, op.sensor_id]
    for k, v in op.fields.items():
        typ = _FIELDS[k]
        args.append(ts(v) if typ == "timestamptz" and isinstance(v, (int, float)) else v)
        sets.append(f"{k} = ${len(args)}::{typ}")
    if sets:
        await conn.execute(f"UPDATE alarms SET {', '.join(sets)} WHERE detector_id = $1 AND sensor_id = $2", *args)


async def _operator_action(conn: asyncpg.Connection, op: OperatorAction) -> None:
    alarm_id = await conn.fetchval(_ALARM_ID, op.detector_id, op.sensor_id)
    params = audit.clean(op.params)
    aid = await conn.fetchval(
        "INSERT INTO operator_actions (time, alarm_id, action, actor, role, reason, params, from_state, to_state)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9) RETURNING id",
        ts(op.t), alarm_id, op.action, op.actor, op.role, op.reason, json.dumps(params),
        op.from_state, op.to_state)
    op.result["id"] = aid
    seq, _ = await audit.append(conn, "operator_action", f"operator_action:{aid}", {
        "id": aid, "alarm_id": alarm_id, "detector": op.detector_id, "sensor_id": op.sensor_id,
        "time": op.t, "action": op.action, "actor": op.actor, "role": op.role, "reason": op.reason,
        "params": params, "from": op.from_state, "to": op.to_state})
    await conn.execute("UPDATE operator_actions SET seq = $2 WHERE id = $1", aid, seq)


async def _incident_open(conn: asyncpg.Connection, op: IncidentOpen) -> None:
    alarm_id = await conn.fetchval(_ALARM_ID, op.detector_id, op.sensor_id)
    cfg = op.config_hash
    if cfg is not None and not await conn.fetchval("SELECT 1 FROM config_versions WHERE hash = $1", cfg):
        cfg = None
    iid = await conn.fetchval(
        "INSERT INTO incidents (key, site_id, started_at, last_alarm_at, title, areas, sensors, cause_alarm_id,"
        " config_hash, flood) VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (key) DO NOTHING RETURNING id",
        op.key, op.site_id, ts(op.t), op.title, [op.area], [op.sensor], alarm_id, cfg, op.flood)
    if iid is None:  # already written (cannot normally happen: ops are applied once)
        return
    await conn.execute("INSERT INTO incident_alarms (incident_id, alarm_id, role, raised_at, condition, severity)"
                       " VALUES ($1, $2, 'cause', $3, $4, $5) ON CONFLICT DO NOTHING",
                       iid, alarm_id, ts(op.t), op.condition, op.severity)
    await conn.execute("UPDATE alarms SET incident_id = $1 WHERE id = $2", iid, alarm_id)
    await audit.append(conn, "incident", f"incident:{iid}", {
        "event": "opened", "id": iid, "key": op.key, "time": op.t, "title": op.title,
        "cause_alarm_id": alarm_id, "area": op.area, "sensor": op.sensor, "condition": op.condition,
        "severity": op.severity, "config_hash": cfg, "flood": op.flood})


async def _incident_join(conn: asyncpg.Connection, op: IncidentJoin) -> None:
    alarm_id = await conn.fetchval(_ALARM_ID, op.detector_id, op.sensor_id)
    iid = await conn.fetchval(
        "UPDATE incidents SET last_alarm_at = GREATEST(last_alarm_at, $2),"
        " areas = CASE WHEN $3 = ANY(areas) THEN areas ELSE areas || $3 END,"
        " sensors = CASE WHEN $4 = ANY(sensors) THEN sensors ELSE sensors || $4 END,"
        " flood = flood OR $5 WHERE key = $1 RETURNING id",
        op.key, ts(op.t), op.area, op.sensor, op.flood)
    if iid is None:
        return
    await conn.execute("INSERT INTO incident_alarms (incident_id, alarm_id, role, raised_at, condition, severity)"
                       " VALUES ($1, $2, 'consequence', $3, $4, $5) ON CONFLICT DO NOTHING",
                       iid, alarm_id, ts(op.t), op.condition, op.severity)
    await conn.execute("UPDATE alarms SET incident_id = $1 WHERE id = $2", iid, alarm_id)
    await audit.append(conn, "incident", f"incident:{iid}", {
        "event": "joined", "id": iid, "key": op.key, "time": op.t, "alarm_id": alarm_id, "area": op.area,
        "sensor": op.sensor, "condition": op.condition, "severity": op.severity, "flood": op.flood})


async def _incident_cause(conn: asyncpg.Connection, op: IncidentCause) -> None:
    alarm_id = await conn.fetchval(_ALARM_ID, op.detector_id, op.sensor_id)
    iid = await conn.fetchval("UPDATE incidents SET cause_alarm_id = $2, title = $3 WHERE key = $1 RETURNING id",
                              op.key, alarm_id, op.title)
    if iid is None:
        return
    await conn.execute("UPDATE incident_alarms SET role = 'consequence' WHERE incident_id = $1 AND role = 'cause'"
                       " AND alarm_id <> $2", iid, alarm_id)
    await conn.execute("UPDATE incident_alarms SET role = 'cause' WHERE incident_id = $1 AND alarm_id = $2",
                       iid, alarm_id)
    await audit.append(conn, "incident", f"incident:{iid}", {
        "event": "cause", "id": iid, "key": op.key, "time": op.t, "cause_alarm_id": alarm_id,
        "title": op.title, "condition": op.condition, "severity": op.severity})


async def _incident_close(conn: asyncpg.Connection, op: IncidentClose) -> None:
    iid = await conn.fetchval("UPDATE incidents SET ended_at = $2 WHERE key = $1 AND ended_at IS NULL RETURNING id",
                              op.key, ts(op.t))
    if iid is not None:
        await audit.append(conn, "incident", f"incident:{iid}", {"event": "closed", "id": iid, "key": op.key,
                                                                  "time": op.t})


# --- loading state at start ------------------------------------------------------------------------
async def load_alarm_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT a.detector_id, a.sensor_id, a.state, a.active, a.condition, a.severity,"
        " extract(epoch FROM a.shelved_until)::float8 AS shelved_until, a.suppressed_by, i.key AS incident,"
        " a.area_id FROM alarms a LEFT JOIN incidents i ON i.id = a.incident_id AND i.ended_at IS NULL")
    return [dict(r) for r in rows]


async def load_open_incidents(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT i.key, extract(epoch FROM i.started_at)::float8 AS started_at,"
        " extract(epoch FROM i.last_alarm_at)::float8 AS last_alarm_at, i.areas, i.sensors, i.flood,"
        " array_agg(a.detector_id) AS detectors, array_agg(a.sensor_id) AS sensor_ids,"
        " (SELECT c.detector_id FROM alarms c WHERE c.id = i.cause_alarm_id) AS cause_detector,"
        " (SELECT c.sensor_id FROM alarms c WHERE c.id = i.cause_alarm_id) AS cause_sensor_id,"
        " (SELECT x.severity FROM incident_alarms x WHERE x.incident_id = i.id AND x.role = 'cause'"
        "   ORDER BY x.raised_at LIMIT 1) AS cause_severity"
        " FROM incidents i JOIN incident_alarms ia ON ia.incident_id = i.id JOIN alarms a ON a.id = ia.alarm_id"
        " WHERE i.ended_at IS NULL GROUP BY i.id")
    return [dict(r) for r in rows]


async def sync_positions(conn: asyncpg.Connection, mapping: dict[str, str]) -> None:
    """Make ``operator_positions`` the configured ``mapping`` (area -> position). Idempotent and
    safe when several instances start at the same moment: upserts, then deletes what is no
    longer configured (never a delete-then-insert two transactions can interleave)."""
    async with conn.transaction():
        await conn.executemany("INSERT INTO operator_positions (area_id, position) VALUES ($1, $2)"
                               " ON CONFLICT (area_id) DO UPDATE SET position = EXCLUDED.position"
                               " WHERE operator_positions.position IS DISTINCT FROM EXCLUDED.position",
                               list(mapping.items()))
        await conn.execute("DELETE FROM operator_positions WHERE NOT (area_id = ANY ($1::text[]))", list(mapping))


# --- queries (API, CLI, reports) --------------------------------------------------------------------
#: SQL for the area of alarm ``a`` of sensor ``s``: where it was raised (a robot channel's alarm
#: stays in the area where the reading that raised it was taken), else the sensor's own area
ALARM_AREA = "coalesce(a.area_id, s.area_id)"
#: the columns of a change or operator action that place it in the record: its audit sequence
#: number (the order of every timeline), reading time ``time`` and processing time ``recorded_at``
_ORDER_COLS = "{x}.seq, extract(epoch FROM {x}.recorded_at)::float8 AS recorded_at"

_ALARM_COLS = (
    f"a.id, a.detector_id, s.tag AS sensor, {ALARM_AREA} AS area, s.unit, a.state, a.active, a.condition, a.severity,"
    " a.priority, extract(epoch FROM a.raised_at)::float8 AS raised_at,"
    " extract(epoch FROM a.cleared_at)::float8 AS cleared_at, extract(epoch FROM a.acked_at)::float8 AS acked_at,"
    " a.acked_by, extract(epoch FROM a.shelved_until)::float8 AS shelved_until, a.shelved_by, a.oos_by,"
    " a.suppressed_by, a.state_reason, a.incident_id, extract(epoch FROM a.updated_at)::float8 AS updated_at")


async def list_alarms(conn: asyncpg.Connection, *, include_normal: bool = False) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_ALARM_COLS} FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
        f" WHERE $1 OR a.state <> 'normal' ORDER BY a.priority, a.raised_at NULLS LAST, a.id", include_normal)
    return [dict(r) for r in rows]


async def get_alarm(conn: asyncpg.Connection, alarm_id: int) -> dict[str, Any] | None:
    r = await conn.fetchrow(f"SELECT {_ALARM_COLS} FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
                            f" WHERE a.id = $1", alarm_id)
    if r is None:
        return None
    out = dict(r)
    out["changes"] = [dict(c) for c in await conn.fetch(
        "SELECT c.id, extract(epoch FROM c.time)::float8 AS time, c.from_state, c.to_state, c.condition, c.severity,"
        f" c.cause::text AS cause, c.area_id AS area, {_ORDER_COLS.format(x='c')} FROM alarm_changes c"
        " WHERE c.alarm_id = $1 ORDER BY c.seq NULLS FIRST, c.id", alarm_id)]
    for c in out["changes"]:
        c["cause"] = json.loads(c["cause"])
    out["actions"] = [dict(c) for c in await conn.fetch(
        "SELECT o.id, extract(epoch FROM o.time)::float8 AS time, o.action, o.actor, o.role, o.reason,"
        f" o.params::text AS params, o.from_state, o.to_state, {_ORDER_COLS.format(x='o')} FROM operator_actions o"
        " WHERE o.alarm_id = $1 ORDER BY o.seq NULLS FIRST, o.id", alarm_id)]
    for c in out["actions"]:
        c["params"] = json.loads(c["params"])
    return out


async def alarm_key(conn: asyncpg.Connection, alarm_id: int) -> tuple[str, int] | None:
    r = await conn.fetchrow("SELECT detector_id, sensor_id FROM alarms WHERE id = $1", alarm_id)
    return (r["detector_id"], r["sensor_id"]) if r else None


async def list_incidents(conn: asyncpg.Connection, limit: int = 100, *, sensor: str | None = None,
                         event: int | None = None) -> list[dict[str, Any]]:
    """Recent incidents, newest first; only those involving ``sensor`` (a tag), and only those
    involving the sensor of detector event ``event`` while the event lasted, when given."""
    rows = await conn.fetch(
        "SELECT i.id, i.title, extract(epoch FROM i.started_at)::float8 AS started_at,"
        " extract(epoch FROM i.ended_at)::float8 AS ended_at, i.areas, i.sensors, i.flood, i.config_hash,"
        " (SELECT count(*) FROM incident_alarms ia WHERE ia.incident_id = i.id) AS n_alarms"
        " FROM incidents i"
        " WHERE ($2::text IS NULL OR $2 = ANY (i.sensors))"
        "   AND ($3::bigint IS NULL OR EXISTS ("
        "     SELECT 1 FROM events e JOIN sensors s ON s.id = e.sensor_id WHERE e.id = $3"
        "       AND s.tag = ANY (i.sensors) AND i.started_at <= coalesce(e.ended_at, 'infinity')"
        "       AND coalesce(i.ended_at, 'infinity') >= e.started_at))"
        " ORDER BY i.started_at DESC, i.id DESC LIMIT $1", limit, sensor, event)
    return [dict(r) for r in rows]


async def get_incident(conn: asyncpg.Connection, incident_id: int) -> dict[str, Any] | None:
    r = await conn.fetchrow(
        "SELECT i.id, i.key, i.site_id, i.title, extract(epoch FROM i.started_at)::float8 AS started_at,"
        " extract(epoch FROM i.ended_at)::float8 AS ended_at, extract(epoch FROM i.last_alarm_at)::float8 AS last_alarm_at,"
        " i.areas, i.sensors, i.flood, i.config_hash, i.cause_alarm_id FROM incidents i WHERE i.id = $1", incident_id)
    if r is None:
        return None
    out = dict(r)
    out["alarms"] = [dict(x) for x in await conn.fetch(
        "SELECT ia.alarm_id, ia.role, extract(epoch FROM ia.raised_at)::float8 AS raised_at, ia.condition, ia.severity,"
        f" a.detector_id, s.tag AS sensor, {ALARM_AREA} AS area, a.state, a.priority"
        " FROM incident_alarms ia JOIN alarms a ON a.id = ia.alarm_id JOIN sensors s ON s.id = a.sensor_id"
        " WHERE ia.incident_id = $1 ORDER BY ia.raised_at, ia.alarm_id", incident_id)]
    ids = sorted({a["alarm_id"] for a in out["alarms"]})
    t0 = out["started_at"] - 3600
    t1 = (out["ended_at"] or out["last_alarm_at"]) + 3600
    out["changes"] = [dict(x) for x in await conn.fetch(
        "SELECT c.id, c.alarm_id, extract(epoch FROM c.time)::float8 AS time, c.from_state, c.to_state, c.condition,"
        " c.severity, c.cause::text AS cause, s.tag AS sensor, a.detector_id, c.area_id AS area,"
        f" {_ORDER_COLS.format(x='c')} FROM alarm_changes c JOIN alarms a ON a.id = c.alarm_id"
        " JOIN sensors s ON s.id = a.sensor_id WHERE c.alarm_id = ANY($1::bigint[])"
        " AND (c.time BETWEEN $2 AND $3 OR c.recorded_at BETWEEN $2 AND $3)"
        " ORDER BY c.seq NULLS FIRST, c.id", ids, ts(t0), ts(t1))]
    for c in out["changes"]:
        c["cause"] = json.loads(c["cause"])
    out["actions"] = [dict(x) for x in await conn.fetch(
        "SELECT o.id, o.alarm_id, extract(epoch FROM o.time)::float8 AS time, o.action, o.actor, o.role, o.reason,"
        f" o.params::text AS params, o.from_state, o.to_state, {_ORDER_COLS.format(x='o')} FROM operator_actions o"
        " WHERE o.alarm_id = ANY($1::bigint[]) AND o.time >= $2 ORDER BY o.seq NULLS FIRST, o.id", ids, ts(t0))]
    for c in out["actions"]:
        c["params"] = json.loads(c["params"])
    out["timeline"] = timeline(out["changes"], out["actions"])
    return out


def timeline(changes: list[dict[str, Any]], actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alarm changes and operator actions in the order of the alarm record (audit sequence), each
    with ``kind`` ("change" | "action"); both times stay: ``time`` (reading or action time) and
    ``recorded_at`` (when the daemon processed it)."""
    rows = [{"kind": "change", **c} for c in changes] + [{"kind": "action", **o} for o in actions]
    big = float("inf")
    return sorted(rows, key=lambda r: (r["seq"] if r.get("seq") is not None else -big, r["kind"], r["id"]))


async def latest_incident_id(conn: asyncpg.Connection, sensor_tags: Sequence[str] | None = None) -> int | None:
    if sensor_tags:
        return await conn.fetchval("SELECT id FROM incidents WHERE sensors && $1::text[]"
                                   " ORDER BY started_at DESC, id DESC LIMIT 1", list(sensor_tags))
    return await conn.fetchval("SELECT id FROM incidents ORDER BY started_at DESC, id DESC LIMIT 1")
