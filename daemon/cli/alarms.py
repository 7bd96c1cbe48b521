"""CLI for alarm management: ``plantwatch audit|incident|alarms|token|api ...``.

The database is named by ``--dsn``, else by ``--config`` (its ``database.dsn``), else by the
``PLANTWATCH_DSN`` environment variable.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _dsn(args: argparse.Namespace) -> str:
    if getattr(args, "dsn", None):
        return args.dsn
    if getattr(args, "config", None):
        from plantwatch.daemon.config.model import load_config
        cfg = load_config(args.config)
        if cfg.database is None:
            raise SystemExit("the config names no database (embedded); pass --dsn")
        return cfg.database.url
    if os.environ.get("PLANTWATCH_DSN"):
        return os.environ["PLANTWATCH_DSN"]
    raise SystemExit("name the database: --dsn, --config or PLANTWATCH_DSN")


_REL = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")  # "-24h" or "24h": that long ago


def parse_time(s: str | None, default: datetime | None = None) -> datetime | None:
    """ISO 8601 (UTC if no zone), 'now', or relative '-30m', '-24h', '-7d'."""
    if s is None:
        return default
    if s == "now":
        return datetime.now(timezone.utc)
    m = _REL.match(s)
    if m:
        mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return datetime.now(timezone.utc) - timedelta(seconds=float(m.group(1)) * mult)
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {s!r} (ISO 8601, 'now' or like -24h)") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="PostgreSQL DSN (default: --config's database.dsn, else the environment"
                   " variable PLANTWATCH_DSN; the password: PGPASSWORD or ~/.pgpass, never the command line)")
    p.add_argument("--config", help="site config naming the database")


def _fmt(t: float | None) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else "—"


# --- audit --------------------------------------------------------------------------------------
def cmd_audit_verify(args: argparse.Namespace) -> int:
    from plantwatch.connectors import audit, inspection

    if args.file:
        with open(args.file, encoding="utf-8") as f:
            v = audit.verify_lines(f, anchor=args.anchor, last_hash=args.last_hash)
        what = args.file
    else:
        v = asyncio.run(inspection.verify_audit(_dsn(args)))  # the chain, and the tables vs. what it recorded
        what = "database"
    if v.ok:
        out.print(f"[green]audit chain OK[/green] ({what}): {v.entries} entries, seq {v.first_seq}..{v.last_seq}, "
                  f"last hash {v.last_hash}", highlight=False)
        return 0
    out.print(f"[red]audit chain BROKEN[/red] ({what}): first problem at {v.first}", highlight=False)
    for p in v.problems[1:20]:
        out.print(f"  then {p}", highlight=False)
    return 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    lines = asyncio.run(inspection.export_audit(_dsn(args), parse_time(args.from_), parse_time(args.to)))
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    h = json.loads(lines[0])
    err.print(f"wrote {len(lines) - 1} entries (seq {h['first_seq']}..{h['last_seq']}) to {args.out}; "
              f"anchor {h['anchor']}, last hash {h['last_hash']}", highlight=False)
    return 0


# --- incidents ----------------------------------------------------------------------------------
def cmd_incident_list(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    rows = asyncio.run(inspection.list_incidents(_dsn(args), args.limit))
    t = Table(title="incidents (newest first)")
    for c in ("id", "started", "ended", "title", "areas", "sensors", "alarms", "flood"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["id"]), _fmt(r["started_at"]), _fmt(r["ended_at"]) if r["ended_at"] else "[yellow]open[/yellow]",
                  r["title"], ", ".join(r["areas"]), ", ".join(r["sensors"]), str(r["n_alarms"]),
                  "yes" if r["flood"] else "")
    out.print(t)
    return 0


def cmd_incident_show(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    inc = asyncio.run(inspection.get_incident(_dsn(args), args.id))
    if inc is None:
        err.print(f"[red]no incident {args.id}[/red]")
        return 1
    out.print(f"[bold]Incident {inc['id']}[/bold]: {inc['title']}", highlight=False)
    out.print(f"  {_fmt(inc['started_at'])} – {_fmt(inc['ended_at']) if inc['ended_at'] else 'ongoing'}; areas "
              f"{', '.join(inc['areas'])}; sensors {', '.join(inc['sensors'])}; config {inc['config_hash']}"
              f"{'; during a flood' if inc['flood'] else ''}", highlight=False)
    t = Table(title="alarms")
    for c in ("role", "raised", "sensor", "detector", "condition", "severity", "state now"):
        t.add_column(c)
    for a in inc["alarms"]:
        t.add_row(a["role"], _fmt(a["raised_at"]), a["sensor"], a["detector_id"], a["condition"], a["severity"],
                  a["state"])
    out.print(t)
    t = Table(title="timeline (in the order of the alarm record)")
    for c in ("#", "time", "processed", "what", "alarm", "detail", "by"):
        t.add_column(c)
    sensor_of = {a["alarm_id"]: a["sensor"] for a in inc["alarms"]}
    for c in inc["timeline"]:  # sorted by audit sequence: reading and processing times both shown
        if c["kind"] == "change":
            row = ("change", f"{c['sensor']}/{c['detector_id']}", f"{c['from_state']} → {c['to_state']}",
                   c["cause"].get("actor") or c["cause"].get("by", ""))
        else:
            row = (c["action"], sensor_of.get(c["alarm_id"], ""), c["reason"], f"{c['actor']} ({c['role']})")
        t.add_row(str(c.get("seq") or ""), _fmt(c["time"]), _fmt(c["recorded_at"]) if c.get("recorded_at") else "",
                  *[str(x) for x in row])
    out.print(t)
    return 0


def cmd_incident_report(args: argparse.Namespace) -> int:
    from plantwatch.daemon.alarms.report import write_incident_report
    try:
        p = asyncio.run(write_incident_report(_dsn(args), args.id, args.out))
    except LookupError as e:
        err.print(f"[red]{e}[/red]")
        return 1
    err.print(f"wrote {p}")
    return 0


# --- alarm-system health ------------------------------------------------------------------------
def cmd_alarms_report(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    t_to = parse_time(args.to, datetime.now(timezone.utc))
    t_from = parse_time(args.from_, t_to - timedelta(days=1))

    r = asyncio.run(inspection.alarm_health(_dsn(args), t_from, t_to))
    if args.json:
        print(json.dumps(r, default=str, indent=2))
        return 0
    out.print(f"[bold]Alarm-system health[/bold] {r['from']} – {r['to']} ({r['periods_10min']} ten-minute periods): "
              f"{r['activations']} alarms annunciated", highlight=False)
    t = Table(title="alarm rate per operator position (EEMUA 191: ~1 per 10 min acceptable; flood > 10 per 10 min)")
    for c in ("position", "alarms", "per 10 min", "per day", "max in 10 min", "% periods in flood"):
        t.add_column(c)
    for p in r["positions"]:
        t.add_row(p["position"], str(p["alarms"]), f"{p['per_10min']:.2f}", f"{p['per_day']:.1f}", str(p["max_10min"]),
                  f"{p['flood_pct']:.1f}%")
    out.print(t)
    t = Table(title=f"top 10 bad actors ({r['bad_actor_share_pct']:.0f}% of all alarms)")
    for c in ("alarm", "detector", "sensor", "position", "activations"):
        t.add_column(c)
    for b in r["bad_actors"]:
        t.add_row(str(b["alarm_id"]), b["detector_id"], b["sensor"], b["position"], str(b["activations"]))
    out.print(t)
    t = Table(title="chattering alarms (≥ 3 activations within a minute)")
    for c in ("alarm", "detector", "sensor", "chatter activations"):
        t.add_column(c)
    for b in r["chattering"]:
        t.add_row(str(b["alarm_id"]), b["detector_id"], b["sensor"], str(b["chatter_activations"]))
    out.print(t)
    t = Table(title="stale alarms (active ≥ 24 h)")
    for c in ("alarm", "detector", "sensor", "state", "active for"):
        t.add_column(c)
    for b in r["stale"]:
        t.add_row(str(b["alarm_id"]), b["detector_id"], b["sensor"], b["state"], str(b["active_for"]).split(".")[0])
    out.print(t)
    pd = r["priority_distribution"]
    tot = sum(pd.values()) or 1
    out.print("priority distribution: " + ", ".join(f"P{p} {n} ({100 * n / tot:.0f}%)" for p, n in pd.items()),
              highlight=False)
    out.print(f"now: {r['shelved_now']} shelved, {r['out_of_service_now']} out of service, {r['suppressed_now']} "
              f"suppressed; operator actions in range: "
              + (", ".join(f"{k} {v}" for k, v in sorted(r["actions"].items())) or "none"), highlight=False)
    return 0


# --- tokens and the API description -------------------------------------------------------------
def cmd_token_new(args: argparse.Namespace) -> int:
    from plantwatch.daemon.alarms.api import hash_token
    token = secrets.token_urlsafe(32)
    h = hash_token(token)
    err.print("Give the token to its holder; keep only the hash. Config (api.tokens):", highlight=False)
    print(f"token: {token}")
    print(f"config: - {{name: {args.name}, role: {args.role}, sha256: {h}}}")
    print(f"token_file line: {args.name} {args.role} {h}")
    return 0


def cmd_token_password(args: argparse.Namespace) -> int:
    """A console user's password hash for ``api.users`` (the password is read, never printed)."""
    import getpass

    from plantwatch.daemon.config.console_users import PASSWORD_MIN, hash_password
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < PASSWORD_MIN:
        err.print(f"error: a password needs at least {PASSWORD_MIN} characters", highlight=False)
        return 2
    print(f"config (api.users): - {{name: {args.name}, role: {args.role}, password_scrypt: '{hash_password(password)}'}}")
    return 0


def cmd_api_openapi(args: argparse.Namespace) -> int:
    from plantwatch.daemon.alarms.openapi import spec
    print(json.dumps(spec(), indent=2, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = a.add_subparsers(dest="audit_cmd", required=True)
    v = asub.add_parser("verify", help="recompute the hash chain (database, or an export with --file)")
    _add_db(v)
    v.add_argument("--file", help="verify an export offline instead of the database")
    v.add_argument("--anchor", help="hash the first exported entry must hang from (from an earlier export)")
    v.add_argument("--last-hash", help="hash the export must end at (e.g. a published chain head)")
    v.set_defaults(func=cmd_audit_verify)
    e = asub.add_parser("export", help="export entries as JSON lines with the anchor hash")
    _add_db(e)
    e.add_argument("--from", dest="from_", help="ISO time, 'now' or an age like 24h (default: the beginning)")
    e.add_argument("--to", help="ISO time, 'now' or an age like 1h (default: now)")
    e.add_argument("--out", required=True)
    e.set_defaults(func=cmd_audit_export)

    i = sub.add_parser("incident", help="incidents: related alarms grouped")
    isub = i.add_subparsers(dest="incident_cmd", required=True)
    il = isub.add_parser("list", help="incidents of a time range, newest first")
    _add_db(il)
    il.add_argument("--limit", type=int, default=50)
    il.set_defaults(func=cmd_incident_list)
    ish = isub.add_parser("show", help="one incident: its cause, alarms, sensors and operator actions")
    _add_db(ish)
    ish.add_argument("id", type=int)
    ish.set_defaults(func=cmd_incident_show)
    ir = isub.add_parser("report", help="self-contained HTML report for inspectors")
    _add_db(ir)
    ir.add_argument("id", type=int)
    ir.add_argument("--out", required=True)
    ir.set_defaults(func=cmd_incident_report)

    al = sub.add_parser("alarms", help="alarm-system health")
    alsub = al.add_subparsers(dest="alarms_cmd", required=True)
    ar = alsub.add_parser("report", help="EEMUA 191 / ISA-18.2 figures over a time range")
    _add_db(ar)
    ar.add_argument("--from", dest="from_", help="ISO time or an age like 7d (default: 24 h before --to)")
    ar.add_argument("--to", help="ISO time (default: now)")
    ar.add_argument("--json", action="store_true")
    ar.set_defaults(func=cmd_alarms_report)

    t = sub.add_parser("token", help="API tokens")
    tsub = t.add_subparsers(dest="token_cmd", required=True)
    tn = tsub.add_parser("new", help="make a token and print its hash for the config")
    tn.add_argument("--name", required=True)
    tn.add_argument("--role", required=True, choices=["inspector", "operator", "engineer"])
    tn.set_defaults(func=cmd_token_new)
    tp = tsub.add_parser("password", help="hash a console user's password (read from the terminal or stdin)")
    tp.add_argument("--name", required=True)
    tp.add_argument("--role", required=True, choices=["inspector", "operator", "engineer"])
    tp.set_defaults(func=cmd_token_password)

    ap = sub.add_parser("api", help="the operator API")
    apsub = ap.add_subparsers(dest="api_cmd", required=True)
    ao = apsub.add_parser("openapi", help="print the OpenAPI description (docs/openapi.json)")
    ao.set_defaults(func=cmd_api_openapi)

