"""The tamper-evident record: an append-only, hash-chained log in the database.

Every entry is ``(seq, time, kind, ref, body, prev_hash, hash)`` with

    hash = sha256(prev_hash + canonical_json({"seq", "time", "kind", "ref", "body"}))

``seq`` is gapless: an appender locks the one ``audit_head`` row (``SELECT … FOR UPDATE``), takes
``seq + 1`` and moves the head in the same transaction as the change it records, so appends are
serialized across connections and a rolled-back change leaves no entry. :func:`verify` walks the
chain and names the first entry that was altered, inserted, deleted or moved; the head row
catches entries removed from (or forged onto) the end. An export (JSON lines) carries the hash
the exported range hangs from, so an inspector can check it offline with :func:`verify_lines`.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

import asyncpg

GENESIS = "0" * 64
EXPORT_FORMAT = "plantwatch-audit-export/1"


def clean(obj: Any) -> Any:
    """A JSON value that survives jsonb unchanged: non-finite floats become strings, -0.0 is 0.0,
    NUL characters are dropped, keys are strings."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return repr(obj)
        return 0.0 if obj == 0 else obj
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, str):
        return obj.replace("\x00", "")
    if isinstance(obj, (bool, int)) or obj is None:
        return obj
    if isinstance(obj, datetime):
        return obj.isoformat()
    return str(obj)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def micros(t: datetime) -> int:
    """Exact microseconds since the epoch (what timestamptz stores)."""
    return (t - _EPOCH) // _US


def entry_hash(prev_hash: str, seq: int, time_us: int, kind: str, ref: str, body: Any) -> str:
    payload = canonical({"seq": seq, "time": time_us, "kind": kind, "ref": ref, "body": body})
    return hashlib.sha256(prev_hash.encode() + payload).hexdigest()


async def append(conn: asyncpg.Connection, kind: str, ref: str, body: dict[str, Any],
                 time: datetime | None = None) -> tuple[int, str]:
    """Append one entry inside the caller's transaction; returns (seq, hash)."""
    head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
    seq = head["seq"] + 1
    t = time or datetime.now(timezone.utc)
    body = clean(body)
    h = entry_hash(head["hash"], seq, micros(t), kind, ref, body)
    await conn.execute("INSERT INTO audit_log (seq, time, kind, ref, body, prev_hash, hash)"
                       " VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7)",
                       seq, t, kind, ref, json.dumps(body, allow_nan=False), head["hash"], h)
    await conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, h)
    return seq, h


# --- verification ------------------------------------------------------------------------------
@dataclass
class Problem:
    seq: int | None
    kind: str  # altered | inserted | deleted | moved | head
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class Verdict:
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def _as_body(b: Any) -> Any:
    return json.loads(b) if isinstance(b, str) else b


def check(rows: Iterable[dict[str, Any]], *, anchor: str = GENESIS, start_seq: int = 1,
          head: tuple[int, str] | None = None) -> Verdict:
    """Walk entries in seq order. ``anchor`` is the hash the first entry must hang from and
    ``start_seq`` its seq; ``head`` is the (seq, hash) the chain must end at."""
    v = Verdict()
    prev_hash, expect_seq = anchor, start_seq
    hashes_seen: dict[str, int] = {}
    for r in rows:
        seq, body = int(r["seq"]), _as_body(r["body"])
        t_us = r["time"] if isinstance(r["time"], int) else micros(r["time"])
        v.entries += 1
        v.first_seq = seq if v.first_seq is None else v.first_seq
        recomputed = entry_hash(r["prev_hash"], seq, t_us, r["kind"], r["ref"], body)
        if seq != expect_seq:
            if seq > expect_seq:
                v.problems.append(Problem(expect_seq, "deleted",
                                          f"entries {expect_seq}..{seq - 1} are missing (next present: {seq})"))
            else:
                v.problems.append(Problem(seq, "inserted", f"seq {seq} repeats or goes back (expected {expect_seq})"))
        elif recomputed != r["hash"]:
            if r["prev_hash"] == prev_hash:
                v.problems.append(Problem(seq, "altered", "content does not match its hash"))
            else:
                v.problems.append(Problem(seq, "inserted", "entry neither matches its hash nor links to its predecessor"))
        elif r["prev_hash"] != prev_hash:
            if r["prev_hash"] in hashes_seen:
                v.problems.append(Problem(seq, "moved", f"links to seq {hashes_seen[r['prev_hash']]}, not to seq {seq - 1}"))
            else:
                v.problems.append(Problem(seq, "altered",
                                          "does not link to its predecessor (the predecessor was altered and rehashed,"
                                          " or this entry was forged)"))
        hashes_seen[r["hash"]] = seq
        prev_hash, expect_seq = r["hash"], seq + 1
        v.last_seq, v.last_hash = seq, r["hash"]
    if head is not None:
        hseq, hhash = head
        last = v.last_seq if v.last_seq is not None else start_seq - 1
        if last < hseq:
            v.problems.append(Problem(last + 1, "deleted", f"entries {last + 1}..{hseq} at the end are missing"
                                                           f" (head says seq {hseq})"))
        elif last > hseq:
            v.problems.append(Problem(hseq + 1, "inserted", f"entries {hseq + 1}..{last} after the head (seq {hseq})"))
        elif v.last_hash != hhash:
            v.problems.append(Problem(hseq, "altered", "the last entry's hash differs from the head's"))
    return v


async def verify(conn: asyncpg.Connection, *, batch: int = 5000) -> Verdict:
    head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")

    async def rows() -> list[dict[str, Any]]:
        out = []
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            async for r in conn.cursor("SELECT seq, time, kind, ref, body::text AS body, prev_hash, hash"
                                       " FROM audit_log ORDER BY seq", prefetch=batch):
                out.append(dict(r))
        return out

    return check(await rows(), head=(head["seq"], head["hash"]) if head else None)


# --- export ------------------------------------------------------------------------------------
async def export(conn: asyncpg.Connection, t_from: datetime | None, t_to: datetime | None) -> Iterator[str]:
    """JSON lines: a header with the anchor (the hash the first exported entry hangs from) and
    the database head at export time, then one line per entry."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rng = await conn.fetchrow(
            "SELECT min(seq) AS lo, max(seq) AS hi FROM audit_log"
            " WHERE ($1::timestamptz IS NULL OR time >= $1) AND ($2::timestamptz IS NULL OR time < $2)",
            t_from, t_to)
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
        lo, hi = rng["lo"], rng["hi"]
        rows = [] if lo is None else await conn.fetch(
            "SELECT seq, time, kind, ref, body::text AS body, prev_hash, hash FROM audit_log"
            " WHERE seq BETWEEN $1 AND $2 ORDER BY seq", lo, hi)
    lines = [json.dumps({"format": EXPORT_FORMAT, "from": t_from.isoformat() if t_from else None,
                         "to": t_to.isoformat() if t_to else None,
                         "first_seq": lo, "last_seq": hi,
                         "anchor": rows[0]["prev_hash"] if rows else None,
                         "last_hash": rows[-1]["hash"] if rows else None,
                         "head": {"seq": head["seq"], "hash": head["hash"]},
                         "exported_at": datetime.now(timezone.utc).isoformat()})]
    for r in rows:
        lines.append(json.dumps({"seq": r["seq"], "time": micros(r["time"]), "time_iso": r["time"].isoformat(),
                                 "kind": r["kind"], "ref": r["ref"], "body": json.loads(r["body"]),
                                 "prev_hash": r["prev_hash"], "hash": r["hash"]}, ensure_ascii=False))
    return iter(lines)


def verify_lines(lines: Iterable[str], *, anchor: str | None = None, last_hash: str | None = None) -> Verdict:
    """Verify an export offline. ``anchor`` / ``last_hash`` override the header's (an inspector
    passes the hashes obtained independently, e.g. from an earlier export or a published head)."""
    it = (ln for ln in lines if ln.strip())
    try:
        header = json.loads(next(it))
    except StopIteration:
        v = Verdict()
        v.problems.append(Problem(None, "deleted", "empty file"))
        return v
    if header.get("format") != EXPORT_FORMAT:
        v = Verdict()
        v.problems.append(Problem(None, "altered", f"not a plantwatch audit export (format {header.get('format')!r})"))
        return v
    entries = [json.loads(ln) for ln in it]
    first = header.get("first_seq") or (entries[0]["seq"] if entries else 1)
    last = header.get("last_seq")
    end = last_hash or header.get("last_hash")
    return check(entries, anchor=anchor or header.get("anchor") or GENESIS, start_seq=first,
                 head=(last, end) if last is not None and end else None)


# --- cross-check: do the tables still say what the chain recorded? ------------------------------
def _unpaired(r: Any, table: str, what: str, problems: list[Problem]) -> bool:
    """A row of ``table`` full-joined with its audit entries: record a missing side, if any."""
    if r["id"] is None:
        problems.append(Problem(r["seq"], "deleted", f"the {what} it records is gone from {table}"))
        return True
    if r["seq"] is None:
        problems.append(Problem(None, "inserted", f"{table} row {r['id']} has no audit entry"))
        return True
    return False


async def verify_records(conn: asyncpg.Connection) -> list[Problem]:
    """Compare alarm changes, operator actions, config versions and the alarms' current state
    with what the (verified) chain recorded: a row edited, deleted or added behind the chain's
    back is named. ``seq`` in a problem is the audit entry concerned (None: no entry)."""
    problems: list[Problem] = []

    def differs(a: Any, b: Any) -> bool:
        return canonical(clean(a)) != canonical(clean(b))

    rows = await conn.fetch(
        "SELECT c.id, c.alarm_id, c.from_state, c.to_state, c.condition, c.severity, c.cause::text AS cause,"
        " c.time, l.seq, l.body::text AS body FROM alarm_changes c"
        " FULL JOIN (SELECT seq, ref, body FROM audit_log WHERE kind = 'alarm_change') l"
        " ON l.ref = 'alarm_change:' || c.id ORDER BY coalesce(l.seq, 0), c.id")
    for r in rows:
        if _unpaired(r, "alarm_changes", "alarm change", problems):
            continue
        b = json.loads(r["body"])
        now = {"alarm_id": r["alarm_id"], "from": r["from_state"], "to": r["to_state"], "condition": r["condition"],
               "severity": r["severity"], "cause": json.loads(r["cause"])}
        then = {k: b.get(k) for k in now}
        if differs(now, then) or abs(r["time"].timestamp() - float(b.get("time", 0))) > 1e-5:
            problems.append(Problem(r["seq"], "altered", f"alarm_changes row {r['id']} differs from its audit entry"))
    rows = await conn.fetch(
        "SELECT o.id, o.alarm_id, o.action, o.actor, o.role, o.reason, o.params::text AS params, o.from_state,"
        " o.to_state, l.seq, l.body::text AS body FROM operator_actions o"
        " FULL JOIN (SELECT seq, ref, body FROM audit_log WHERE kind = 'operator_action') l"
        " ON l.ref = 'operator_action:' || o.id ORDER BY coalesce(l.seq, 0), o.id")
    for r in rows:
        if _unpaired(r, "operator_actions", "operator action", problems):
            continue
        b = json.loads(r["body"])
        now = {"alarm_id": r["alarm_id"], "action": r["action"], "actor": r["actor"], "role": r["role"],
               "reason": r["reason"], "params": json.loads(r["params"]), "from": r["from_state"], "to": r["to_state"]}
        if differs(now, {k: b.get(k) for k in now}):
            problems.append(Problem(r["seq"], "altered", f"operator_actions row {r['id']} differs from its audit entry"))
    for r in await conn.fetch("SELECT hash, content FROM config_versions"):
        import hashlib as _h
        if _h.sha256(r["content"].encode()).hexdigest() != r["hash"]:
            problems.append(Problem(None, "altered", f"config_versions {r['hash'][:12]}…: content does not match its hash"))
        elif not await conn.fetchval("SELECT 1 FROM audit_log WHERE kind = 'config' AND ref = $1", f"config:{r['hash']}"):
            problems.append(Problem(None, "inserted", f"config_versions {r['hash'][:12]}… has no audit entry"))
    for r in await conn.fetch(
            "SELECT a.id, a.state, c.to_state FROM alarms a LEFT JOIN LATERAL (SELECT to_state FROM alarm_changes"
            " WHERE alarm_id = a.id ORDER BY id DESC LIMIT 1) c ON true WHERE c.to_state IS DISTINCT FROM a.state"):
        problems.append(Problem(None, "altered", f"alarm {r['id']} is in state {r['state']!r} but its last recorded"
                                                 f" change says {r['to_state']!r}"))
    return problems
