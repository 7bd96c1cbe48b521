"""``plantwatch incident list|show|report``: incidents, read with the read-only role; the report
is the self-contained HTML an inspector files (``daemon/alarms/report.py``)."""
from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timezone

from rich.console import Console
from rich.table import Table

from plantwatch.daemon.cli.dbaccess import add_db, dsn_of, err, one_line

out = Console(soft_wrap=True)


def _fmt(t: float | None) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if t else "—"


# --- incidents ----------------------------------------------------------------------------------
@one_line
def cmd_incident_list(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    rows = asyncio.run(inspection.list_incidents(dsn_of(args), args.limit))
    t = Table(title="incidents (newest first)")
    for c in ("id", "started", "ended", "title", "areas", "sensors", "alarms", "flood"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["id"]), _fmt(r["started_at"]), _fmt(r["ended_at"]) if r["ended_at"] else "[yellow]open[/yellow]",
                  r["title"], ", ".join(r["areas"]), ", ".join(r["sensors"]), str(r["n_alarms"]),
                  "yes" if r["flood"] else "")
    out.print(t)
    return 0


@one_line
def cmd_incident_show(args: argparse.Namespace) -> int:
    from plantwatch.connectors import inspection

    inc = asyncio.run(inspection.get_incident(dsn_of(args), args.id))
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


@one_line
def cmd_incident_report(args: argparse.Namespace) -> int:
    from plantwatch.daemon.alarms.report import write_incident_report
    try:
        p = asyncio.run(write_incident_report(dsn_of(args), args.id, args.out))
    except LookupError as e:
        err.print(f"[red]{e}[/red]")
        return 1
    err.print(f"wrote {p}")
    return 0



def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("incident", help="incidents: related alarms grouped (read-only role is enough)")
    isub = i.add_subparsers(dest="incident_cmd", required=True)
    il = isub.add_parser("list", help="incidents, newest first: when, title, areas, sensors, alarms, flood")
    add_db(il)
    il.add_argument("--limit", type=int, default=50)
    il.set_defaults(func=cmd_incident_list)
    ish = isub.add_parser("show", help="one incident: its cause, alarms in audit order, sensors and operator actions")
    add_db(ish)
    ish.add_argument("id", type=int)
    ish.set_defaults(func=cmd_incident_show)
    ir = isub.add_parser("report", help="self-contained HTML report for inspectors")
    add_db(ir)
    ir.add_argument("id", type=int)
    ir.add_argument("--out", required=True)
    ir.set_defaults(func=cmd_incident_report)
