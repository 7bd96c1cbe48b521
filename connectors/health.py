"""Alarm-system health figures over a time range (EEMUA 191 / ISA-18.2), from the views of
migration 004. Used by ``plantwatch alarms report``."""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import asyncpg

FLOOD_ABOVE = 10  # alarms in 10 minutes
PERIOD = 600.0


async def report(conn: asyncpg.Connection, t_from: datetime, t_to: datetime) -> dict[str, Any]:
    periods = max(1, math.ceil((t_to - t_from).total_seconds() / PERIOD))
    days = max(1.0, (t_to - t_from).total_seconds() / 86400)
    rng = "time >= $1 AND time < $2"
    positions = [r["position"] for r in await conn.fetch(
        "SELECT DISTINCT position FROM operator_positions UNION SELECT 'site' ORDER BY 1")]
    per_pos = {r["position"]: dict(r) for r in await conn.fetch(
        f"SELECT position, count(*) AS alarms FROM alarm_activations WHERE {rng} GROUP BY position", t_from, t_to)}
    buckets = await conn.fetch(
        f"SELECT position, floor(extract(epoch FROM time) / 600) AS b, count(*) AS n FROM alarm_activations"
        f" WHERE {rng} GROUP BY 1, 2", t_from, t_to)
    rows = []
    for p in sorted(set(positions) | set(per_pos)):
        n = per_pos.get(p, {}).get("alarms", 0)
        bs = [b["n"] for b in buckets if b["position"] == p]
        flood = sum(1 for x in bs if x > FLOOD_ABOVE)
        rows.append({"position": p, "alarms": n, "per_10min": n / periods, "per_day": n / days,
                     "max_10min": max(bs, default=0), "flood_periods": flood,
                     "flood_pct": 100.0 * flood / periods})
    chattering = [dict(r) for r in await conn.fetch(
        f"SELECT alarm_id, detector_id, sensor, count(*) AS chatter_activations, max(time) AS last"
        f" FROM alarm_chattering WHERE {rng} GROUP BY 1, 2, 3 ORDER BY 4 DESC", t_from, t_to)]
    stale = [dict(r) for r in await conn.fetch(
        "SELECT alarm_id, detector_id, sensor, state, severity, raised_at, active_for FROM alarm_stale"
        " ORDER BY raised_at")]
    bad = [dict(r) for r in await conn.fetch(
        f"SELECT alarm_id, detector_id, sensor, position, count(*) AS activations, max(time) AS last"
        f" FROM alarm_activations WHERE {rng} GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC, 1 LIMIT 10", t_from, t_to)]
    total = sum(r["alarms"] for r in rows)
    top10 = sum(r["activations"] for r in bad)
    prio = {r["priority"]: r["n"] for r in await conn.fetch(
        f"SELECT priority, count(*) AS n FROM alarm_activations WHERE {rng} GROUP BY 1", t_from, t_to)}
    states = {r["state"]: r["alarms"] for r in await conn.fetch("SELECT state, alarms FROM alarm_state_counts")}
    actions = {r["action"]: r["n"] for r in await conn.fetch(
        f"SELECT action, count(*) AS n FROM operator_actions WHERE {rng} GROUP BY 1", t_from, t_to)}
    return {
        "from": t_from.isoformat(), "to": t_to.isoformat(), "periods_10min": periods, "days": days,
        "activations": total, "positions": rows, "chattering": chattering, "stale": stale, "bad_actors": bad,
        "bad_actor_share_pct": 100.0 * top10 / total if total else 0.0,
        "priority_distribution": {p: prio.get(p, 0) for p in (1, 2, 3, 4)},
        "shelved_now": states.get("shelved", 0), "out_of_service_now": states.get("out_of_service", 0),
        "suppressed_now": states.get("suppressed", 0), "actions": actions,
    }
