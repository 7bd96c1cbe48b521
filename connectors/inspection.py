"""The record read over a read-only connection of its own, for the command line (audit,
incidents, the alarm system's health): the schema is checked, never migrated
(``connectors/readonly.py``); the connection is closed after."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from . import alarm_db, audit, health, seal
from .readonly import session


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection of its own, closed after (for the connection-taking query modules)."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def verify_audit(dsn: str, since: datetime | None = None, until: datetime | None = None,
                       head: tuple[int, str, dict[int, str]] | None = None) -> audit.Verdict:
    """The audit chain checked end to end; the tables against what the chain recorded; the
    sealed readings of [since, until) (all when not given) against their chained digests; and,
    given a head exported earlier, the chain against it."""
    async with session(dsn) as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            v = await audit.verify(conn)
            v.problems += await audit.verify_records(conn)
            st, slices = await seal.verify_readings(conn, since, until)
            v.problems += [audit.Problem(p.seq, p.kind, str(p)) for p in slices]
            v.problems += await seal.verify_dead_letters(conn, st)
            if head is not None:
                v.problems += audit.against_earlier(await audit.hashes(conn, 1, max(head[0], v.last_seq or 0)), head)
        v.sealed = (st.sealed_from, st.sealed_until)
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
