"""The database side of plantwatch's measurement rigs (``plantwatch bench``, ``plantwatch faults``,
the backtest benchmark): each rig runs on a throwaway database of its own and reads it back to
measure what the daemon did (rows stored, how fresh, alarms recorded, partition leases), loads it
with generated readings, and times the dashboards' queries. The daemon itself never uses this:
it goes through :class:`~plantwatch.connectors.store.Store`.

One :class:`RigDb` is one connection; every method returns plain Python or numpy values (times
as Unix seconds), so the rigs in ``daemon/lab/`` hold no SQL and no driver type.
"""
from __future__ import annotations

import asyncio
import io
from datetime import datetime
from types import TracebackType
from typing import Self

import asyncpg
import numpy as np
from .pgcopy import pg_datetime

#: what a query of a database that is stopped, frozen or restarting raises (asyncpg reports a
#: connection closed under a running query as an InternalClientError)
QUERY_ERRORS: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError, asyncpg.PostgresError,
                                                 asyncpg.InterfaceError, asyncpg.InternalClientError)

#: the tables a rig counts rows of
COUNTED = ("readings", "readings_1m", "readings_1h", "robot_readings", "dead_letters", "alarm_changes", "events")

READING_COLUMNS = ["time", "sensor_id", "value", "quality"]

#: the dashboards' queries (what a Grafana panel over 7 days asks for), timed by ``bench --queries``:
#: an area's sensors, hourly, over [from, to): closed hours from readings_1h, the current hour
#: from readings_1m ($1 area, $2 from, $3 to)
AREA_SQL = """
WITH ids AS (SELECT id FROM sensors WHERE area_id = $1)
SELECT bucket, sensor_id, avg, min, max FROM readings_1h
 WHERE sensor_id IN (SELECT id FROM ids) AND bucket >= $2 AND bucket < date_trunc('hour', $3::timestamptz)
UNION ALL
SELECT date_trunc('hour', bucket), sensor_id, sum(avg * n) / sum(n), min(min), max(max) FROM readings_1m
 WHERE sensor_id IN (SELECT id FROM ids) AND bucket >= greatest($2, date_trunc('hour', $3::timestamptz)) AND bucket < $3
 GROUP BY 1, 2
ORDER BY 1, 2
"""

#: the whole site, one series per area, hourly, over [from, to)
SITE_SQL = """
SELECT b, area_id, sum(s) / sum(n) AS avg, min(mn) AS min, max(mx) AS max FROM (
  SELECT h.bucket AS b, h.sensor_id, h.avg * h.n AS s, h.n, h.min AS mn, h.max AS mx FROM readings_1h h
   WHERE h.bucket >= $1 AND h.bucket < date_trunc('hour', $2::timestamptz)
  UNION ALL
  SELECT date_trunc('hour', m.bucket), m.sensor_id, m.avg * m.n, m.n, m.min, m.max FROM readings_1m m
   WHERE m.bucket >= greatest($1, date_trunc('hour', $2::timestamptz)) AND m.bucket < $2
) x JOIN sensors s ON s.id = x.sensor_id
GROUP BY b, area_id ORDER BY b, area_id
"""

#: one sensor, raw readings, last hour (the drill-down panel)
RAW_SQL = "SELECT time, value FROM readings WHERE sensor_id = $1 AND time >= $2 AND time < $3 ORDER BY time"

DASHBOARD_SQL = {"area": AREA_SQL, "site": SITE_SQL, "sensor_raw": RAW_SQL}

#: binary COPY of (int4, float8) rows: field count, then length + value per field
_ROW = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("sid", ">i4"), ("l2", ">i4"), ("t", ">f8")])
_HEADER = 19  # signature (11), flags (4), header extension length (4)

_NEWEST_OF = ("SELECT min(t) FROM (SELECT (SELECT extract(epoch FROM time)::float8 FROM readings"
              " WHERE sensor_id = s ORDER BY time DESC LIMIT 1) AS t FROM unnest($1::int[]) AS s) x")


def _ts(t: float) -> datetime:
    return pg_datetime(t)


def _database_of(dsn: str) -> str:
    return dsn.rsplit("/", 1)[-1].split("?")[0]


class RigDb:
    """One connection to a rig's database."""

    def __init__(self, conn: asyncpg.Connection):
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str, *, timeout: float | None = None) -> RigDb:
        conn = await (asyncio.wait_for(asyncpg.connect(dsn), timeout) if timeout else asyncpg.connect(dsn))
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    def terminate(self) -> None:
        """Drop the connection at once (after an error, without waiting for the server)."""
        self._conn.terminate()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # --- what was stored ------------------------------------------------------------------------
    async def count(self, table: str = "readings") -> int:
        if table not in COUNTED:
            raise ValueError(f"not a counted table: {table!r} (one of {', '.join(COUNTED)})")
        return int(await self._conn.fetchval(f"SELECT count(*) FROM {table}"))

    async def sensor_ids(self, tags: list[str] | None = None) -> dict[str, int]:
        """Sensor tag -> database id (of ``tags`` only, when given)."""
        if tags is None:
            rows = await self._conn.fetch("SELECT id, tag FROM sensors")
        else:
            rows = await self._conn.fetch("SELECT id, tag FROM sensors WHERE tag = ANY($1::text[])", tags)
        return {r["tag"]: r["id"] for r in rows}

    async def stored_times(self, since: float) -> tuple[np.ndarray, np.ndarray]:
        """(sensor id, epoch time) of every reading stored at or after ``since`` (one second of
        slack before it), by binary COPY: millions of rows in seconds."""
        buf = io.BytesIO()
        await self._conn.copy_from_query("SELECT sensor_id, extract(epoch FROM time)::float8 FROM readings"
                                         " WHERE time >= to_timestamp($1)", since - 1.0, output=buf, format="binary")
        raw = buf.getvalue()
        body = raw[_HEADER:len(raw) - 2]  # trailer: int16 -1
        rows = np.frombuffer(body, dtype=_ROW)
        return rows["sid"].astype(np.int64), rows["t"].astype(np.float64)

    async def times_after(self, sensor_ids: list[int], after: float) -> list[tuple[int, float]]:
        """(sensor id, epoch time) of the readings of ``sensor_ids`` stored later than ``after``."""
        rows = await self._conn.fetch("SELECT sensor_id, extract(epoch FROM time)::float8 AS t FROM readings"
                                      " WHERE sensor_id = ANY($1::int[]) AND time > $2", sensor_ids, _ts(after))
        return [(r["sensor_id"], r["t"]) for r in rows]

    async def newest_of(self, sensor_ids: list[int]) -> float | None:
        """The oldest of the newest stored readings of ``sensor_ids`` (the one furthest behind)."""
        return await self._conn.fetchval(_NEWEST_OF, sensor_ids)

    async def alarm_raises(self, detector: str) -> list[tuple[int, float]]:
        """(sensor id, epoch time) of every raise (change to ``unack``) of ``detector``'s alarms."""
        rows = await self._conn.fetch(
            "SELECT a.sensor_id, extract(epoch FROM c.time)::float8 AS t FROM alarm_changes c"
            " JOIN alarms a ON a.id = c.alarm_id WHERE a.detector_id = $1 AND c.to_state = 'unack'", detector)
        return [(r["sensor_id"], r["t"]) for r in rows]

    async def active_alarm_sensors(self, detector: str) -> set[int]:
        return {r["sensor_id"] for r in await self._conn.fetch(
            "SELECT sensor_id FROM alarms WHERE detector_id = $1 AND active", detector)}

    async def partition_leases(self) -> dict[int, tuple[str, int, float]]:
        """Partition -> (holder, epoch, expiry as epoch seconds)."""
        rows = await self._conn.fetch(
            "SELECT partition, holder, epoch, extract(epoch FROM expires_at)::float8 AS x FROM partition_leases")
        return {r["partition"]: (r["holder"], r["epoch"], r["x"]) for r in rows}

    # --- changing the data (the rigs' own databases only) --------------------------------------
    async def delete_newest_readings(self, after: float, n: int) -> int:
        """Delete the ``n`` newest readings stored after ``after`` (a checker proving it sees a loss)."""
        rows = await self._conn.fetch("SELECT sensor_id, time FROM readings WHERE time >= to_timestamp($1)"
                                      " ORDER BY time DESC LIMIT $2", after, n)
        for r in rows:
            await self._conn.execute("DELETE FROM readings WHERE sensor_id = $1 AND time = $2", r["sensor_id"], r["time"])
        return len(rows)

    async def copy_readings(self, data: bytes, *, transaction: bool = False) -> None:
        """Binary COPY of encoded (time, sensor_id, value, quality) rows (connectors/pgcopy.py)."""
        if transaction:
            async with self._conn.transaction():
                await self._copy(data)
        else:
            await self._copy(data)

    async def _copy(self, data: bytes) -> None:
        await self._conn.copy_to_table("readings", source=io.BytesIO(data), format="binary", columns=READING_COLUMNS)

    async def insert_reading(self, t: float, sensor_id: int, value: float) -> None:
        """One reading, one statement, autocommit (the naive baseline a benchmark compares with)."""
        await self._conn.execute("INSERT INTO readings (time, sensor_id, value, quality) VALUES ($1, $2, $3, 0)"
                                 " ON CONFLICT DO NOTHING", _ts(t), sensor_id, value)

    async def analyze(self) -> None:
        await self._conn.execute("ANALYZE readings; ANALYZE readings_1m; ANALYZE readings_1h; ANALYZE sensors")

    async def create_database(self, name: str) -> None:
        await self._conn.execute(f'CREATE DATABASE "{name}"')

    async def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name``, terminating its sessions."""
        await self._conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def dashboard_query(self, name: str, *args: object) -> int:
        """Run one of :data:`DASHBOARD_SQL` (times as Unix seconds) and return how many rows it gave."""
        return len(await self._conn.fetch(DASHBOARD_SQL[name], *[_ts(a) if isinstance(a, float) else a for a in args]))



async def create_database(admin_dsn: str, name: str) -> None:
    async with await RigDb.connect(admin_dsn) as db:
        await db.create_database(name)


async def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop the database ``dsn`` names (terminating its sessions)."""
    async with await RigDb.connect(admin_dsn) as db:
        await db.drop_database(_database_of(dsn))
