"""Do the tables still say what the chain recorded? Each row a report shows is compared with its
audit entries, and every difference is named: table, key, column, chained value, stored value.

Covered: alarm changes and operator actions (one entry per row, with its place ``seq`` in the
record), the alarms' current state, incidents (title, cause, time span, areas, sensors, flood,
config — folded from their ``opened``/``joined``/``cause``/``closed`` entries), incident membership
(``incident_alarms``: alarm, role, raised time), config versions (content and the inspector's
part by their hashes) and dead letters (``connectors/seal.py``). A ``seq`` in a problem is the
audit entry concerned (None: no entry).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg

from .audit_base import Problem, canonical, clean, micros
from .pgcopy import pg_datetime

_TOL = 1e-5  # seconds: timestamps are compared to the microsecond


def _differs(a: Any, b: Any) -> bool:
    return canonical(clean(a)) != canonical(clean(b))


def _columns(table: str, key: str, seq: int | None, now: dict[str, Any], then: dict[str, Any],
             problems: list[Problem], times: tuple[str, ...] = ()) -> None:
    for col in now:
        a, b = now[col], then.get(col)
        if col in times:
            bad = (a is None) != (b is None) or (a is not None and abs(float(a) - float(b)) > _TOL)
        else:
            bad = _differs(a, b)
        if bad:
            problems.append(Problem(seq, "altered", f"{table} row {key} differs from its audit entry: column {col}:"
                                                    f" chained {b!r}, stored {a!r}"))


def _unpaired(r: Any, table: str, what: str, problems: list[Problem]) -> bool:
    """A row of ``table`` full-joined with its audit entries: record a missing side, if any."""
    if r["id"] is None:
        problems.append(Problem(r["seq"], "deleted", f"the {what} it records is gone from {table}"))
        return True
    if r["seq"] is None:
        problems.append(Problem(None, "inserted", f"{table} row {r['id']} has no audit entry"))
        return True
    return False


#: rows with one audit entry each: table -> (entry kind, what, columns, the row as the entry's body names it)
_PER_ROW = {
    "alarm_changes": ("alarm_change", "alarm change",
                      "x.alarm_id, x.from_state, x.to_state, x.condition, x.severity, x.cause::text AS cause",
                      lambda r: {"alarm_id": r["alarm_id"], "from": r["from_state"], "to": r["to_state"],
                                 "condition": r["condition"], "severity": r["severity"], "cause": json.loads(r["cause"])}),
    "operator_actions": ("operator_action", "operator action",
                         "x.alarm_id, x.action, x.actor, x.role, x.reason, x.params::text AS params, x.from_state,"
                         " x.to_state",
                         lambda r: {"alarm_id": r["alarm_id"], "action": r["action"], "actor": r["actor"],
                                    "role": r["role"], "reason": r["reason"], "params": json.loads(r["params"]),
                                    "from": r["from_state"], "to": r["to_state"]}),
}


async def _per_row(conn: asyncpg.Connection, problems: list[Problem]) -> None:
    """Alarm changes and operator actions: each row against its entry, its place ``seq`` included."""
    for table, (kind, what, cols, as_body) in _PER_ROW.items():
        rows = await conn.fetch(
            f"SELECT x.id, {cols}, extract(epoch FROM x.time)::float8 AS time, x.seq AS row_seq, l.seq,"
            f" l.body::text AS body FROM {table} x FULL JOIN (SELECT seq, ref, body FROM audit_log WHERE kind = $1) l"
            f" ON l.ref = $1 || ':' || x.id ORDER BY coalesce(l.seq, 0), x.id", kind)
        for r in rows:
            if _unpaired(r, table, what, problems):
                continue
            b = json.loads(r["body"])
            now = as_body(r) | {"time": r["time"], "seq": r["row_seq"]}
            then = {k: b.get(k) for k in now} | {"seq": r["seq"]}
            _columns(table, str(r["id"]), r["seq"], now, then, problems, times=("time",))


def fold_incidents(entries: list[tuple[int, dict[str, Any]]]) -> tuple[dict[int, dict], dict[tuple, dict]]:
    """The incidents and their membership as the chain recorded them, from the ``incident``
    entries (seq, body) in order: ``{id: fields}``, ``{(incident, alarm, raised µs): fields}``."""
    incs: dict[int, dict[str, Any]] = {}
    members: dict[tuple[int, int, int], dict[str, Any]] = {}
    for seq, b in entries:
        iid, ev = b["id"], b.get("event")
        t_us = micros(pg_datetime(b["time"])) if b.get("time") is not None else None
        if ev == "opened":
            incs[iid] = {"seq": seq, "title": b.get("title"), "started_at": b.get("time"), "ended_at": None,
                         "last_alarm_at": b.get("time"), "cause_alarm_id": b.get("cause_alarm_id"),
                         "config_hash": b.get("config_hash"), "areas": [b.get("area")], "sensors": [b.get("sensor")],
                         "flood": bool(b.get("flood"))}
            members[(iid, b.get("cause_alarm_id"), t_us)] = {"seq": seq, "role": "cause", "condition": b.get("condition"),
                                                              "severity": b.get("severity")}
            continue
        inc = incs.get(iid)
        if inc is None:
            continue
        inc["seq"] = seq
        if ev == "joined":
            inc["last_alarm_at"] = max(inc["last_alarm_at"], b["time"])
            for k, v in (("areas", b.get("area")), ("sensors", b.get("sensor"))):
                if v not in inc[k]:
                    inc[k].append(v)
            inc["flood"] = inc["flood"] or bool(b.get("flood"))
            members.setdefault((iid, b.get("alarm_id"), t_us), {"seq": seq, "role": "consequence",
                                                                "condition": b.get("condition"),
                                                                "severity": b.get("severity")})
        elif ev == "cause":
            inc["cause_alarm_id"], inc["title"] = b.get("cause_alarm_id"), b.get("title")
            for (i, a, _), m in members.items():
                if i == iid:
                    m["role"] = "cause" if a == b.get("cause_alarm_id") else ("consequence" if m["role"] == "cause"
                                                                              else m["role"])
        elif ev == "closed":
            inc["ended_at"] = b.get("time")
    return incs, members


async def _incidents(conn: asyncpg.Connection, problems: list[Problem]) -> None:
    entries = [(r["seq"], json.loads(r["body"])) for r in await conn.fetch(
        "SELECT seq, body::text AS body FROM audit_log WHERE kind = 'incident' ORDER BY seq")]
    incs, members = fold_incidents(entries)
    rows = {r["id"]: dict(r) for r in await conn.fetch(
        "SELECT id, title, extract(epoch FROM started_at)::float8 AS started_at,"
        " extract(epoch FROM ended_at)::float8 AS ended_at, extract(epoch FROM last_alarm_at)::float8 AS last_alarm_at,"
        " cause_alarm_id, config_hash, areas, sensors, flood FROM incidents")}
    for iid in sorted(set(rows) | set(incs)):
        then, now = incs.get(iid), rows.get(iid)
        if then is None:
            problems.append(Problem(None, "inserted", f"incidents row {iid} has no audit entry"))
        elif now is None:
            problems.append(Problem(then["seq"], "deleted", f"incidents row {iid} ({then['title']!r}) is gone"))
        else:
            _columns("incidents", str(iid), then["seq"], {k: v for k, v in now.items() if k != "id"}, then, problems,
                     times=("started_at", "ended_at", "last_alarm_at"))
    stored = {(r["incident_id"], r["alarm_id"], r["t"]): dict(r) for r in await conn.fetch(
        "SELECT incident_id, alarm_id, (extract(epoch FROM raised_at) * 1000000)::bigint AS t, role, condition, severity"
        " FROM incident_alarms")}
    members = _rounded_as_stored(members, stored)
    for key in sorted(set(stored) | set(members), key=lambda k: tuple(-1 if x is None else x for x in k)):
        then, now = members.get(key), stored.get(key)
        name = f"(incident {key[0]}, alarm {key[1]})"
        if then is None:
            problems.append(Problem(None, "inserted", f"incident_alarms row {name} has no audit entry"))
        elif now is None:
            problems.append(Problem(then["seq"], "deleted", f"incident_alarms row {name} is gone: the chain records"
                                                            f" alarm {key[1]} as {then['role']} of incident {key[0]}"))
        else:
            _columns("incident_alarms", name, then["seq"], {k: now[k] for k in ("role", "condition", "severity")},
                     then, problems)


def _rounded_as_stored(members: dict[tuple, dict], stored: dict[tuple, Any]) -> dict[tuple, dict]:
    """The chain records a member's raise time in Unix seconds; the row stores it in µs. Rows
    written before every time was rounded as PostgreSQL rounds (connectors/pgcopy.py:
    ``pg_datetime``) hold ``datetime.fromtimestamp``'s rounding, 1 µs away for some times: a
    member 1 µs from a stored row of the same incident and alarm is that row."""
    out = {}
    for (iid, aid, t), m in members.items():
        if t is not None and (iid, aid, t) not in stored:
            t = next((u for u in (t - 1, t + 1) if (iid, aid, u) in stored), t)
        out[(iid, aid, t)] = m
    return out


async def _configs(conn: asyncpg.Connection, problems: list[Problem]) -> None:
    full = await conn.fetchval("SELECT has_column_privilege('config_versions', 'content', 'SELECT')")
    cols = "hash, public_content" + (", content" if full else "")
    chained = {r["ref"][7:]: (r["seq"], json.loads(r["body"])) for r in await conn.fetch(
        "SELECT seq, ref, body::text AS body FROM audit_log WHERE kind = 'config' ORDER BY seq")}
    for r in await conn.fetch(f"SELECT {cols} FROM config_versions"):
        h = r["hash"]
        seq, body = chained.get(h, (None, None))
        if body is None:
            problems.append(Problem(None, "inserted", f"config_versions {h[:12]}… has no audit entry"))
            continue
        if full and hashlib.sha256(r["content"].encode()).hexdigest() != h:
            problems.append(Problem(seq, "altered", f"config_versions {h[:12]}… column content: does not match its hash"))
        want = body.get("public_sha256")
        if want is not None and hashlib.sha256(r["public_content"].encode()).hexdigest() != want:
            problems.append(Problem(seq, "altered", f"config_versions {h[:12]}… column public_content: chained sha256"
                                                    f" {want[:12]}…, stored differs"))


async def _alarm_states(conn: asyncpg.Connection, problems: list[Problem]) -> None:
    for r in await conn.fetch(
            "SELECT a.id, a.state, c.to_state FROM alarms a LEFT JOIN LATERAL (SELECT to_state FROM alarm_changes"
            " WHERE alarm_id = a.id ORDER BY id DESC LIMIT 1) c ON true WHERE c.to_state IS DISTINCT FROM a.state"):
        problems.append(Problem(None, "altered", f"alarm {r['id']} is in state {r['state']!r} but its last recorded"
                                                 f" change says {r['to_state']!r}"))


async def verify_rows(conn: asyncpg.Connection) -> list[Problem]:
    """Every row a report shows compared with what the (verified) chain recorded."""
    problems: list[Problem] = []
    for check in (_per_row, _incidents, _configs, _alarm_states):
        await check(conn, problems)
    return problems
