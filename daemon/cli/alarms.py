"""CLI for alarm management: ``plantwatch alarms|token|api ...`` (audit and incidents:
``daemon/cli/audit.py``, ``daemon/cli/incident.py``).

The database is named by ``--dsn``, else by ``--config`` (its ``database.dsn``), else by the
``PLANTWATCH_DSN`` environment variable.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
from datetime import datetime, timedelta, timezone

from rich.console import Console
from rich.table import Table

from plantwatch.daemon.cli.dbaccess import add_db, dsn_of, one_line

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


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


# --- alarm-system health ------------------------------------------------------------------------
@one_line
def cmd_alarms_report(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    t_to = parse_time(args.to, datetime.now(timezone.utc))
    t_from = parse_time(args.from_, t_to - timedelta(days=1))

    r = asyncio.run(inspection.alarm_health(dsn_of(args), t_from, t_to))
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
    al = sub.add_parser("alarms", help="alarm-system health")
    alsub = al.add_subparsers(dest="alarms_cmd", required=True)
    ar = alsub.add_parser("report", help="EEMUA 191 / ISA-18.2 figures over a time range")
    add_db(ar)
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

