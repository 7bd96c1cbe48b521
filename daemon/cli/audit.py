"""``plantwatch audit verify|export``: the tamper-evident record, checked and exported
(docs/audit.md). Every command here works with the read-only role and writes nothing."""
from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from plantwatch.daemon.cli.dbaccess import add_db, dsn_of, err, one_line

out = Console(soft_wrap=True)


def _time(s: str | None) -> datetime | None:
    from plantwatch.daemon.cli.alarms import parse_time
    return parse_time(s)


def _head(value: str | None):
    from plantwatch.connectors import audit
    if value is None:
        return None
    p = Path(value)
    text = p.read_text(encoding="utf-8") if p.exists() else value
    try:
        return audit.earlier_head(text)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        raise SystemExit(f"--head {value}: {e}") from None


def _iso(us: int | None) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if us else "—"


@one_line
def cmd_verify(args: argparse.Namespace) -> int:
    from plantwatch.connectors import audit, inspection, report_record

    export = args.export or args.file
    head = _head(args.head)
    if export:
        with open(export, encoding="utf-8") as f:
            lines = f.readlines()
        v = audit.verify_lines(lines, anchor=args.anchor, last_hash=args.last_hash)
        entries = [json.loads(ln) for ln in lines[1:] if ln.strip()]
        if head is not None:
            v.problems += audit.against_earlier({int(e["seq"]): e["hash"] for e in entries}, head)
        what = export
    else:
        v = asyncio.run(inspection.verify_audit(dsn_of(args), _time(args.since), _time(args.until), head))
        entries = None
        what = "database"
    if args.report:
        record = report_record.extract(Path(args.report).read_text(encoding="utf-8"))
        if entries is None:
            raise SystemExit("--report needs --export FILE (an export that covers the report's chain head)")
        v.problems += report_record.check_report(record, entries)
        what += f", report {args.report}"
    sealed = "" if v.sealed[1] is None else f"; readings sealed {_iso(v.sealed[0])} – {_iso(v.sealed[1])}"
    if v.ok:
        out.print(f"[green]audit chain OK[/green] ({what}): {v.entries} entries, seq {v.first_seq}..{v.last_seq}, "
                  f"last hash {v.last_hash}{sealed}", highlight=False)
        return 0
    out.print(f"[red]audit chain BROKEN[/red] ({what}): {len(v.problems)} problem(s){sealed}; first at {v.first}",
              highlight=False)
    for p in v.problems[1:args.max_problems]:
        out.print(f"  then {p}", highlight=False)
    if len(v.problems) > args.max_problems:
        out.print(f"  … and {len(v.problems) - args.max_problems} more (--max-problems)", highlight=False)
    return 1


@one_line
def cmd_export(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    lines = asyncio.run(inspection.export_audit(dsn_of(args), _time(args.from_), _time(args.to)))
    h = json.loads(lines[0])
    if args.head_only:
        print(f"{h['head']['seq']}:{h['head']['hash']}")
        return 0
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    err.print(f"wrote {len(lines) - 1} entries (seq {h['first_seq']}..{h['last_seq']}) to {args.out}; "
              f"anchor {h['anchor']}, head {h['last_seq']}:{h['last_hash']}", highlight=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="the tamper-evident audit log: verify, export (read-only role is enough)")
    asub = a.add_subparsers(dest="audit_cmd", required=True)
    v = asub.add_parser("verify", help="check the chain, the rows it vouches for and the sealed readings")
    add_db(v)
    v.add_argument("--since", help="sealed readings from this time (ISO, 'now' or like -24h; default: all)")
    v.add_argument("--until", help="sealed readings before this time (default: all)")
    v.add_argument("--export", help="verify an export offline instead of the database")
    v.add_argument("--file", help=argparse.SUPPRESS)  # the former name of --export
    v.add_argument("--head", help="an earlier exported head (its export file, or SEQ:HASH): the chain must still hold"
                                  " it (finds a chain rewritten from a point)")
    v.add_argument("--report", help="a saved incident report: its chain head, entries, digests and facts against"
                                    " the export (with --export)")
    v.add_argument("--anchor", help="hash the first exported entry must hang from (from an earlier export)")
    v.add_argument("--last-hash", help="hash the export must end at (e.g. a published chain head)")
    v.add_argument("--max-problems", type=int, default=20, help="problems listed at most (default 20)")
    v.set_defaults(func=cmd_verify)
    e = asub.add_parser("export", help="export entries as JSON lines with the anchor hash (or only the head)")
    add_db(e)
    e.add_argument("--from", dest="from_", help="ISO time, 'now' or an age like 24h (default: the beginning)")
    e.add_argument("--to", help="ISO time, 'now' or an age like 1h (default: now)")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="file to write")
    g.add_argument("--head-only", action="store_true", help="print only the chain head as SEQ:HASH (to publish or sign)")
    e.set_defaults(func=cmd_export)
