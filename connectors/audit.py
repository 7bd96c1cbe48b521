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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

import asyncpg

from .audit_rows import verify_rows
from .audit_base import Problem, canonical, clean, micros  # noqa: F401 - re-exported

GENESIS = "0" * 64
EXPORT_FORMAT = "plantwatch-audit-export/1"


def entry_hash(prev_hash: str, seq: int, time_us: int, kind: str, ref: str, body: Any) -> str:
    payload = canonical({"seq": seq, "time": time_us, "kind": kind, "ref": ref, "body": body})
    return hashlib.sha256(prev_hash.encode() + payload).hexdigest()


async def append(conn: asyncpg.Connection, kind: str, ref: str, body: dict[str, Any],
                 time: datetime | None = None, *, plain: bool = False) -> tuple[int, str]:
    """Append one entry inside the caller's transaction; returns (seq, hash). ``plain``: the body
    holds only ints, finite floats, plain strings, lists and string-keyed dicts already (a seal
    of thousands of sensors: no second walk through it)."""
    head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
    seq = head["seq"] + 1
    t = time or datetime.now(timezone.utc)
    body = body if plain else clean(body)
    h = entry_hash(head["hash"], seq, micros(t), kind, ref, body)
    await conn.execute("INSERT INTO audit_log (seq, time, kind, ref, body, prev_hash, hash)"
                       " VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7)",
                       seq, t, kind, ref, json.dumps(body, allow_nan=False), head["hash"], h)
    await conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, h)
    return seq, h


# --- verification ------------------------------------------------------------------------------
@dataclass
class Verdict:
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)
    sealed: tuple[int | None, int | None] = (None, None)  # µs: readings sealed in [from, until)

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


# --- external anchoring: the chain against a head exported earlier ------------------------------
def earlier_head(text: str) -> tuple[int, str, dict[int, str]]:
    """An earlier exported head: ``SEQ:HASH`` or an earlier export's JSON lines (whose last
    entry is the head; its entries let the first rewritten one be named)."""
    text = text.strip()
    if ":" in text.splitlines()[0] and not text.startswith("{"):
        seq, h = text.split(":", 1)
        return int(seq), h.strip(), {}
    lines = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].get("format") != EXPORT_FORMAT:
        raise ValueError("not a plantwatch audit export nor SEQ:HASH")
    hashes = {int(e["seq"]): e["hash"] for e in lines[1:]}
    if not hashes:
        raise ValueError("the earlier export holds no entries")
    last = max(hashes)
    return last, hashes[last], hashes


def against_earlier(current: dict[int, str], head: tuple[int, str, dict[int, str]]) -> list[Problem]:
    """``current`` (seq -> hash) checked against an earlier exported head: the chain must still
    hold that head at its seq. A chain truncated and rebuilt from a point (every hash recomputed,
    so it verifies on its own) differs there; with the earlier entries, the first rewritten one
    is named."""
    seq, h, earlier = head
    if not current or max(current) < seq:
        last = max(current) if current else 0
        return [Problem(last + 1, "deleted", f"the chain ends at seq {last}, before the earlier exported head"
                                             f" (seq {seq}, {h[:16]}…): truncated")]
    if seq not in current:
        return [Problem(seq, "deleted", f"seq {seq} (the earlier exported head) is not in this range")]
    if current[seq] == h:
        return []
    first = next((s for s in sorted(earlier) if s in current and current[s] != earlier[s]), seq)
    return [Problem(first, "rewritten", f"the chain was rewritten from seq {first}: the earlier export has"
                                        f" {earlier.get(first, h)[:16]}… there, the chain now {current[first][:16]}…"
                                        f" (earlier head seq {seq} {h[:16]}…)")]


async def hashes(conn: asyncpg.Connection, lo: int, hi: int) -> dict[int, str]:
    return {r["seq"]: r["hash"] for r in await conn.fetch(
        "SELECT seq, hash FROM audit_log WHERE seq BETWEEN $1 AND $2", lo, hi)}


# --- cross-check: do the tables still say what the chain recorded? ------------------------------
async def verify_records(conn: asyncpg.Connection) -> list[Problem]:
    """Every row a report shows against the chain (``connectors/audit_rows.py``)."""
    return await verify_rows(conn)
