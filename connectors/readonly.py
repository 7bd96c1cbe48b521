"""Read commands over their own connection, with read-only credentials: no migration ever runs
here (migrations run only from ``plantwatch run`` and ``plantwatch db migrate``). The schema is
checked instead: a database without plantwatch's schema, or one older than this code, raises
:class:`SchemaOutdated` with one line to say so. The session is read-only
(``default_transaction_read_only``), so even a command with write credentials writes nothing."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from .errors import availability, driver_errors
from .migrations import available


class SchemaOutdated(Exception):
    """The database has no plantwatch schema, or an older one than this code."""


async def schema_current(conn: asyncpg.Connection) -> None:
    """Raise :class:`SchemaOutdated` unless every migration of this code is applied."""
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        raise SchemaOutdated("the database has no plantwatch schema (run `plantwatch db migrate` with the daemon's"
                             " credentials, or start `plantwatch run`)")
    try:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    except asyncpg.InsufficientPrivilegeError:
        raise SchemaOutdated("this role may not read schema_migrations: the database's schema is older than"
                             " this plantwatch (run `plantwatch db migrate` with the daemon's credentials)") from None
    missing = [v for v, _, _ in available() if v not in done]
    if missing:
        raise SchemaOutdated(f"the database's schema is older than this plantwatch: migration(s)"
                             f" {', '.join(f'{v:03d}' for v in missing)} not applied (run `plantwatch db migrate`"
                             f" with the daemon's credentials)")


@asynccontextmanager
async def session(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A read-only connection of its own with the schema checked, closed after. Driver errors
    become :class:`~plantwatch.connectors.errors.StoreError` /
    :class:`~plantwatch.connectors.errors.StoreUnavailable`."""
    with driver_errors(), availability():
        conn = await asyncpg.connect(dsn, server_settings={"default_transaction_read_only": "on"})
        try:
            await schema_current(conn)
            yield conn
        finally:
            await conn.close()


async def migrate_dsn(dsn: str) -> list[int]:
    """``plantwatch db migrate``: apply the missing migrations over a connection of its own."""
    from .migrations import migrate
    with driver_errors(), availability():
        conn = await asyncpg.connect(dsn)
        try:
            return await migrate(conn)
        finally:
            await conn.close()
