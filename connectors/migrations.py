"""Versioned schema migrations, applied at start in order, each in its own transaction.

Files are ``migrations/NNN_name.sql``. Applied versions are recorded in ``schema_migrations``;
an advisory lock keeps two daemons starting at once from applying the same migration twice.
TimescaleDB is enabled first when the server has it preloaded; the SQL files branch on
``pg_extension`` so the same files build plain-PostgreSQL tables otherwise.
"""
from __future__ import annotations

import re
from pathlib import Path

import asyncpg

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
    """Whether TimescaleDB is usable here, its version and license edition."""
    preloaded = await conn.fetchval("SELECT current_setting('shared_preload_libraries', true)") or ""
    ext = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    license_ = None
    if ext:
        license_ = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    return {"available": bool(ext), "version": ext or "", "license": license_ or "",
            "preloaded": "timescaledb" in preloaded}


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Bring the schema up to date; returns the versions applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        preloaded = await conn.fetchval("SELECT current_setting('shared_preload_libraries', true)") or ""
        if "timescaledb" in preloaded:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
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
