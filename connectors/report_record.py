"""What a saved incident report records about the chain, and its offline check.

A report embeds (``<pre id="record" hidden>``, JSON) the chain head at the time
it was written, the audit entries about the incident, the slice digests that cover the readings
it shows, and the facts it states (title, time span, cause, members and their roles).
:func:`check_report` checks that record against an export (``plantwatch audit export``): the
export's chain must hold the head and every entry with the same hash, the digests must be the
ones chained (as of the head), and the facts must be what the chain recorded."""
from __future__ import annotations

import html
import json
import re
from typing import Any

from .audit_base import Problem
from .audit_rows import fold_incidents

_RECORD = re.compile(r'<pre id="record" hidden>(.*?)</pre>', re.S)


def embed(record: dict[str, Any]) -> str:
    """The record as an inert element of the page (no script: the report runs nothing)."""
    return f'<pre id="record" hidden>{html.escape(json.dumps(record, sort_keys=True))}</pre>'


def extract(page: str) -> dict[str, Any]:
    m = _RECORD.search(page)
    if m is None:
        raise ValueError("no chain record in this file (not a plantwatch incident report?)")
    return json.loads(html.unescape(m.group(1)))


def check_report(record: dict[str, Any], entries: list[dict[str, Any]]) -> list[Problem]:
    """``record`` (from :func:`extract`) against export ``entries`` (already verified as a chain)."""
    by_seq = {int(e["seq"]): e for e in entries}
    out: list[Problem] = []
    head = record["head"]
    e = by_seq.get(head["seq"])
    if e is None:
        out.append(Problem(head["seq"], "deleted", f"the report's chain head (seq {head['seq']}) is not in the export"))
    elif e["hash"] != head["hash"]:
        out.append(Problem(head["seq"], "rewritten", f"the report's chain head {head['hash'][:16]}… differs from the"
                                                     f" export's {e['hash'][:16]}… at seq {head['seq']}"))
    for r in record["entries"]:
        e = by_seq.get(r["seq"])
        if e is None or e["hash"] != r["hash"] or e["ref"] != r["ref"]:
            out.append(Problem(r["seq"], "altered", f"report entry seq {r['seq']} ({r['ref']}) is not in the export"
                                                    " with the same hash"))
    upto = [by_seq[s] for s in sorted(by_seq) if s <= head["seq"]]
    sealed: dict[tuple[str, int, int], tuple[int, str | None]] = {}
    for x in upto:
        b = x["body"]
        if x["kind"] == "seal" and "sensors" in b:
            for sid, n, d in b["sensors"]:
                sealed[(b["table"], b["start"], sid)] = (n, d)
    for s in record["slices"]:
        got = sealed.get((s["table"], s["start"], s["sensor_id"]))
        if got != (s["n"], s["digest"]):
            out.append(Problem(None, "altered", f"the report's digest of {s['table']} slice {s['start']} sensor"
                                                f" {s['sensor']}: {s['n']} rows {str(s['digest'])[:16]}…, the export"
                                                f" chains {got[0] if got else 0} rows {str(got[1] if got else None)[:16]}…"))
    incs, members = fold_incidents([(x["seq"], x["body"]) for x in upto if x["kind"] == "incident"])
    f = record["facts"]
    inc = incs.get(f["id"])
    if inc is None:
        out.append(Problem(None, "inserted", f"incident {f['id']} of the report is not in the export's chain"))
        return out
    for col in ("title", "cause_alarm_id"):
        if inc[col] != f[col]:
            out.append(Problem(inc["seq"], "altered", f"report: incident {f['id']} {col}: the chain says {inc[col]!r},"
                                                      f" the report {f[col]!r}"))
    chained = sorted([a, m["role"]] for (i, a, _), m in members.items() if i == f["id"])
    if chained != sorted(f["members"]):
        out.append(Problem(inc["seq"], "altered", f"report: incident {f['id']} members: the chain says {chained},"
                                                  f" the report {sorted(f['members'])}"))
    return out
