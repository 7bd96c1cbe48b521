"""The alarm room's reads of the store: the operator API's queries (alarms, incidents, the audit
check), the book's state at start, and the incident report's facts. One object over the store's
pool, so ``daemon/alarms/`` holds no SQL and no pool. A database that is not there raises
:class:`~plantwatch.connectors.errors.StoreUnavailable`; any other error of the driver
:class:`~plantwatch.connectors.errors.StoreError`."""
from __future__ import annotations

from typing import Any

import asyncpg

from . import alarm_db, audit, console_queries, incident_facts
from .errors import availability, driver_errors


class AlarmRecords:
    """Alarm, incident and audit reads over ``pool`` (the store's)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def _run(self, read, *args: Any, **kw: Any) -> Any:
        with driver_errors(), availability():
            async with self._pool.acquire() as conn:
                return await read(conn, *args, **kw)

    # --- the book at start ------------------------------------------------------------------------
    async def book_state(self, positions: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every alarm's row and the open incidents, as committed; records each area's position
        (``positions``) on the way."""
        async def read(conn: asyncpg.Connection):
            rows = await alarm_db.load_alarm_rows(conn)
            incidents = await alarm_db.load_open_incidents(conn)
            await alarm_db.sync_positions(conn, positions)
            return rows, incidents
        return await self._run(read)

    # --- the operator API -------------------------------------------------------------------------
    async def list_alarms(self, *, include_normal: bool = False) -> list[dict[str, Any]]:
        return await self._run(alarm_db.list_alarms, include_normal=include_normal)

    async def get_alarm(self, alarm_id: int) -> dict[str, Any] | None:
        return await self._run(alarm_db.get_alarm, alarm_id)

    async def alarm_key(self, alarm_id: int) -> tuple[str, int] | None:
        return await self._run(alarm_db.alarm_key, alarm_id)

    async def list_incidents(self, *, sensor: str | None = None, event: int | None = None) -> list[dict[str, Any]]:
        return await self._run(alarm_db.list_incidents, sensor=sensor, event=event)

    async def get_incident(self, incident_id: int) -> dict[str, Any] | None:
        return await self._run(alarm_db.get_incident, incident_id)

    async def verify_audit(self) -> audit.Verdict:
        """The audit chain checked end to end, with the records that must pair with it."""
        async def read(conn: asyncpg.Connection) -> audit.Verdict:
            v = await audit.verify(conn)
            v.problems += await audit.verify_records(conn)
            return v
        return await self._run(read)

    # --- the operator console (connectors/console_queries.py) --------------------------------------
    async def console_summary(self) -> list[dict[str, Any]]:
        return await self._run(console_queries.summary)

    async def console_row(self, alarm_id: int) -> dict[str, Any] | None:
        return await self._run(console_queries.summary_row, alarm_id)

    async def trend(self, sensor_tag: str, t0: float, t1: float) -> list[tuple[float, float]]:
        return await self._run(console_queries.trend, sensor_tag, t0, t1)

    async def alarm_keys(self, alarm_ids: list[int]) -> dict[int, tuple[str, int]]:
        return await self._run(console_queries.alarm_keys, alarm_ids)

    async def incident_alarm_ids(self, incident_id: int) -> list[int] | None:
        return await self._run(console_queries.incident_alarm_ids, incident_id)

    # --- the incident report ----------------------------------------------------------------------
    async def incident_facts(self, incident_id: int) -> dict[str, Any]:
        """What the incident report shows (``LookupError`` for an unknown incident)."""
        return await self._run(incident_facts.gather, incident_id)
