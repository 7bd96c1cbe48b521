"""The fault runs' tables: one row per fault."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

COLUMNS = ("fault", "sent", "stored", "lost", "duplicated", "alarms injected / raised / delay", "recovery time")
CLUSTER_COLUMNS = ("fault", "sent", "stored", "lost", "duplicated", "crossings → alarms", "alarms lost / dup / stale",
                   "longest alarm gap", "takeover", "instances exited")


def _s(x: float | None, fmt: str = "{:.1f} s") -> str:
    return "—" if x is None else fmt.format(x)


def _bad(n: int) -> str:
    return f"[red]{n:,}[/red]" if n else "0"


def render(res: dict, console: Console) -> None:
    cluster = res.get("mode") == "cluster"
    m = res["machine"]
    load = res["load"]
    title = (f"plantwatch {'failover' if cluster else 'faults'} — {m['nproc']} × {m['cpu']}, "
             f"{load['collectors']} collectors × {load['per_collector']} sensors, "
             f"target {load['rate_target']:,.0f} readings/s, sustained {load['rate_sent']:,.0f}/s")
    t = Table(title=title)
    for c in (CLUSTER_COLUMNS if cluster else COLUMNS):
        t.add_column(c, overflow="fold")
    for row in res["rows"]:
        r = row["readings"]
        a = row["alarms"]
        if cluster:
            t.add_row(row["label"], f"{r['sent']:,}", f"{r['stored']:,}", _bad(r["lost"]), _bad(r["duplicated"]),
                      f"{a['injected']} → {a['raised']}",
                      f"{_bad(a['lost'])} / {_bad(a['duplicated'])} / {_bad(a['stale'])}",
                      _s(a["longest_gap"]), _s(row.get("takeover")), _bad(row.get("exited", 0)))
        else:
            delay = f"max {a['delay_max']:.1f} s" if a["delay_max"] is not None else "—"
            dup = f", [red]{a['duplicated']} dup[/red]" if a["duplicated"] else ""
            raised = f"{a['raised']}" if a["raised"] == a["injected"] else f"[red]{a['raised']}[/red]"
            t.add_row(row["label"], f"{r['sent']:,}", f"{r['stored']:,}", _bad(r["lost"]), _bad(r["duplicated"]),
                      f"{a['injected']} / {raised} / {delay}{dup}", _s(row.get("recovery_max")))
    console.print(t)
    for row in res["rows"]:
        for note in row.get("notes", []):
            console.print(f"  {row['label']}: {note}", highlight=False)
    lim = res.get("limits") or {}
    if lim:
        console.print(f"machine limits in this run: broker raw QoS 1 {lim['broker_readings_per_s']:,.0f} readings/s; "
                      f"database COPY (2 connections) {lim['copy2_rows_per_s']:,.0f} rows/s", highlight=False)
    tot = res["total"]
    console.print(f"total: {tot['sent']:,} readings sent, {tot['stored']:,} stored, {tot['lost']:,} lost, "
                  f"{tot['unacked_missing']:,} never acknowledged by the broker and missing, {tot['duplicated']:,} "
                  f"duplicated, {tot['unexpected']:,} unexpected rows", highlight=False)
    sc = res.get("self_check")
    if sc:
        verdict = "[green]detected[/green]" if sc["ok"] else "[red]NOT detected[/red]"
        console.print(f"checker self-test: {sc['deleted']} stored readings deleted afterwards → "
                      f"{sc['missing_after'] - sc['missing_before']} more missing: {verdict}")
