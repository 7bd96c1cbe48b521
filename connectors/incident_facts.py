"""The facts an incident report shows, read from the store: the incident, its site, areas and
sensors, the config in force, the readings of the involved sensors around it, the robot
readings of the window, and the audit entries that vouch for it. The report itself (rendering,
and the choice of robot readings near the incident) is ``daemon/alarms/report.py``."""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import asyncpg

from . import alarm_db, audit, seal
from .errors import availability, driver_errors
from .readonly import session

PAD = 900.0  # seconds shown before the start and after the end
MAX_POINTS = 4000  # per sensor and plot


async def gather(conn: asyncpg.Connection, incident_id: int) -> dict[str, Any]:
    """Every fact of incident ``incident_id`` (``LookupError`` when there is none). ``robot``
    holds every robot reading of the window; the report keeps those near the incident."""
    inc = await alarm_db.get_incident(conn, incident_id)
    if inc is None:
        raise LookupError(f"no incident {incident_id}")
    t0 = inc["started_at"] - PAD
    t_end = inc["ended_at"] or max(inc["last_alarm_at"], time.time())
    t1 = t_end + PAD if inc["ended_at"] else t_end
    site = await conn.fetchrow("SELECT id, name, width, height FROM sites WHERE id = $1", inc["site_id"])
    areas = [dict(r) for r in await conn.fetch("SELECT id, name, x0, y0, x1, y1 FROM areas WHERE site_id = $1",
                                               inc["site_id"])]
    sensors = {r["tag"]: dict(r) for r in await conn.fetch(
        "SELECT id, tag, area_id, kind, quantity, unit, x, y, description FROM sensors WHERE site_id = $1",
        inc["site_id"])}
    # the part of the config without credentials: what the read-only role may read
    cfg = await conn.fetchrow("SELECT hash, public_content AS content, first_loaded_at FROM config_versions"
                              " WHERE hash = $1", inc["config_hash"]) if inc["config_hash"] else None
    involved = [t for t in inc["sensors"] if t in sensors]
    series = {}
    for tag in involved:
        table = "robot_readings" if sensors[tag]["kind"] == "robot" else "readings"  # robot channels: own table
        rows = await conn.fetch(
            f"SELECT extract(epoch FROM time)::float8 AS t, value FROM {table} WHERE sensor_id = $1"
            " AND time BETWEEN $2 AND $3 ORDER BY time", sensors[tag]["id"], alarm_db.ts(t0), alarm_db.ts(t1))
        step = max(1, math.ceil(len(rows) / MAX_POINTS))
        series[tag] = ([r["t"] for r in rows[::step]], [r["value"] for r in rows[::step]])
    robot = [dict(r) for r in await conn.fetch(
        "SELECT extract(epoch FROM r.time)::float8 AS t, s.tag, s.quantity, s.unit, r.value, r.x, r.y, r.area_id"
        " FROM robot_readings r JOIN sensors s ON s.id = r.sensor_id WHERE r.time BETWEEN $1 AND $2"
        " ORDER BY r.time LIMIT 20000", alarm_db.ts(t0), alarm_db.ts(t1))]
    for a in inc["alarms"]:  # the value that raised it: the reading at (or just before) the raise
        s = sensors.get(a["sensor"])
        table = "robot_readings" if s and s["kind"] == "robot" else "readings"
        a["value"] = None if s is None else await conn.fetchval(
            f"SELECT value FROM {table} WHERE sensor_id = $1 AND time <= $2 ORDER BY time DESC LIMIT 1",
            s["id"], alarm_db.ts(a["raised_at"] + 1e-6))
    refs = [f"incident:{incident_id}", f"config:{inc['config_hash']}"] + [f"alarm_change:{c['id']}" for c in inc["changes"]]
    refs += [f"operator_action:{o['id']}" for o in inc["actions"]]
    audit_rows = [dict(r) for r in await conn.fetch(
        "SELECT seq, time, kind, ref, hash FROM audit_log WHERE ref = ANY($1::text[]) ORDER BY seq", refs)]
    head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
    ids = {sensors[t]["id"]: t for t in involved}
    st = await seal.chained(conn, audit.micros(alarm_db.ts(t0)), audit.micros(alarm_db.ts(t1)))
    slices = [{"table": tb, "start": start, "sensor_id": sid, "sensor": ids[sid], "n": n, "digest": d, "seq": q}
              for (tb, start, sid), (n, d, q) in sorted(st.slices.items()) if sid in ids
              and start + st.width * 1_000_000 > audit.micros(alarm_db.ts(t0)) and start < audit.micros(alarm_db.ts(t1))]
    return {"incident": inc, "t0": t0, "t1": t1, "t_end": t_end, "site": dict(site) if site else None,
            "areas": areas, "sensors": sensors, "config": dict(cfg) if cfg else None, "series": series,
            "robot": robot, "audit": audit_rows, "head": dict(head) if head else None,
            "slices": slices, "sealed_until": st.sealed_until}


async def read(dsn: str, incident_id: int) -> dict[str, Any]:
    """:func:`gather` over a connection of its own (the CLI, the demo)."""
    async with session(dsn) as conn:  # read-only, the schema checked, never migrated
        return await gather(conn, incident_id)


async def latest(dsn: str, sensor_tags: Sequence[str] | None = None) -> int | None:
    """Id of the most recent incident that involves any of ``sensor_tags`` (any incident if
    none are given), or None."""
    with driver_errors(), availability():
        conn = await asyncpg.connect(dsn)
        try:
            return await alarm_db.latest_incident_id(conn, sensor_tags)
        finally:
            await conn.close()
