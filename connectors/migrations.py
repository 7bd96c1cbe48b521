"""Versioned schema migrations, applied at start in order, each in its own transaction.

Files are ``migrations/NNN_name.sql``. Applied versions are recorded in ``schema_migrations``;
an advisory lock keeps two daemons starting at once from applying the same migration twice.
TimescaleDB is detected from ``pg_extension`` (the administrator runs ``CREATE EXTENSION
timescaledb`` once, see ``connectors/db_setup.py``); the SQL files branch on ``pg_extension`` so the
same files build plain-PostgreSQL tables otherwise. Nothing here reads superuser-only settings
(``shared_preload_libraries`` needs ``pg_read_all_settings``): the daemon runs as an ordinary role
that owns its database.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_LOCK = 0x706C616E  # "plan"
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with plantwatch, in order."""
    out = []
    for f in (Path(__file__).parent / "migrations").iterdir():
        m = _NAME.match(f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return out


async def timescaledb_status(conn: asyncpg.Connection) -> dict[str, str | bool]:
    """Whether TimescaleDB is enabled in this database, its version and license edition, and
    whether the server has it installed and preloaded (``installable``)."""
    ext = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    # The loader registers its server-wide settings only when preloaded, and pg_settings lists
    # them to every role (unlike shared_preload_libraries itself); CREATE EXTENSION without the
    # loader preloaded ends the session.
    installable = bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        " AND EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.max_background_workers')"))
    license_ = None
    if ext:
        license_ = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    return {"available": bool(ext), "version": ext or "", "license": license_ or "", "installable": installable}


async def _enable_timescaledb(conn: asyncpg.Connection) -> None:
    """On a new database of a server that preloads TimescaleDB but has it not yet enabled here,
    try ``CREATE EXTENSION`` (a trusted extension: the database owner may). When that is refused,
    the schema is built on plain PostgreSQL, and the log says so."""
    status = await timescaledb_status(conn)
    if status["available"] or not status["installable"]:
        return
    try:
        async with conn.transaction():
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError as e:
        log.warning("TimescaleDB is installed on the server but cannot be enabled in this database (%s); "
                    "building plain PostgreSQL tables. For hypertables an administrator runs "
                    "CREATE EXTENSION timescaledb in this database before plantwatch's first start", e)


async def migrate(conn: asyncpg.Connection, *, timescaledb: bool = True) -> list[int]:
    """Bring the schema up to date; returns the versions applied now. ``timescaledb=False``
    builds a new database's tables on plain PostgreSQL even where the extension could be enabled."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if not done and timescaledb:  # a new database: hypertables only if the extension is there now
            await _enable_timescaledb(conn)
        applied = []
        for version, name, sql in available():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
