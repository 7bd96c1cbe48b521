"""What the database commands share: naming the database, and one clear line (exit non-zero)
for a database that refuses, is unreachable or has no (or an older) plantwatch schema; the
traceback only with ``-v``."""
from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, soft_wrap=True)


def dsn_of(args: argparse.Namespace) -> str:
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


def add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="PostgreSQL DSN (default: --config's database.dsn, else the environment variable"
                   " PLANTWATCH_DSN; the password: PGPASSWORD or ~/.pgpass, never the command line); the read-only"
                   " role is enough for every read command")
    p.add_argument("--config", help="site config naming the database")


def one_line(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a database command; its database errors become one line on stderr."""
    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        from plantwatch.connectors.errors import StoreError, StoreUnavailable
        from plantwatch.connectors.readonly import SchemaOutdated
        from plantwatch.daemon.config.model import ConfigError

        try:
            return cmd(args)
        except (StoreError, SchemaOutdated, ConfigError, OSError) as e:
            if getattr(args, "verbose", 0):
                raise
            if isinstance(e, SchemaOutdated):
                what, code = str(e), 2
            elif isinstance(e, ConfigError):
                what, code = str(e).splitlines()[0], 2
            elif isinstance(e, StoreUnavailable) or isinstance(e, OSError):
                what, code = f"database unreachable: {_reason(e)}", 1
            else:
                what, code = f"the database refused: {_reason(e)}", 1
            err.print(f"[red]plantwatch: {escape(what)}[/red] (-v for the traceback)", highlight=False)
            return code
    return run


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
