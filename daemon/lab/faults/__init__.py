"""``plantwatch faults``: the daemon under a steady load while its process, broker and database fail.

Starts its own Mosquitto and PostgreSQL/TimescaleDB (fsync on) on free ports, a TCP proxy in front
of each (``connectors/tcp_proxy.py``: cuts and stalls), and the daemon as a real ``plantwatch run``
subprocess talking to both through the proxies. Simulated collectors (their own process, one MQTT
client each) publish a steady load and keep a ledger of every reading. Then each fault in turn,
with a limit crossing injected while it lasts: daemon kill -9 (×5), broker restart (×3), broker
kill -9, database stopped (60 s), database frozen (SIGSTOP, 30 s), a database connection cut in the
middle of a COPY, the broker↔daemon connection stalled (30 s), SIGTERM and restart. After each, the
run waits until the store has caught up (the recovery time) and holds a few steady seconds.

At the end a row-by-row checker compares the ledger with the database (``checker.py``) and the
crossings with the alarm changes on MQTT and in the database, and the checker proves itself: a few
stored readings are deleted and it must count them missing. One table: per fault, readings sent,
stored, lost, duplicated; crossings injected, raised and the longest delay; recovery time.

``--cluster`` (or ``plantwatch failover``) runs the failover faults of three instances instead
(``cluster.py``). Reference: docs/faults.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from plantwatch.daemon.lab.bench.env import Services, machine

from plantwatch.daemon.lab.faults.rig import Rig, check_run, select, settings
from plantwatch.daemon.lab.faults.single import Single, catalogue
from plantwatch.daemon.lab.faults.watch import drain


def build_parser(prog: str = "plantwatch faults") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--quick", action="store_true",
                   help="short outages (5 s), one repetition each, 5,000 readings/s: a few minutes")
    p.add_argument("--only", default="", help="comma-separated faults to run (default: all; see docs/faults.md)")
    p.add_argument("--outage", type=float, default=None, help="cap every outage at this many seconds")
    p.add_argument("--kills", type=int, default=None, help="daemon kill -9 repetitions (default 5, quick 1)")
    p.add_argument("--rate", type=float, default=None, help="readings per second (default 20,000; quick 5,000)")
    p.add_argument("--collectors", type=int, default=None, help="simulated collectors (default 20; quick 5)")
    p.add_argument("--per-collector", type=int, default=100, help="sensors per collector (one message per tick each)")
    p.add_argument("--settle", type=float, default=None, help="steady seconds after each recovery (default 5; quick 2)")
    p.add_argument("--recovered-lag", type=float, default=2.0,
                   help="recovered: the newest stored reading of every collector is at most this old (s)")
    p.add_argument("--no-limits", action="store_true", help="skip measuring the broker's and the database's raw rates")
    p.add_argument("--cluster", action="store_true", help="the failover faults of three instances (plantwatch failover)")
    p.add_argument("--cross-every", type=float, default=1.0,
                   help="failover: seconds between injected crossings (on the collectors in turn)")
    p.add_argument("--fast-db", action="store_true", help="fsync off (not honest for a storage figure; reported)")
    p.add_argument("--json", metavar="FILE", help="write everything (rows, events, crossings) as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from plantwatch.daemon.lab.faults.report import render

    console = Console(width=None if sys.stdout.isatty() else 170)
    from plantwatch.daemon.lab.faults.cluster import FAULTS

    try:
        select(args.only, FAULTS if args.cluster else [f.name for f in catalogue(quick=True, outage=None, kills=None)])
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="plantwatch-faults-"))
    svc = Services(fast_db=args.fast_db)
    console.print(f"[bold]plantwatch {'failover' if args.cluster else 'faults'}[/bold]: Mosquitto and PostgreSQL "
                  f"in {workdir} (logs there)")

    def step(msg: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}", highlight=False)

    try:
        await asyncio.to_thread(svc.start)
        res: dict = {"machine": machine() | {"timescaledb": svc.pg.timescaledb, "fsync": not args.fast_db,
                                             "loadavg_start": os.getloadavg()}, "started": time.time()}
        if not args.no_limits:
            res["limits"] = await measure_limits(svc, quick=args.quick, step=step)
        if args.cluster:
            from plantwatch.daemon.lab.faults.cluster import run_cluster

            res |= await run_cluster(args, svc, workdir, step)
        else:
            res |= await run_single(args, svc, workdir, step)
        res["machine"]["loadavg_end"] = os.getloadavg()
    finally:
        await asyncio.to_thread(svc.stop)
    res["finished"] = time.time()
    render(res, console)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
        console.print(f"results written to {args.json}")
    return 0


async def measure_limits(svc: Services, *, quick: bool, step) -> dict:
    from plantwatch.daemon.lab.bench import limits

    step("machine limits: broker raw QoS 1 rate, database COPY rate (2 connections)")
    b = await limits.broker_raw(svc, n_msgs=5_000 if quick else 20_000)
    c = await limits.copy_limit(svc, connections=2, seconds=3 if quick else 8)
    return {"broker_readings_per_s": b["readings_per_s"], "broker_client": b["client"], "copy2_rows_per_s": c["rows_per_s"]}


async def run_single(args: argparse.Namespace, svc: Services, workdir: Path, step) -> dict:
    faults = catalogue(quick=args.quick, outage=args.outage, kills=args.kills)
    chosen = select(args.only, [f.name for f in faults])
    faults = [f for f in faults if f.name in chosen]
    st = settings(args)
    rig = Rig(svc, workdir, st)
    d = None
    try:
        await rig.open()
        d = rig.daemon("daemon", via_proxy=True, client_id=f"pw-{uuid.uuid4().hex[:8]}")
        d.start()
        await d.wait_connected()
        await rig.start_load()
        s = Single(rig, d, grace=30.0 if args.quick else 60.0)
        labels = {0: "no fault (steady load)"}
        events = []
        step(f"steady load: {st.collectors} collectors × {st.per_collector} sensors at {st.rate:,.0f} readings/s")
        await asyncio.sleep(st.baseline / 2)
        rig.inject()  # a control crossing
        await asyncio.sleep(st.baseline / 2)
        for i, f in enumerate(faults, start=1):
            labels[i] = f.label
            rig.pub.set_phase(i)
            for rep in range(f.reps):
                step(f"{f.label}" + (f" ({rep + 1}/{f.reps})" if f.reps > 1 else ""))
                ev = await f.fn(s, rep, f.seconds)
                ev.phase = i
                ev.t_recovered = await rig.fresh.until_fresh(st.recovered_lag, st.recover_timeout, after=ev.t_restored)
                if d.proc.poll() is not None:
                    ev.notes.append(f"the daemon exited (code {d.proc.returncode}) after the fault: restarted")
                    d.start()
                    ev.t_recovered = await rig.fresh.until_fresh(st.recovered_lag, st.recover_timeout, after=time.time())
                step(f"  recovered in {_fmt(ev.recovery)}" + "".join(f"; {n}" for n in ev.notes))
                events.append(ev)
                await asyncio.sleep(st.settle)
        step("stopping the collectors; waiting for the store to drain")
        summary, ledger = await asyncio.to_thread(rig.pub.finish)
        await drain(rig.admin_dsn, ledger)
        rc = await asyncio.to_thread(d.terminate, 60)
        step(f"daemon stopped (exit code {rc}); checking {summary['sent']:,} readings row by row")
        return await verify(rig, ledger, summary, labels, events, step) | {"final_exit_code": rc}
    finally:
        if d is not None:
            d.kill()
        await rig.close()


async def verify(rig: Rig, ledger, summary: dict, labels: dict[int, str], events: list, step) -> dict:
    rc, crossings, self_check = await check_run(rig, ledger)
    rows = []
    for p, label in labels.items():
        mine = [c for c in crossings if c.phase == p]
        evs = [e for e in events if e.phase == p]
        r = rc.phases.get(p, {"sent": 0, "stored": 0, "lost": 0, "unacked_missing": 0, "duplicated": 0})
        delays = [c.delay for c in mine if c.delay is not None]
        notes = [n for e in evs for n in e.notes]
        if r["unacked_missing"]:
            notes.append(f"{r['unacked_missing']:,} readings never acknowledged by the broker and not stored")
        not_recorded = sum(1 for c in mine if c.raised and not c.recorded)
        if not_recorded:
            notes.append(f"{not_recorded} alarm(s) raised on MQTT but not in the database")
        stale = sum(1 for c in mine if c.left_active)
        if stale:
            notes.append(f"{stale} alarm(s) still active after the sensor returned to normal")
        recov = [e.recovery for e in evs]
        rows.append({"phase": p, "label": label, "readings": r,
                     "alarms": {"injected": len(mine), "raised": sum(1 for c in mine if c.raised),
                                "duplicated": sum(max(0, c.raised - 1) for c in mine),
                                "recorded": sum(1 for c in mine if c.recorded), "stale": stale,
                                "delay_max": max(delays) if delays else None, "delays": delays},
                     "recovery_max": None if not recov or None in recov else max(recov),
                     "recovered": None not in recov, "notes": notes})
    span = max(1e-9, summary["t_end"] - summary["t_start"])
    return {"mode": "single", "load": {"collectors": ledger.collectors, "per_collector": ledger.per_collector,
                                       "rate_target": rig.st.rate, "rate_sent": summary["sent"] / span,
                                       "seconds": span, "late_max": summary["late_max"]},
            "rows": rows, "total": rc.total, "examples_lost": rc.examples_lost,
            "events": [e.as_dict() for e in events], "crossings": [c.as_dict() for c in crossings],
            "self_check": self_check, "alarm_watch": {"changes": len(rig.watch.changes),
                                                      "reconnects": rig.watch.reconnects}}


def _fmt(x: float | None) -> str:
    return "— (not recovered)" if x is None else f"{x:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
