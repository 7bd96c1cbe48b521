"""``plantwatch`` command line: one console command, subcommands per task."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from rich.console import Console

#: diagnostics (errors, warnings, progress) go to stderr; results to stdout (``out``)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose < 2:
        for noisy in ("aiomqtt", "amqtt", "transitions", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


# --- config check ------------------------------------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from plantwatch.daemon.collect.check import check_files as check_collect_files
    from plantwatch.daemon.config.model import ConfigError, load_config

    try:
        if args.site or args.collect or _is_collect(args.file):
            for line in check_collect_files(args.file, site=args.site, collect=args.collect or []):
                out.print(escape(line), highlight=False, soft_wrap=True)
            return 0
        cfg = load_config(args.file, check_files=not args.skip_files)
    except ConfigError as e:
        console.print(f"[red]{escape(str(e))}[/red]", highlight=False, soft_wrap=True)
        return 2
    n_watch = sum(len(cfg.watched(d)) for d in cfg.detectors)
    out.print(f"[green]{args.file}: OK[/green] — site {cfg.site.id!r}, {len(cfg.site.areas)} areas, "
                  f"{len(cfg.sensors)} sensors, {len(cfg.detectors)} detectors watching {n_watch} sensor slots; "
                  f"mqtt: {'embedded' if cfg.mqtt is None else f'{cfg.mqtt.host}:{cfg.mqtt.port}'}, "
                  f"database: {'embedded' if cfg.database is None else 'configured'}", highlight=False)
    from plantwatch.daemon.ingest.partitions import Partitioner

    hosts = Partitioner(cfg).primary_hosts()
    if hosts:
        out.print(f"Sparkplug primary host of each node ({cfg.cluster.partitions} partitions; set it on the node):",
                  highlight=False)
        for node, host in hosts.items():
            out.print(f"  {escape(node)}: {escape(host)}", highlight=False, soft_wrap=True)
    return 0


def cmd_config_apply(args: argparse.Namespace) -> int:
    from plantwatch.daemon.cli.config_apply import apply

    return apply(args.file, args.timeout, out, console)


def _is_collect(path: str) -> bool:
    from plantwatch.daemon.collect.config import is_collect_config

    return is_collect_config(path)


# --- run ---------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from plantwatch.daemon.config.model import ConfigError, load_config
    from plantwatch.daemon.runtime import run_with_services

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        return 2
    text = Path(args.config).read_text(encoding="utf-8")
    return asyncio.run(_supervise(run_with_services(cfg, config_text=text, config_path=args.config)))


async def _supervise(handle) -> int:
    """Run the daemon; first SIGTERM/SIGINT stops it gracefully (within ``ingest.shutdown_grace``
    seconds, see daemon/service.py), a second one exits at once. Exit codes: daemon/exits.py."""
    from plantwatch.daemon.exits import (EXIT_CONFIG, EXIT_CRASHED, EXIT_GRACE_EXCEEDED, EXIT_SECOND_SIGNAL, GraceExceeded,
                        StartupError)

    loop = asyncio.get_running_loop()
    signals = {"n": 0}
    log = logging.getLogger("plantwatch")
    grace = handle.cfg.ingest.shutdown_grace

    def backstop() -> None:  # the event loop itself is stuck: the in-loop bound could not act
        log.critical("stop did not end within ingest.shutdown_grace + %g s; exiting now (what was not acknowledged"
                     " is delivered again by the broker)", BACKSTOP)
        logging.shutdown()
        os._exit(EXIT_GRACE_EXCEEDED)

    def on_signal(sig: int) -> None:
        signals["n"] += 1
        if signals["n"] == 1:
            log.warning("signal %d: graceful shutdown within %g s (again to exit now)", sig, grace)
            timer = threading.Timer(grace + BACKSTOP, backstop)
            timer.daemon = True
            timer.start()
            handle.request_stop()
        else:
            os._exit(EXIT_SECOND_SIGNAL)

    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, on_signal, s)
    reloads: set[asyncio.Task] = set()

    def on_hangup() -> None:  # reload the config file (daemon/runtime.py: checked, applied or refused whole)
        task = loop.create_task(handle.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        await handle.run()
    except Exception as e:  # a crashed task: exit non-zero so that the service manager restarts us
        excs = _leaves(e)
        if any(isinstance(x, StartupError) for x in excs):
            for x in excs:
                if isinstance(x, StartupError):
                    log.critical("%s", x)
            return EXIT_CONFIG
        if excs and all(isinstance(x, GraceExceeded) for x in excs):
            return EXIT_GRACE_EXCEEDED
        for x in excs:
            log.critical("stopped by %s: %s", type(x).__name__, x, exc_info=x)
        return EXIT_CRASHED
    return 0


#: seconds past ``ingest.shutdown_grace`` after which a stop that is still running ends the process
BACKSTOP = 10.0


def _leaves(e: BaseException) -> list[BaseException]:
    """The exceptions of a (nested) exception group, or ``[e]``."""
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in _leaves(sub)]
    return [e]


# --- backtest ----------------------------------------------------------------------------------
def cmd_backtest(args: argparse.Namespace) -> int:
    from plantwatch.daemon.cli.dbaccess import one_line
    from plantwatch.daemon.config.model import ConfigError, load_config, load_config_text

    try:
        candidate = load_config(args.config)
        active = load_config(args.active) if args.active else None
    except ConfigError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        return 2
    dsn = args.dsn or (candidate.database.url if candidate.database else None) or os.environ.get("PLANTWATCH_DSN")
    if not dsn:
        console.print("[red]no database: give --dsn, a config with database.dsn or PLANTWATCH_DSN[/red]")
        return 2

    async def go() -> int:
        from plantwatch.connectors.store import Store

        from plantwatch.daemon.lab import backtest as bt

        store = await Store.open(dsn, migrate_schema=False)  # reads only: the read-only role is enough
        try:
            act = active
            if act is None:
                text = await store.latest_config_text()
                if text:
                    try:
                        act = load_config_text(text, "<active config from the database>", check_files=False)
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

    return one_line(lambda _: asyncio.run(go()))(args)


# --- transfer ----------------------------------------------------------------------------------
def cmd_transfer(args: argparse.Namespace) -> int:
    """Declare a material transfer: published (QoS 1) to the site's transfers topic, where the
    daemon records it and tells the unexplained-loss detectors. Succeeds only when the daemon's
    receipt says the declaration is stored (see ``daemon/cli/transfer.py``)."""
    from plantwatch.daemon.cli.transfer import declare

    return declare(args, console)


#: subcommands whose module parses its own arguments: name -> (module, help)
PASSTHROUGH = {
    "collect": ("plantwatch.daemon.collect.cli", "edge collector: read Modbus / OPC UA devices, publish readings (store "
                "and forward); collect certs: its OPC UA certificate"),
    "demo": ("plantwatch.daemon.lab.demo", "simulated site through the daemon, embedded services, a result table"),
    "simulate": ("plantwatch.daemon.lab.simulator.collector", "run the plant simulator as an edge collector"),
    "bench": ("plantwatch.daemon.lab.bench", "end-to-end benchmark against the machine's own limits (bench --quick)"),
    "faults": ("plantwatch.daemon.lab.faults", "the daemon under load while its process, broker and database fail (faults --quick)"),
    "failover": ("plantwatch.daemon.lab.faults.failover", "three instances under load while instances, broker and database fail"),
    "bench-detectors": ("plantwatch.daemon.lab.bench_detectors", "cost per reading of each detector (group detectors per row too) at 1k and 10k sensors"),
    "bench-backtest": ("plantwatch.daemon.lab.bench_backtest", "how fast a backtest replays stored readings"),
    "eval": ("plantwatch.daemon.lab.evaluate.__main__", "evaluate the detectors on NAB, SKAB or TEP (eval nab --data DIR)"),
    "inventory": ("plantwatch.daemon.cli.inventory", "each tank's balance and the smallest loss rate it can find"),
    "security-eval": ("plantwatch.daemon.lab.security_eval", "chemical-security scenarios, old and new detectors side by side (--quick)"),
}


def cmd_passthrough(args: argparse.Namespace, rest: list[str]) -> int:
    import importlib

    return int(importlib.import_module(PASSTHROUGH[args.cmd][0]).main(rest) or 0)


def cmd_grafana(args: argparse.Namespace, rest: list[str]) -> int:
    from plantwatch.daemon.cli.grafana import main as grafana_main

    return grafana_main(rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch", description="Chemical-plant sensor monitoring daemon")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the daemon", epilog=RUN_ENV, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--config", required=True, help="site config (YAML; docs/config.md)")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("backtest", help="replay stored readings through a candidate config and the active one")
    b.add_argument("--config", required=True, help="candidate config (YAML)")
    b.add_argument("--active", help="config to compare with (default: the one the daemon last loaded)")
    b.add_argument("--from", dest="start", required=True, help="start: ISO 8601 (UTC unless an offset is given) or Unix seconds")
    b.add_argument("--to", dest="end", required=True, help="end, same forms")
    b.add_argument("--labels", help="labelled past incidents (JSON, the simulator's ground-truth format)")
    b.add_argument("--dsn", help="database (default: the candidate config's database.dsn, else the environment"
                   " variable PLANTWATCH_DSN)")
    b.add_argument("--warmup", type=float, default=3600.0, help="seconds replayed before --from to warm detectors up")
    b.add_argument("--json", help="also write the results as JSON here")
    b.set_defaults(func=cmd_backtest)

    for name, (_, help_) in PASSTHROUGH.items():
        sub.add_parser(name, help=help_, add_help=False).set_defaults(func=cmd_passthrough, passthrough=True)

    g = sub.add_parser("grafana", help="Grafana: push dashboards, data sources and alert rules, or render them for provisioning",
                       add_help=False)
    g.set_defaults(func=cmd_grafana, passthrough=True)

    tr = sub.add_parser("transfer", help="declare a tank transfer (explains an inventory fall to the loss detector)")
    from plantwatch.daemon.cli.transfer import add_arguments as transfer_arguments
    transfer_arguments(tr)
    tr.set_defaults(func=cmd_transfer)

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cc = csub.add_parser("check", help="validate a site or collect config file; with both, check they agree")
    cc.add_argument("file", help="a site config, or a collect config (recognised by its sources)")
    cc.add_argument("--site", help="with a collect config: the site config it publishes to")
    cc.add_argument("--collect", action="append", metavar="FILE",
                    help="with a site config: a collect config publishing to it (repeatable)")
    cc.add_argument("--skip-files", action="store_true",
                    help="do not check the certificate and password files the config names (checking on another machine)")
    cc.set_defaults(func=cmd_config_check)
    ca = csub.add_parser("apply", help="check a changed site config and have the running daemon apply it, without a"
                         " restart (active alarms, learned state and the operators' screens are kept)")
    ca.add_argument("file", help="the site config the daemon runs with (plantwatch run --config FILE), changed")
    ca.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the daemon's answer (default 60)")
    ca.set_defaults(func=cmd_config_apply)

    from plantwatch.daemon.cli import alarms, audit, db, incident
    for group in (audit, incident, db, alarms):  # audit; incident; db migrate; alarms, token, api
        group.register(sub)
    _describe(p)
    return p


RUN_ENV = """environment:
  PLANTWATCH_MQTT_PASSWORD  the broker password when the config's mqtt section has none
  PGPASSWORD                the database password when the DSN has none (or ~/.pgpass)
  NOTIFY_SOCKET             set by systemd (Type=notify): the daemon reports READY and WATCHDOG
signals:
  SIGTERM, SIGINT           graceful stop within ingest.shutdown_grace (a second one: at once)
  SIGHUP                    reload the config file (checked; refused as a whole if invalid)"""


def _describe(p: argparse.ArgumentParser) -> None:
    """Every subcommand's --help says what it does: its line of the command list when it has no
    description of its own."""
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            for name, sp in a.choices.items():
                if not sp.description and helps.get(name):
                    sp.description = helps[name][:1].upper() + helps[name][1:] + "."
                _describe(sp)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    _setup_logging(args.verbose if args.cmd not in ("run", "collect") else max(1, args.verbose))
    if not getattr(args, "passthrough", False) and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if getattr(args, "passthrough", False):
            return int(args.func(args, rest) or 0)  # subcommands that own their argument parsing
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line; the traceback with -v
        if args.verbose:
            raise
        print(f"plantwatch {args.cmd}: error: {_one_line(e)} (-v shows the traceback)", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    leaves = _leaves(e)
    text = "; ".join(f"{type(x).__name__}: {x}" if str(x) else type(x).__name__ for x in leaves)
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
