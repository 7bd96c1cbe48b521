"""The rollups plantwatch maintains itself (``readings_1m``, ``readings_1h``: works on the Apache
edition of TimescaleDB and on plain PostgreSQL), and the minutes each write touched: dirty for
the rollups, and marked for the sealer (``connectors/seal.py``) so that a reading arriving after
its slice was sealed gets a sealed delta."""
from __future__ import annotations

from datetime import datetime

import asyncpg
import numpy as np
from .pgcopy import pg_datetime


def _ts(t: float) -> datetime:
    return pg_datetime(t)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class Rollups:
    """Base of the store: rollups over ``self.pool`` and the written minutes."""

    pool: asyncpg.Pool

    def __init__(self) -> None:
        #: minutes (Unix s // 60) written since their rollup was last computed, and hours whose
        #: minutes were re-rolled since the hour's own rollup (see ``refresh_dirty``)
        self.dirty_minutes: set[int] = set()
        self.dirty_hours: set[int] = set()
        #: (earliest, latest) reading time of each write since the sealer last took them
        #: (``take_seal_marks``): a write below the sealed point gets a sealed delta
        self.seal_marks: list[tuple[float, float]] = []

    def _mark_dirty(self, t: np.ndarray, *, rollup: bool = True) -> None:
        t_min, t_max = float(t.min()), float(t.max())
        self.seal_marks.append((t_min, t_max))
        if not rollup:
            return
        lo, hi = int(t_min // 60), int(t_max // 60)
        if hi - lo <= 3:
            self.dirty_minutes.update(range(lo, hi + 1))
        else:  # a batch spanning many minutes (catching up): its distinct minutes only
            self.dirty_minutes.update(np.unique((t // 60).astype(np.int64)).tolist())

    def take_seal_marks(self) -> list[tuple[float, float]]:
        """The reading time spans written since the last call (each after its commit)."""
        marks, self.seal_marks = self.seal_marks, []
        return marks

    async def refresh_rollups(self, since: float, until: float) -> int:
        """Recompute the 1-minute rollups of the buckets in [since, until)."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "INSERT INTO readings_1m (bucket, sensor_id, n, avg, min, max, last)"
                " SELECT date_trunc('minute', time) AS b, sensor_id, count(*), avg(value), min(value), max(value),"
                " (array_agg(value ORDER BY time DESC))[1]"
                " FROM readings WHERE time >= date_trunc('minute', $1::timestamptz) AND time < $2"
                " GROUP BY b, sensor_id"
                " ON CONFLICT (sensor_id, bucket) DO UPDATE SET n = EXCLUDED.n, avg = EXCLUDED.avg,"
                " min = EXCLUDED.min, max = EXCLUDED.max, last = EXCLUDED.last",
                _ts(since), _ts(until))
        return _count(status)

    async def refresh_hourly(self, since: float, until: float) -> int:
        """Recompute the 1-hour rollups of the hours in [since, until) from the 1-minute ones."""
        async with self.pool.acquire() as conn:
            status = await conn.execute(
                "INSERT INTO readings_1h (bucket, sensor_id, n, avg, min, max, last)"
                " SELECT date_trunc('hour', bucket) AS b, sensor_id, sum(n), sum(avg * n) / sum(n), min(min),"
                " max(max), (array_agg(last ORDER BY bucket DESC))[1]"
                " FROM readings_1m WHERE bucket >= date_trunc('hour', $1::timestamptz) AND bucket < $2"
                " GROUP BY b, sensor_id"
                " ON CONFLICT (sensor_id, bucket) DO UPDATE SET n = EXCLUDED.n, avg = EXCLUDED.avg,"
                " min = EXCLUDED.min, max = EXCLUDED.max, last = EXCLUDED.last",
                _ts(since), _ts(until))
        return _count(status)

    async def refresh_dirty(self, now: float, *, settle: float = 5.0) -> int:
        """Roll up what was written since the last call: each closed minute that received readings
        (a minute is closed ``settle`` seconds after its end), then each closed hour whose minutes
        changed. Every reading is aggregated about once, instead of re-aggregating a fixed trailing
        window at every call. Late readings mark their minute (and hour) dirty again."""
        ready = sorted(m for m in self.dirty_minutes if (m + 1) * 60 <= now - settle)
        n = 0
        for lo, hi in _runs(ready):
            n += await self.refresh_rollups(lo * 60.0, (hi + 1) * 60.0)
            self.dirty_minutes.difference_update(range(lo, hi + 1))
            self.dirty_hours.update(range(lo // 60, hi // 60 + 1))
        for lo, hi in _runs(sorted(h for h in self.dirty_hours if (h + 1) * 3600 <= now - settle - 60)):
            n += await self.refresh_hourly(lo * 3600.0, (hi + 1) * 3600.0)
            self.dirty_hours.difference_update(range(lo, hi + 1))
        return n

    async def mark_unrolled(self, now: float, *, lookback: float = 7200.0) -> None:
        """At start: readings written after the newest rollup (before a crash) become dirty."""
        async with self.pool.acquire() as conn:
            last = await conn.fetchval("SELECT extract(epoch FROM max(bucket))::float8 FROM readings_1m"
                                       " WHERE bucket > $1", _ts(now - lookback))
        t0 = last if last is not None else now - lookback
        self.dirty_minutes.update(range(int(t0 // 60), int(now // 60) + 1))


def _runs(sorted_ints: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7, 8] -> [(1, 3), (7, 8)]"""
    out: list[tuple[int, int]] = []
    for x in sorted_ints:
        if out and x == out[-1][1] + 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out
