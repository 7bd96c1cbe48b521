"""``plantwatch demo``: a simulated chemical site streamed through the real daemon.

With no arguments it needs nothing installed beyond plantwatch itself: an embedded MQTT broker
and an embedded PostgreSQL start in ``--data-dir``, the simulator publishes the demo site with its
scripted incidents, the daemon ingests, stores, detects and alarms, and a table at the end shows
each injected incident, whether and how fast it was alarmed, and the false alarms. ``--mqtt`` and
``--dsn`` point the same run at a real broker and database. ``--keep`` leaves the daemon, the
broker, the database and the operator console running after the table, with an operator and an
inspector login printed, until Ctrl-C.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from plantwatch.connectors import demo_queries, inspection
from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.tls import ClientTls

from plantwatch.daemon.config.model import ApiConfig, ApiToken, DatabaseConfig, MetricsConfig, MqttConfig
from plantwatch.daemon.config.broker_options import BrokerArgumentError, add_broker_arguments, broker_from
from plantwatch.daemon.lab.demo_site import demo_config_text, load_demo_config
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.service import Daemon, Endpoints

log = logging.getLogger("plantwatch.demo")


def _value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return m.registry.get_sample_value(name, labels or {}) or 0.0


def _progress(m: Metrics, daemon: Daemon, started: float, duration: float, stats) -> Table:
    elapsed = time.monotonic() - started
    t = Table(title=f"plantwatch demo — {min(elapsed, duration):4.0f} / {duration:.0f} s", title_justify="left",
              show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column(justify="right")
    stored = _value(m, "plantwatch_readings_stored_total", {"table": "readings"}) + \
        _value(m, "plantwatch_readings_stored_total", {"table": "robot_readings"})
    rejected = sum(s.value for mf in m.rejected.collect() for s in mf.samples if s.name.endswith("_total"))
    t.add_row("batches published by the simulator", f"{getattr(stats, 'published', 0):,}")
    t.add_row("readings stored", f"{stored:,.0f}")
    t.add_row("readings rejected (dead-lettered)", f"{rejected:,.0f}")
    t.add_row("alarm changes", f"{sum(s.value for mf in m.alarm_changes.collect() for s in mf.samples if s.name.endswith('_total')):,.0f}")
    book = daemon.pipeline.alarms if daemon.pipeline else None
    if book is not None:
        act = [(k, a) for k, a in book.alarms.items() if a.active]
        t.add_row("active alarms", ", ".join(f"{n} {s}" for s, n in book.counts_by_severity().items() if n) or "none")
        tags = {int(i): s.id for i, s in zip(daemon.pipeline.reg.db_id, daemon.cfg.sensors)}
        for (det, sid), a in sorted(act, key=lambda x: x[1].severity)[:8]:
            t.add_row(f"  {tags.get(sid, sid)}", f"{a.condition} ({a.severity}, {det}, {a.state})")
    return t


async def run_demo(*, duration: float = 60.0, mqtt: str | None = None, dsn: str | None = None,
                   data_dir: str = ".plantwatch", out_dir: str | None = None, speed: float = 1.0,
                   scenario_path: str | None = None, console: Console | None = None, live: bool = True,
                   tls: ClientTls | None = None, keep: bool = False, console_port: int = 8110) -> dict:
    """Run the demo; returns {"report": DemoReport, "dsn": ..., "truth": path, "incident_report": path|None}.
    ``keep``: after the table, the daemon, services and console stay up until cancelled (Ctrl-C)."""
    from plantwatch.daemon.lab.simulator.collector import run_simulator
    from plantwatch.daemon.lab.simulator.scenario import load_scenario

    from plantwatch.daemon.lab.demo_explain import explain
    from plantwatch.daemon.lab.demo_report import fetch_report

    console = console or Console()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir or Path(data_dir) / "demo" / stamp)
    out.mkdir(parents=True, exist_ok=True)
    truth_path = out / "truth.json"
    base = load_demo_config()
    prefix = "plantwatch-demo"
    async with contextlib.AsyncExitStack() as stack:
        if mqtt:
            host, _, port = mqtt.rpartition(":")
            broker = BrokerAddress(host or "127.0.0.1", int(port), tls=tls)
        else:
            from plantwatch.connectors.embedded import EmbeddedBroker

            b = await stack.enter_async_context(EmbeddedBroker())
            broker = BrokerAddress(b.host, b.port)
        embedded_db = None
        if dsn is None:
            from plantwatch.connectors.embedded import EmbeddedPostgres

            console.print(f"starting the embedded PostgreSQL in {Path(data_dir) / 'pgdata'} …")
            pg = await stack.enter_async_context(EmbeddedPostgres(Path(data_dir) / "pgdata"))
            dbname = f"demo_{stamp.replace('-', '_')}"
            dsn = await demo_queries.create_database(pg.dsn, dbname)
            embedded_db = f"{dbname} in the embedded PostgreSQL in {pg.data_dir}"
        cfg = base.model_copy(update={
            "mqtt": MqttConfig(host=broker.host, port=broker.port, topic_prefix=prefix,
                               client_id=f"plantwatch-demo-{stamp}"),
            "database": DatabaseConfig(dsn=dsn), "metrics": MetricsConfig(port=0)})
        logins = {}
        if keep:  # the console, with a fresh operator and inspector token of this run (never stored)
            logins = {"operator": secrets.token_urlsafe(18), "inspector": secrets.token_urlsafe(18)}
            from plantwatch.daemon.alarms.api import hash_token
            cfg = cfg.model_copy(update={"api": ApiConfig(port=console_port, tokens=[
                ApiToken(name=role, role=role, sha256=hash_token(tok)) for role, tok in logins.items()])})
        metrics = Metrics()
        daemon = Daemon(cfg, Endpoints(broker, dsn), config_text=demo_config_text(), metrics=metrics)
        dtask = asyncio.create_task(daemon.run(), name="daemon")
        ready = asyncio.create_task(daemon.ready.wait())
        await asyncio.wait([dtask, ready], return_when=asyncio.FIRST_COMPLETED)
        if dtask.done():
            dtask.result()  # raises what stopped it
        scenario = load_scenario(scenario_path) if scenario_path else None
        stop_sim = asyncio.Event()
        started = time.monotonic()
        sim = asyncio.create_task(run_simulator(cfg, broker.host, broker.port, prefix, duration=duration, speed=speed,
                                                scenario=scenario, truth_path=truth_path, stop_event=stop_sim,
                                                tls=broker.tls))
        stats = None
        try:
            with Live(console=console, refresh_per_second=4, transient=False, auto_refresh=live) as lv:
                while not sim.done():
                    lv.update(_progress(metrics, daemon, started, duration / speed, stats))
                    await asyncio.sleep(0.5)
                stats = sim.result()
                # let the last readings through the pipeline and the stale detector see the silence
                settle_until = time.monotonic() + 3.0
                while time.monotonic() < settle_until or not daemon.pipeline.idle:
                    lv.update(_progress(metrics, daemon, started, duration / speed, stats))
                    await asyncio.sleep(0.25)
                    if time.monotonic() > settle_until + 30:
                        break
                lv.update(_progress(metrics, daemon, started, duration / speed, stats))
        finally:
            stop_sim.set()
            if not keep or dtask.done():
                daemon.stop.set()
                await dtask
        async with inspection.connection(dsn) as conn:
            report = explain(await fetch_report(conn, truth_path), cfg)
        incident_report = await _leak_report(report, dsn, out)
        if keep:
            _summary(console, report, stats, truth_path, dsn, incident_report, None)  # still running
            await _kept(console, cfg, logins, daemon, dtask)
    if keep:
        return {"report": report, "dsn": dsn, "truth": str(truth_path), "out": str(out), "stats": stats,
                "incident_report": incident_report}
    _summary(console, report, stats, truth_path, dsn, incident_report, embedded_db)
    return {"report": report, "dsn": dsn, "truth": str(truth_path), "out": str(out), "stats": stats,
            "incident_report": incident_report}


def _summary(console: Console, report, stats, truth_path: Path, dsn: str, incident_report: str | None,
             embedded_db: str | None) -> None:
    """The result table and where things are; ``embedded_db``: the embedded database that stopped
    with the demo (its DSN would lead nowhere)."""
    from plantwatch.daemon.lab.demo_report import render_report

    console.print()
    render_report(report, console)
    console.print(f"simulator: {stats.published:,} batches, {stats.readings:,} readings published; ground truth "
                  f"{truth_path}")
    if embedded_db is not None:  # stopped with the demo: its DSN would lead nowhere
        console.print(f"database: {embedded_db}, stopped with the demo; to browse the results afterwards"
                      " (plantwatch incident list --dsn DSN), run the demo against a database of yours:"
                      " plantwatch demo --dsn DSN", soft_wrap=True)
    else:
        console.print(f"database: {_without_password(dsn)} (plantwatch incident list --dsn DSN)", soft_wrap=True)
    if incident_report:
        console.print(f"incident report for the leak (for inspectors): {incident_report}")


async def _kept(console: Console, cfg, logins: dict[str, str], daemon: Daemon, dtask: asyncio.Task) -> None:
    """Keep the demo running (daemon, broker, database, console) until cancelled (Ctrl-C)."""
    await daemon.alarm_mgmt.listening()
    console.print(f"\nconsole: {cfg.api.url}/", highlight=False)
    for role, tok in logins.items():
        console.print(f"  {role} login token: {tok}", highlight=False)
    console.print("the daemon, broker, database and console keep running; Ctrl-C stops them", highlight=False)
    try:
        await asyncio.shield(dtask)  # Ctrl-C cancels this wait, not the daemon: it stops in order below
    finally:
        daemon.stop.set()
        await dtask


def _without_password(dsn: str) -> str:
    """The DSN as it may be shown: a password in it is replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(dsn)
    if u.password is None:
        return dsn
    return urlunsplit(u._replace(netloc=u.netloc.replace(f":{u.password}@", ":***@", 1)))


async def _leak_report(report, dsn: str, out: Path) -> str | None:
    """The inspectors' HTML report of the incident the injected leak became (None if none did)."""
    from plantwatch.daemon.alarms.report import latest_incident_for, write_incident_report

    leaks = [r for r in report.results if r.incident.kind == "leak" and r.detected]
    if not leaks:
        return None
    first = min((a for r in leaks for a in r.detections), key=lambda a: a.time)  # the leak's first alarm
    incident = await latest_incident_for(dsn, [first.sensor])
    if incident is None:
        return None
    return str(await write_incident_report(dsn, incident, out / f"incident-{incident}.html"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="plantwatch demo", description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("--duration", type=float, default=60.0, help="simulated seconds (default 60)")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall-clock second")
    p.add_argument("--mqtt", help="HOST:PORT of a real broker (default: embedded)")
    p.add_argument("--dsn", help="a real database (default: embedded PostgreSQL, a new database per run)")
    p.add_argument("--data-dir", default=".plantwatch", help="where the embedded services keep their data")
    p.add_argument("--out", help="folder for the ground truth and reports (default: DATA_DIR/demo/<time>)")
    p.add_argument("--scenario", help="scenario file (default: the shipped demo scenario)")
    p.add_argument("--keep", action="store_true", help="after the table, keep the daemon, broker, database and"
                   " console running (prints the console's URL and logins) until Ctrl-C")
    p.add_argument("--console-port", type=int, default=8110, help="the console's port with --keep (default 8110)")
    add_broker_arguments(p, broker=False)
    args = p.parse_args(argv)
    tls = None
    if args.mqtt:
        try:
            tls = broker_from(args, None, host="-", port=1).tls
        except BrokerArgumentError as e:
            p.error(str(e))
    console = Console() if Console().is_terminal else Console(width=160)  # logs and CI: do not squeeze the table
    try:
        res = asyncio.run(run_demo(duration=args.duration, mqtt=args.mqtt, dsn=args.dsn, data_dir=args.data_dir,
                                   out_dir=args.out, speed=args.speed, scenario_path=args.scenario, console=console,
                                   tls=tls, keep=args.keep, console_port=args.console_port))
    except KeyboardInterrupt:
        if not args.keep:
            raise
        console.print("stopped: daemon, console, broker and database")
        return 0
    return 0 if res["report"] is not None else 1
