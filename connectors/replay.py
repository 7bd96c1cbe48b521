"""What a backtest replays besides fixed readings: robot readings and declared transfers.

Both are read as the live daemon received them (connectors own the SQL): robot readings with their
site position, declared transfers with the quantity the daemon credited (the tank's inventory
unit) and when they were declared.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import numpy as np
from .pgcopy import pg_datetime


def _ts(t: float) -> datetime:
    return pg_datetime(t)


@dataclass(slots=True)
class RobotChunk:
    sensor_id: np.ndarray  # int32
    t: np.ndarray
    value: np.ndarray
    quality: np.ndarray  # int16
    pos: np.ndarray  # (n, 2) site x, y

    def __len__(self) -> int:
        return len(self.t)


@dataclass(frozen=True, slots=True)
class DeclaredTransfer:
    sensor_id: int
    start: float
    end: float
    quantity: float  # in the tank's inventory unit, as the daemon credited it
    declared_at: float


async def read_robot(pool: asyncpg.Pool, start: float, end: float) -> RobotChunk:
    """Robot readings of [start, end), in time order."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT sensor_id, extract(epoch FROM time)::float8 AS t, value, quality, x, y FROM robot_readings"
            " WHERE time >= $1 AND time < $2 ORDER BY time", _ts(start), _ts(end))
    if not rows:
        return RobotChunk(np.empty(0, np.int32), np.empty(0), np.empty(0), np.empty(0, np.int16), np.empty((0, 2)))
    a = np.array([tuple(r) for r in rows], dtype=np.float64)
    return RobotChunk(a[:, 0].astype(np.int32), a[:, 1], a[:, 2], a[:, 3].astype(np.int16), a[:, 4:6].copy())


async def read_transfers(pool: asyncpg.Pool, start: float, end: float) -> list[DeclaredTransfer]:
    """Declarations whose transfer overlaps [start, end) or that were declared in it, by declaration time."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT sensor_id, extract(epoch FROM start_at)::float8 AS s, extract(epoch FROM end_at)::float8 AS e,"
            " quantity, extract(epoch FROM declared_at)::float8 AS d FROM transfers"
            " WHERE (end_at >= $1 AND start_at < $2) OR (declared_at >= $1 AND declared_at < $2)"
            " ORDER BY declared_at, id", _ts(start), _ts(end))
    return [DeclaredTransfer(int(r["sensor_id"]), r["s"], r["e"], float(r["quantity"]), r["d"]) for r in rows]
