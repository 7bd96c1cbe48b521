"""What a database administrator creates once for plantwatch, and what plantwatch does itself.

The daemon runs as an ordinary role (NOSUPERUSER, NOCREATEROLE, no ``pg_read_all_settings``)
that owns its database. An administrator creates, once:

* the daemon's role and the read-only role Grafana logs in with (``plantwatch_reader``, with
  its read-only session defaults and statement timeout),
* the database, owned by the daemon's role,
* ``CREATE EXTENSION timescaledb`` in that database, on a server that preloads TimescaleDB.

At every start the daemon applies its migrations to the objects it owns: tables, hypertables
(TimescaleDB lets a table's owner make it one), views, and the grants of SELECT to
``plantwatch_reader``. :func:`admin_sql` is the administrator's part as SQL (deploy/README.md
shows it); :func:`provision` runs it, for tests and scripted installs.
"""
from __future__ import annotations

import asyncpg

READER = "plantwatch_reader"

#: the reader's session defaults (a guard against accidents; its privileges are the barrier)
READER_SETTINGS = {
    "default_transaction_read_only": "on",
    "statement_timeout": "10s",
    "idle_in_transaction_session_timeout": "60s",
    "lock_timeout": "2s",
}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_role(role: str, options: str, password: str | None) -> str:
    pw = f" PASSWORD {_literal(password)}" if password is not None else ""
    return (f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_literal(role)}) THEN "
            f"CREATE ROLE {_ident(role)} {options}{pw}; END IF; END $$")


def admin_sql(*, role: str = "plantwatch", database: str = "plantwatch", timescaledb: bool = True,
              password: str | None = None, reader_password: str | None = None) -> tuple[list[str], list[str]]:
    """(statements in any database of the cluster, statements in plantwatch's new database)."""
    cluster = [
        _create_role(role, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS", password),
        _create_role(READER, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
                             " CONNECTION LIMIT 20", reader_password),
        *(f"ALTER ROLE {READER} SET {k} = {_literal(v)}" for k, v in READER_SETTINGS.items()),
        f"CREATE DATABASE {_ident(database)} OWNER {_ident(role)}",
    ]
    in_database = ["CREATE EXTENSION IF NOT EXISTS timescaledb"] if timescaledb else []
    return cluster, in_database


async def provision(admin_dsn: str, database_dsn: str, *, role: str, database: str, timescaledb: bool) -> None:
    """Run :func:`admin_sql` as a superuser: ``admin_dsn`` points at an existing database (e.g.
    ``postgres``), ``database_dsn`` at the new database, both as the administrator."""
    cluster, in_database = admin_sql(role=role, database=database, timescaledb=timescaledb)
    conn = await asyncpg.connect(admin_dsn)
    try:
        for stmt in cluster:
            try:
                await conn.execute(stmt)
            except asyncpg.UniqueViolationError:
                pass  # a role created at the same moment by another session of the same cluster
    finally:
        await conn.close()
    if in_database:
        conn = await asyncpg.connect(database_dsn)
        try:
            for stmt in in_database:
                await conn.execute(stmt)
        finally:
            await conn.close()
