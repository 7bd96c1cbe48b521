"""Readings sealed in time slices: a digest per slice and sensor, chained in the audit log.

Readings are far too many to chain one by one. Once a slice of time (``width`` seconds) is
complete — its end at least ``horizon`` seconds in the past, so readings arriving that late are
still in it — :meth:`Sealer.seal` chains one digest per sensor of the slice, taken from the
daemon (``local``: computed from the rows it committed, daemon/ingest/seal_digests.py) or, for a
slice the daemon did not see whole, computed in the database:

    sha256 over the sensor's rows in time order, each row = the time as PostgreSQL sends it
    (int8 microseconds since 2000-01-01), float8 value, int2 quality (robot readings: also
    float8 x, float8 y and the area id)

and appends one audit entry (kind ``seal``) per slice and table holding every sensor's
``[sensor id, row count, digest]``, then one entry saying up to where everything is sealed (``sealed_until``). Dead
letters are sealed by the time they were received, one fingerprint per row.

A reading that arrives after its slice was sealed is stored as usual and the slice gets a
*sealed delta*: a further ``seal`` entry with the sensor's new count and digest (``delta``:
true), never a silent change. The writers note the reading times of each write
(``Store.take_seal_marks``); :meth:`Sealer.reseal` recomputes the sealed slices they reach and
chains what changed. At start
the last hour before ``sealed_until`` is rechecked (marks of a run that crashed are lost).

:func:`verify_readings` recomputes the digests (all, or a window) and names each slice and
sensor whose stored rows differ from the chain: changed, deleted, or inserted into a sealed slice.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import asyncpg

from . import audit
from .audit_base import from_micros
from .pgcopy import pg_datetime

#: the rows of one sensor in one slice, each as fixed-width bytes, hashed in time order
#: (``timestamptz_send``: the stored int8 of microseconds since 2000-01-01, no arithmetic per row)
_ROW = {
    "readings": "timestamptz_send(time) || float8send(value) || int2send(quality)",
    "robot_readings": ("timestamptz_send(time) || float8send(value) || int2send(quality) || float8send(x)"
                       " || float8send(y) || convert_to(coalesce(area_id, ''), 'UTF8')"),
}
TABLES = tuple(_ROW)
#: the dead letter columns a seal fingerprints (long ones by their SHA-256)
DEAD_COLS = ("topic", "collector", "seq", "reason", "msg_key", "detail_sha256", "payload_sha256")


def _digest_sql(table: str) -> str:
    return (f"SELECT date_bin(make_interval(secs => $3), time, timestamptz 'epoch') AS slice, sensor_id,"
            f" count(*) AS n, encode(sha256(string_agg({_ROW[table]}, ''::bytea ORDER BY time)), 'hex') AS digest"
            f" FROM {table} WHERE time >= $1 AND time < $2 GROUP BY 1, 2")


def iso(us: int) -> str:
    return from_micros(us).strftime("%Y-%m-%d %H:%M:%S UTC")


async def digests(conn: asyncpg.Connection, table: str, lo_us: int, hi_us: int,
                  width: int) -> dict[tuple[int, int], tuple[int, str]]:
    """(slice start in µs, sensor id) -> (rows, digest) of ``table`` in [lo, hi)."""
    rows = await conn.fetch(_digest_sql(table), from_micros(lo_us), from_micros(hi_us), float(width))
    return {(audit.micros(r["slice"]), r["sensor_id"]): (r["n"], r["digest"]) for r in rows}


async def dead_letter_rows(conn: asyncpg.Connection, lo_us: int, hi_us: int) -> dict[int, dict[str, Any]]:
    """Fingerprints of the dead letters received in [lo, hi), by id (through the view the
    read-only role may read: the payload by its digest)."""
    rows = await conn.fetch(
        "SELECT id, topic, collector, seq, reason, msg_key, encode(sha256(convert_to(detail, 'UTF8')), 'hex')"
        " AS detail_sha256, payload_sha256 FROM v_dead_letter_digests WHERE received_at >= $1 AND received_at < $2",
        from_micros(lo_us), from_micros(hi_us))
    return {r["id"]: {k: r[k] for k in DEAD_COLS} for r in rows}


async def first_whole_slice(pool: asyncpg.Pool, now: float, width: int) -> float:
    """The start (Unix s) of the first slice a daemon starting at ``now`` can see whole: the
    slice holding ``now`` when no reading of it (or later) is stored yet, else the next one."""
    start = math.floor(now / width) * width
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM readings WHERE time >= $1)",
                                     pg_datetime(start))
    return start + width if stored else start


@dataclass
class SealedState:
    """What the chain says: the sealed range and each (table, slice, sensor)'s current digest."""
    sealed_from: int | None = None
    sealed_until: int | None = None
    width: int = 60
    slices: dict[tuple[str, int, int], tuple[int, str | None, int]] = None  # -> (n, digest, audit seq)
    dead: dict[int, tuple[dict[str, Any] | None, int]] = None  # id -> (fingerprint, seq)

    def __post_init__(self) -> None:
        self.slices = {} if self.slices is None else self.slices
        self.dead = {} if self.dead is None else self.dead


async def chained(conn: asyncpg.Connection, lo_us: int | None = None, hi_us: int | None = None) -> SealedState:
    """Fold the ``seal`` entries of the chain (those about slices in [lo, hi) when given)."""
    st = SealedState()
    rows = await conn.fetch(
        "SELECT seq, body::text AS body FROM audit_log WHERE kind = 'seal'"
        " AND ($1::bigint IS NULL OR ref = 'sealed' OR (body->>'start')::bigint >= $1 - (body->>'width')::bigint * 1000000)"
        " AND ($2::bigint IS NULL OR ref = 'sealed' OR (body->>'start')::bigint < $2) ORDER BY seq", lo_us, hi_us)
    for r in rows:
        b = json.loads(r["body"])
        if "until" in b:
            st.sealed_from = b["from"] if st.sealed_from is None else min(st.sealed_from, b["from"])
            st.sealed_until = b["until"] if st.sealed_until is None else max(st.sealed_until, b["until"])
            st.width = b["width"]
        elif b["table"] == "dead_letters":
            for k, v in b["rows"].items():
                st.dead[int(k)] = (v, r["seq"])
        else:
            for sid, n, d in b["sensors"]:
                st.slices[(b["table"], b["start"], sid)] = (n, d, r["seq"])
    return st


class Sealer:
    """Seals the readings of completed slices (one round at a time, serialized across
    instances by the ``seal_state`` row)."""

    #: slices sealed per round at most (a long backlog is sealed over several rounds)
    MAX_SLICES = 30

    def __init__(self, pool: asyncpg.Pool, *, width: int, horizon: float,
                 local: Callable[[int], dict[int, tuple[int, str]] | None] | None = None):
        """``local``: the digests of a ``readings`` slice (by its start, Unix µs) computed by the
        daemon from the rows it committed, or None for a slice it did not see whole; the
        database computes those (and all of them without ``local``)."""
        self.pool, self.width, self.horizon, self.local = pool, int(width), float(horizon), local
        #: slices sealed from the daemon's digests, and from the database's (the bench, docs)
        self.sealed_local = self.sealed_db = 0

    async def _slice_digests(self, conn: asyncpg.Connection, table: str, lo: int, hi: int
                             ) -> tuple[dict[tuple[int, int], tuple[int, str]], set[int]]:
        """The digests of [lo, hi), and the slice starts whose digests came from the daemon."""
        if self.local is None or table != "readings":
            return await digests(conn, table, lo, hi, self.width), set()
        w_us = self.width * 1_000_000
        out: dict[tuple[int, int], tuple[int, str]] = {}
        mine_starts: set[int] = set()
        for start in range(lo, hi, w_us):
            mine = self.local(start)
            if mine is None:
                out.update(await digests(conn, table, start, start + w_us, self.width))
                self.sealed_db += 1
            else:
                out.update({(start, sid): v for sid, v in mine.items()})
                mine_starts.add(start)
                self.sealed_local += 1
        return out, mine_starts

    async def seal(self, now: float) -> int:
        """Seal every complete slice not sealed yet (at most :attr:`MAX_SLICES`); returns how
        many slices were sealed."""
        w_us = self.width * 1_000_000
        cutoff = math.floor((now - self.horizon) / self.width) * w_us
        async with self.pool.acquire() as conn, conn.transaction():
            until = await conn.fetchval("SELECT sealed_until FROM seal_state WHERE id = 1 FOR UPDATE")
            if until is None:
                first = await conn.fetchval(
                    "SELECT min(t) FROM (SELECT min(time) AS t FROM readings UNION ALL SELECT min(time) FROM robot_readings"
                    " UNION ALL SELECT min(received_at) FROM dead_letters) x")
                if first is None:
                    return 0
                lo = math.floor(audit.micros(first) / w_us) * w_us
            else:
                lo = audit.micros(until)
            hi = min(cutoff, lo + self.MAX_SLICES * w_us)
            if hi <= lo:
                return 0
            found = {t: await self._slice_digests(conn, t, lo, hi) for t in TABLES}
            dead = await dead_letter_rows(conn, lo, hi)
            for table, (dg, mine) in found.items():
                by_slice: dict[int, list[list]] = {}
                for (start, sid), (n, d) in sorted(dg.items()):
                    by_slice.setdefault(start, []).append([sid, n, d])
                for start, sensors in sorted(by_slice.items()):
                    await audit.append(conn, "seal", f"slice:{table}:{start}", {
                        "table": table, "start": start, "width": self.width, "delta": False, "sensors": sensors,
                        "by": "daemon" if start in mine else "database"}, plain=True)
            if dead:
                await audit.append(conn, "seal", f"slice:dead_letters:{lo}", {
                    "table": "dead_letters", "start": lo, "width": (hi - lo) // 1_000_000, "delta": False,
                    "rows": {str(k): v for k, v in sorted(dead.items())}})
            await audit.append(conn, "seal", "sealed", {"from": lo, "until": hi, "width": self.width,
                                                        "horizon": self.horizon})
            await conn.execute("UPDATE seal_state SET sealed_until = $1, updated_at = now() WHERE id = 1", from_micros(hi))
        return (hi - lo) // w_us

    async def reseal(self, spans: list[tuple[float, float]] | None = None, *, recheck: float = 0.0) -> int:
        """Chain a sealed delta for each sealed slice that ``spans`` (reading times written,
        Unix s) reach and whose rows changed since it was sealed — or, with ``recheck`` seconds,
        for every sealed slice of that last stretch before ``sealed_until``. Writes of live
        readings lie above the sealed point and cost nothing here. Returns the entries appended."""
        w_us = self.width * 1_000_000
        n = 0
        async with self.pool.acquire() as conn, conn.transaction():
            until = await conn.fetchval("SELECT sealed_until FROM seal_state WHERE id = 1 FOR UPDATE")
            if until is None:
                return 0
            until_us = audit.micros(until)
            starts: set[int] = set()
            for lo, hi in spans or ():
                if lo * 1e6 < until_us:
                    first = math.floor(lo * 1e6 / w_us) * w_us
                    starts |= set(range(first, min(until_us, math.floor(hi * 1e6 / w_us) * w_us + w_us), w_us))
            if recheck:
                lo = math.floor((until_us - recheck * 1e6) / w_us) * w_us
                starts |= set(range(lo, until_us, w_us))
            starts = sorted(s for s in starts if s < until_us)
            if not starts:
                return 0
            have = await chained(conn, starts[0], starts[-1] + w_us)
            for start in starts:
                for table in TABLES:
                    now_ = await digests(conn, table, start, start + w_us, self.width)
                    was = {sid: (c, d) for (t, s, sid), (c, d, _) in have.slices.items() if t == table and s == start}
                    changed = {sid: [sid, *v] for (_, sid), v in now_.items() if was.get(sid) != v}
                    changed |= {sid: [sid, 0, None] for sid, v in was.items() if v[0] and (start, sid) not in now_}
                    if changed:
                        await audit.append(conn, "seal", f"slice:{table}:{start}", {
                            "table": table, "start": start, "width": self.width, "delta": True,
                            "sensors": [changed[k] for k in sorted(changed)]})
                        n += 1
        return n


@dataclass
class SliceProblem:
    table: str
    start: int
    width: int
    sensor_id: int
    sensor: str
    chained: tuple[int, str | None] | None
    stored: tuple[int, str | None] | None
    seq: int | None

    @property
    def kind(self) -> str:
        c = self.chained[0] if self.chained else 0
        s = self.stored[0] if self.stored else 0
        if c == 0:
            return "inserted"
        return "deleted" if s < c else "inserted" if s > c else "altered"

    def __str__(self) -> str:
        def side(x):
            return "none" if not x or not x[0] else f"{x[0]} rows, digest {x[1][:16]}…"
        what = {"inserted": "rows inserted into a sealed slice", "deleted": "rows deleted",
                "altered": "rows changed"}[self.kind]
        return (f"{self.table} slice {iso(self.start)} (+{self.width} s), sensor {self.sensor} (id {self.sensor_id}):"
                f" {what}: chained {side(self.chained)}, stored {side(self.stored)}")


async def verify_readings(conn: asyncpg.Connection, since: datetime | None = None,
                          until: datetime | None = None) -> tuple[SealedState, list[SliceProblem]]:
    """Recompute the digests of the sealed slices in [since, until) and compare them with the
    chain: every slice and sensor that differs is named."""
    head = await chained(conn)
    if head.sealed_until is None:
        return head, []
    w_us = head.width * 1_000_000
    lo = head.sealed_from if since is None else max(head.sealed_from, audit.micros(since) // w_us * w_us)
    hi = head.sealed_until if until is None else min(head.sealed_until, -(-audit.micros(until) // w_us) * w_us)
    tags = {r["id"]: r["tag"] for r in await conn.fetch("SELECT id, tag FROM sensors")}
    problems: list[SliceProblem] = []
    step = 60 * w_us  # a window of slices at a time: bounded memory over long histories
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        for table in TABLES:
            now_ = await digests(conn, table, a, b, head.width)
            want = {(s, sid): v for (t, s, sid), v in head.slices.items() if t == table and a <= s < b}
            for key in sorted(set(now_) | set(want)):
                c = want.get(key)
                got = now_.get(key)
                cv = (c[0], c[1]) if c and c[0] else None
                if cv != got:
                    problems.append(SliceProblem(table, key[0], head.width, key[1], tags.get(key[1], "?"),
                                                 (c[0], c[1]) if c else None, got, c[2] if c else None))
    return head, problems


async def verify_dead_letters(conn: asyncpg.Connection, st: SealedState) -> list[audit.Problem]:
    """Dead letters of the sealed range against their chained fingerprints (row and column)."""
    if st.sealed_until is None:
        return []
    stored = await dead_letter_rows(conn, st.sealed_from, st.sealed_until)
    out: list[audit.Problem] = []
    for i in sorted(set(stored) | set(st.dead)):
        fp, seq = st.dead.get(i, (None, None))
        row = stored.get(i)
        if fp is None:
            out.append(audit.Problem(None, "inserted", f"dead_letters row {i}: not in the sealed record"))
        elif row is None:
            out.append(audit.Problem(seq, "deleted", f"dead_letters row {i} ({fp.get('reason')}) is gone"))
        else:
            for col in DEAD_COLS:
                if row[col] != fp.get(col):
                    out.append(audit.Problem(seq, "altered", f"dead_letters row {i} column {col}: chained"
                                                             f" {fp.get(col)!r}, stored {row[col]!r}"))
    return out


async def sealed_summary(dsn: str) -> dict[str, int]:
    """Seal entries chained, sealed deltas among them, slices whose digests the daemon computed,
    and the rows their first seals cover (the benchmark's sealing phase)."""
    conn = await asyncpg.connect(dsn)
    try:
        r = await conn.fetchrow(
            "SELECT count(*) AS entries, count(*) FILTER (WHERE body->>'delta' = 'true') AS deltas,"
            " count(*) FILTER (WHERE body->>'by' = 'daemon') AS by_daemon,"
            " coalesce(sum((SELECT sum((v->>1)::bigint) FROM jsonb_array_elements(body->'sensors') AS e(v)))"
            "  FILTER (WHERE body->>'delta' = 'false'), 0)::bigint AS rows FROM audit_log WHERE kind = 'seal'")
    finally:
        await conn.close()
    return {"seal_entries": r["entries"], "seal_deltas": r["deltas"], "sealed_rows": r["rows"],
            "seal_by_daemon": r["by_daemon"]}
