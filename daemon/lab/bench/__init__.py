"""``plantwatch bench``: plantwatch and this machine's own limits, measured in one run.

Starts its own throwaway Mosquitto and PostgreSQL/TimescaleDB (fsync on unless ``--fast-db``),
then measures, in order: the broker's raw QoS 1 rate and the database's raw COPY rate into the
same readings table (1 and 2 connections); plantwatch end to end at 1,000, 10,000 and 50,000
sensors (every reading counted in the database afterwards); latency at 50 % and 80 % of the measured
maximum (publish → stored, publish → alarm raised; a phase without samples says why); a naive one-insert-per-reading subscriber; the
daemon's peak RSS; dashboard queries over 7 days on a generated table. Prints a table (rich) and
writes JSON with ``--json FILE``. CPU seconds per reading of the daemon, the database and the
broker are reported too: on a shared, noisy machine they hold better than rates.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from plantwatch.daemon.lab.bench.env import Services, machine

#: fractions of the measured maximum rate at which latency is measured
LATENCY_LOADS = (0.5, 0.8)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch bench", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--quick", action="store_true", help="about 2 minutes: smaller volumes, shorter phases")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON")
    p.add_argument("--sensors", default="1000,10000,50000", help="sensor counts for the end-to-end runs")
    p.add_argument("--readings", type=int, default=None,
                   help="readings published per end-to-end run (default 1M quick, 6M full: past the z-score warm-up at 50k sensors)")
    p.add_argument("--per-message", type=int, default=100, help="readings per MQTT message")
    p.add_argument("--query-rows", type=int, default=None, help="rows in the query table (default 1M quick, 20M full)")
    p.add_argument("--latency-seconds", type=float, default=None, help="length of the latency phase")
    p.add_argument("--skip", default="", help="comma-separated phases to skip: limits,e2e,seal,latency,naive,queries")
    p.add_argument("--seal-sensors", type=int, default=10_000, help="sensors of the sealing-cost phase (rate with"
                                                                     " sealing off and on, alternated)")
    p.add_argument("--plain-postgres", action="store_true", help="PostgreSQL without TimescaleDB")
    p.add_argument("--fast-db", action="store_true", help="fsync off (not honest for storage numbers; reported)")
    p.add_argument("--profile", metavar="DIR", help="py-spy record the daemon during the end-to-end runs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from plantwatch.daemon.lab.bench import e2e, latency, limits, queries
    from plantwatch.daemon.lab.bench.report import render

    console = Console(width=None if sys.stdout.isatty() else 160)
    quick = args.quick
    skip = set(filter(None, args.skip.split(",")))
    sizes = [int(x) for x in args.sensors.split(",") if x]
    total = args.readings or (1_000_000 if quick else 6_000_000)
    qrows = args.query_rows or (1_000_000 if quick else 20_000_000)
    lat_s = args.latency_seconds or (15.0 if quick else 45.0)
    res: dict = {"machine": machine(), "mode": "quick" if quick else "full", "started": time.time(),
                 "settings": {"readings_per_run": total, "per_message": args.per_message, "query_rows": qrows,
                              "fsync": not args.fast_db, "qos": 1}}
    workdir = Path(tempfile.mkdtemp(prefix="plantwatch-bench-"))
    svc = Services(fast_db=args.fast_db, timescaledb=False if args.plain_postgres else None)
    console.print(f"[bold]plantwatch bench[/bold] ({res['mode']}): starting Mosquitto and PostgreSQL in {workdir}")
    await asyncio.to_thread(svc.start)
    res["machine"]["timescaledb"] = svc.pg.timescaledb

    def step(msg: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")

    try:
        if "limits" not in skip:
            step("limits: broker raw rate (QoS 1)")
            res["broker_raw"] = await limits.broker_raw(svc, n_msgs=10_000 if quick else 30_000,
                                                        per_message=args.per_message)
            res["copy_limit"] = []
            for c in (1, 2):
                step(f"limits: COPY into readings, {c} connection(s)")
                res["copy_limit"].append(await limits.copy_limit(svc, connections=c, seconds=5 if quick else 12))
        if "e2e" not in skip:
            res["e2e"] = []
            for n in sizes:
                step(f"end to end: {n} sensors, {total} readings")
                prof = None
                if args.profile:
                    Path(args.profile).mkdir(parents=True, exist_ok=True)
                    prof = Path(args.profile) / f"daemon-{n}.txt"
                r = await e2e.throughput(svc, workdir, n, total, per_message=args.per_message, profile=prof)
                res["e2e"].append(r)
                step(f"  {r['rate']:,.0f} readings/s, rows {r['rows']:,} of {r['published']:,}")
        if "seal" not in skip:
            from plantwatch.daemon.lab.bench.seal_cost import seal_cost
            step(f"sealing cost: {args.seal_sensors} sensors, {total} readings, sealing off and on alternated")
            res["seal_cost"] = s = await seal_cost(svc, workdir, args.seal_sensors, total, per_message=args.per_message,
                                                   step=step)
            step(f"  sealing: {s['rate_off']:,.0f} readings/s off, {s['rate_on']:,.0f} on: cost {s['cost_pct']:.1f} %"
                 f" (target ≤ {s['target_pct']:g} %)")
        if "latency" not in skip:
            n = max(sizes)
            # the maximum is the run's overall rate (rows over the time from first publish to last row): its
            # "steady" window of a short run is a daemon emptying a broker queue filled ahead of it, more
            # than it sustains against a paced publisher
            top = next((r["rate"] for r in res.get("e2e", []) if r["sensors"] == n), None)
            top = top if top and math.isfinite(top) else 50_000.0
            res["latency"] = []
            for load in LATENCY_LOADS:
                rate = load * top
                step(f"latency: {n} sensors at {rate:,.0f} readings/s ({load:.0%} of the measured maximum), {lat_s:.0f} s")
                r = await latency.latency(svc, workdir, n, rate, lat_s)
                r["load"] = load
                res["latency"].append(r)
                for kind, why in r["why_empty"].items():
                    step(f"  [yellow]no {kind} latency sample: {why}[/yellow]")
        if "naive" not in skip:
            step("naive baseline: one insert statement per reading")
            res["naive"] = await e2e.naive(svc, 10_000, 8.0 if quick else 20.0)
        if "queries" not in skip:
            step(f"queries: generating {qrows:,} rows over 7 days, rollups, dashboard queries")
            res["queries"] = await queries.dashboards(svc, rows=qrows, runs=10 if quick else 30)
    finally:
        await asyncio.to_thread(svc.stop)
    res["finished"] = time.time()
    render(res, console)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
