"""``plantwatch db migrate``: bring the database's schema up to date, explicitly, with the
daemon's credentials (read commands never migrate; ``plantwatch run`` does at start)."""
from __future__ import annotations

import argparse
import asyncio

from plantwatch.daemon.cli.dbaccess import add_db, dsn_of, err, one_line


@one_line
def cmd_migrate(args: argparse.Namespace) -> int:
    from plantwatch.connectors.readonly import migrate_dsn

    applied = asyncio.run(migrate_dsn(dsn_of(args)))
    err.print(f"schema up to date; applied now: {', '.join(f'{v:03d}' for v in applied) or 'nothing'}", highlight=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("db", help="the database: migrate the schema (the daemon's credentials)")
    dsub = d.add_subparsers(dest="db_cmd", required=True)
    m = dsub.add_parser("migrate", help="apply the migrations this plantwatch ships (run does it at start too)")
    add_db(m)
    m.set_defaults(func=cmd_migrate)
