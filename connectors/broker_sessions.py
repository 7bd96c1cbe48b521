"""The daemon's record of its persistent MQTT sessions (table ``mqtt_sessions``), so that a
session the broker lost is noticed also across a daemon restart: a client id that had a session
before expects the broker to still hold it. Failures are plantwatch's store errors
(``connectors/errors.py``): :class:`StoreUnavailable` when the database is not there."""
from __future__ import annotations

import asyncpg

from .errors import availability, driver_errors


async def known(pool: asyncpg.Pool, site: str, client_id: str) -> bool:
    """Whether ``client_id`` had its session established at the broker before."""
    with driver_errors(), availability():
        async with pool.acquire() as c:
            return bool(await c.fetchval("SELECT true FROM mqtt_sessions WHERE site_id = $1 AND client_id = $2",
                                         site, client_id))


async def record(pool: asyncpg.Pool, site: str, client_id: str, *, lost: bool) -> None:
    """A connect of ``client_id`` was accepted (``lost``: and found its session gone)."""
    with driver_errors(), availability():
        async with pool.acquire() as c:
            await c.execute(
                "INSERT INTO mqtt_sessions (site_id, client_id, lost, last_lost)"
                " VALUES ($1, $2, CASE WHEN $3::boolean THEN 1 ELSE 0 END, CASE WHEN $3::boolean THEN now() END)"
                " ON CONFLICT (site_id, client_id) DO UPDATE SET last_connected = now(),"
                "  lost = mqtt_sessions.lost + EXCLUDED.lost, last_lost = coalesce(EXCLUDED.last_lost, mqtt_sessions.last_lost)",
                site, client_id, lost)
