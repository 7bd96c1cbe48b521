"""The record read over a connection of its own, for the command line (audit, incidents, the
alarm system's health): the schema is brought up to date first, the connection closed after."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from . import alarm_db, audit, health
from .migrations import migrate


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection of its own, closed after (for the connection-taking query modules)."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def session(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """:func:`connection` with the schema brought up to date first."""
    async with connection(dsn) as conn:
        await migrate(conn)
        yield conn


async def verify_audit(dsn: str) -> audit.Verdict:
    """The audit chain checked end to end, and the tables against what the chain recorded."""
    async with session(dsn) as conn:
        v = await audit.verify(conn)
        v.problems += await audit.verify_records(conn)
        return v


async def export_audit(dsn: str, t_from: datetime | None, t_to: datetime | None) -> list[str]:
    async with session(dsn) as conn:
        return list(await audit.export(conn, t_from, t_to))


async def list_incidents(dsn: str, limit: int) -> list[dict[str, Any]]:
    async with session(dsn) as conn:
        return await alarm_db.list_incidents(conn, limit)


async def get_incident(dsn: str, incident_id: int) -> dict[str, Any] | None:
    async with session(dsn) as conn:
        return await alarm_db.get_incident(conn, incident_id)


async def alarm_health(dsn: str, t_from: datetime, t_to: datetime) -> dict[str, Any]:
    async with session(dsn) as conn:
        return await health.report(conn, t_from, t_to)
