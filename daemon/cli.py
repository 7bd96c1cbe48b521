"""``plantwatch`` command line: one console command, subcommands per task."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        for noisy in ("aiomqtt", "amqtt", "transitions", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


# --- config check ------------------------------------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from .config import ConfigError, load_config

    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        console.print(f"[red]{escape(str(e))}[/red]", highlight=False, soft_wrap=True)
        return 2
    n_watch = sum(len(cfg.watched(d)) for d in cfg.detectors)
    console.print(f"[green]{args.file}: OK[/green] — site {cfg.site.id!r}, {len(cfg.site.areas)} areas, "
                  f"{len(cfg.sensors)} sensors, {len(cfg.detectors)} detectors watching {n_watch} sensor slots; "
                  f"mqtt: {'embedded' if cfg.mqtt is None else f'{cfg.mqtt.host}:{cfg.mqtt.port}'}, "
                  f"database: {'embedded' if cfg.database is None else 'configured'}", highlight=False)
    return 0


# --- run ---------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .runtime import run_with_services

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        return 2
    text = Path(args.config).read_text(encoding="utf-8")
    return asyncio.run(_supervise(run_with_services(cfg, config_text=text)))


async def _supervise(handle) -> int:
    """Run the daemon; first SIGTERM/SIGINT stops it gracefully, a second one exits at once."""
    loop = asyncio.get_running_loop()
    signals = {"n": 0}

    def on_signal(sig: int) -> None:
        signals["n"] += 1
        if signals["n"] == 1:
            logging.getLogger("plantwatch").warning("signal %d: graceful shutdown (again to exit now)", sig)
            handle.request_stop()
        else:
            os._exit(130)

    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, on_signal, s)
    try:
        await handle.run()
    except Exception as e:  # a crashed task: exit non-zero so the service manager restarts us
        excs = e.exceptions if isinstance(e, BaseExceptionGroup) else [e]
        for x in excs:
            logging.getLogger("plantwatch").critical("stopped by %s: %s", type(x).__name__, x, exc_info=x)
        return 1
    return 0


# --- collect -----------------------------------------------------------------------------------
def cmd_collect(args: argparse.Namespace) -> int:
    from .collect import main as collect_main

    return collect_main(args.config)


# --- backtest ----------------------------------------------------------------------------------
def cmd_backtest(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config, load_config_text

    try:
        candidate = load_config(args.config)
        active = load_config(args.active) if args.active else None
    except ConfigError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        return 2
    dsn = args.dsn or (candidate.database.dsn if candidate.database else None)
    if not dsn:
        console.print("[red]no database: give --dsn or a config with database.dsn[/red]")
        return 2

    async def go() -> int:
        from plantwatch.connectors.store import Store

        from . import backtest as bt

        store = await Store.open(dsn)
        try:
            act = active
            if act is None:
                async with store.pool.acquire() as conn:
                    text = await conn.fetchval("SELECT content FROM config_versions ORDER BY last_loaded_at DESC LIMIT 1")
                if text:
                    try:
                        act = load_config_text(text, "<active config from the database>")
                    except ConfigError as e:
                        console.print(f"[yellow]the active config stored in the database no longer loads:\n{e}[/yellow]")
            configs = {"candidate": candidate} | ({"active": act} if act is not None else {})
            res = await bt.backtest(store, configs, bt.parse_time(args.start), bt.parse_time(args.end),
                                    labels=bt.load_labels(args.labels), warmup=args.warmup)
        finally:
            await store.close()
        bt.render(res, Console(soft_wrap=True))
        if args.json:
            Path(args.json).write_text(json.dumps(bt.to_json(res), indent=2))
        return 0

    return asyncio.run(go())


# --- transfer ----------------------------------------------------------------------------------
def cmd_transfer(args: argparse.Namespace) -> int:
    """Declare a material transfer: published (QoS 1) to the site's transfers topic, where the
    daemon records it and tells the unexplained-loss detectors. Succeeds only when the daemon's
    receipt says the declaration is stored (see ``daemon/transfer_cli.py``)."""
    from .transfer_cli import declare

    return declare(args, console)


#: subcommands whose module parses its own arguments: name -> (module, help)
PASSTHROUGH = {
    "demo": ("plantwatch.daemon.demo", "simulated site through the daemon, embedded services, a result table"),
    "simulate": ("plantwatch.connectors.simulator.collector", "run the plant simulator as an edge collector"),
    "bench": ("plantwatch.daemon.bench", "end-to-end benchmark against the machine's own limits (bench --quick)"),
    "faults": ("plantwatch.daemon.faults", "the daemon under load while its process, broker and database fail (faults --quick)"),
    "failover": ("plantwatch.daemon.faults.failover", "three instances under load while instances, broker and database fail"),
    "bench-detectors": ("plantwatch.daemon.bench_detectors", "readings/s per core of each detector at 1k and 10k sensors"),
    "bench-backtest": ("plantwatch.daemon.bench_backtest", "how fast a backtest replays stored readings"),
    "eval": ("plantwatch.daemon.evaluate.__main__", "evaluate the detectors on NAB, SKAB or TEP (eval nab --data DIR)"),
}


def cmd_passthrough(args: argparse.Namespace, rest: list[str]) -> int:
    import importlib

    return int(importlib.import_module(PASSTHROUGH[args.cmd][0]).main(rest) or 0)


def cmd_grafana(args: argparse.Namespace, rest: list[str]) -> int:
    from plantwatch.connectors import grafana

    if rest[:1] != ["push"]:
        console.print("usage: plantwatch grafana push --url URL --token TOKEN [options]  (see plantwatch grafana push --help)")
        return 2
    return grafana.main(rest[1:])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch", description="Chemical-plant sensor monitoring daemon")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("--config", required=True, help="site config (YAML)")
    r.set_defaults(func=cmd_run)

    co = sub.add_parser("collect", help="edge collector: read Modbus / OPC UA devices, publish readings (store and forward)")
    co.add_argument("--config", required=True, help="collect config (YAML; see docs/edge.md)")
    co.set_defaults(func=cmd_collect)

    b = sub.add_parser("backtest", help="replay stored readings through a candidate config and the active one")
    b.add_argument("--config", required=True, help="candidate config (YAML)")
    b.add_argument("--active", help="config to compare with (default: the one the daemon last loaded)")
    b.add_argument("--from", dest="start", required=True, help="start: ISO 8601 (UTC unless an offset is given) or Unix seconds")
    b.add_argument("--to", dest="end", required=True, help="end, same forms")
    b.add_argument("--labels", help="labelled past incidents (JSON, the simulator's ground-truth format)")
    b.add_argument("--dsn", help="database (default: the candidate config's database.dsn)")
    b.add_argument("--warmup", type=float, default=3600.0, help="seconds replayed before --from to warm detectors up")
    b.add_argument("--json", help="also write the results as JSON here")
    b.set_defaults(func=cmd_backtest)

    for name, (_, help_) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_, add_help=False).set_defaults(func=cmd_passthrough, passthrough=True)

    g = sub.add_parser("grafana", help="Grafana: push dashboards, data source and alert rules (see grafana push --help)",
                       add_help=False)
    g.set_defaults(func=cmd_grafana, passthrough=True)

    tr = sub.add_parser("transfer", help="declare a tank transfer (explains an inventory fall to the loss detector)")
    tr.add_argument("--config", required=True, help="site config (for the broker and the sensor registry)")
    tr.add_argument("--tank", required=True, help="the tank's level sensor id")
    tr.add_argument("--quantity", required=True, type=float, help="in the sensor's unit; > 0 leaves the tank, < 0 enters it")
    tr.add_argument("--start", help="start (ISO 8601 or Unix seconds; default now)")
    tr.add_argument("--end", help="end (default an hour after now)")
    tr.add_argument("--by", default=os.environ.get("USER", ""), help="who declares it")
    tr.add_argument("--reference", default="", help="bill of lading, work order ...")
    tr.add_argument("--username", default=os.environ.get("PLANTWATCH_MQTT_USERNAME"),
                    help="MQTT user allowed to declare transfers (default $PLANTWATCH_MQTT_USERNAME, else the"
                         " config's); its password from $PLANTWATCH_MQTT_PASSWORD")
    tr.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for the daemon's receipt (default 30); without it the exit code is 1")
    tr.set_defaults(func=cmd_transfer)

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cc = csub.add_parser("check", help="validate a config file")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_config_check)

    from .cli_alarms import register  # audit, incident, alarms, token, api
    register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    _setup_logging(args.verbose if args.cmd not in ("run", "collect") else max(1, args.verbose))
    if getattr(args, "passthrough", False):
        return int(args.func(args, rest) or 0)  # subcommands that own their argument parsing
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
