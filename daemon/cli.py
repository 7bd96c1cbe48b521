"""``plantwatch`` command line: one console command, subcommands per task."""
from __future__ import annotations

import argparse
import asyncio
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
    from .config import ConfigError, load_config

    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch", description="Chemical-plant sensor monitoring daemon")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("--config", required=True, help="site config (YAML)")
    r.set_defaults(func=cmd_run)

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
    args = parser.parse_args(argv)
    _setup_logging(args.verbose if args.cmd != "run" else max(1, args.verbose))
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
