"""Slice digests computed in the daemon from the committed rows (daemon/ingest/seal_digests.py)
equal the database's recomputation (what ``audit verify`` does) on a real PostgreSQL/TimescaleDB,
for awkward times and values; slices the daemon did not see whole fall back to the database."""
from __future__ import annotations

import asyncpg
import numpy as np

from plantwatch.connectors import inspection, seal
from plantwatch.connectors.store import ReadingRows
from plantwatch.daemon.ingest.seal_digests import SliceDigests

from .helpers import superuser_dsn
from .test_alarm_db import Rig, rig  # noqa: F401 - fixture

W = 10  # slice seconds
T0 = 1_700_000_000.0  # a slice start (multiple of W)
AWKWARD = np.array([-0.0, np.nan, 1e308, -1e308, 5e-324, np.inf, -np.inf, 0.1 + 0.2, 1.0, 42.0])


def units(ids: list[int]) -> list[ReadingRows]:
    """Several units per slice, arriving out of order within the slice, with sub-microsecond
    float times (two that round to neighbouring microseconds), and values -0.0, NaN, ±inf, huge,
    denormal; quality codes including negative ones."""
    out = []
    rng = np.random.default_rng(7)
    for k in range(6):
        base = T0 + (5 - k) * 3.3  # later units carry earlier times: arrival out of order
        t = np.repeat(base + np.array([0.1234567, 0.0000004, 0.0000016, 1.9999996, 2.4999995]), len(ids))
        sid = np.tile(np.array(ids, np.int32), 5)
        v = rng.choice(AWKWARD, len(t))
        q = rng.choice(np.array([0, 1, -3, 192, 32767], np.int16), len(t))
        out.append(ReadingRows(sid, t, v, q))
    return out


async def _db_digests(rig: Rig, start_us: int) -> dict:
    async with rig.store.pool.acquire() as conn:
        got = await seal.digests(conn, "readings", start_us, start_us + W * 1_000_000, W)
    return {sid: v for (_, sid), v in got.items()}


async def test_daemon_digests_equal_the_database_recomputation(rig: Rig):  # noqa: F811
    ids = sorted(k[1] for k in rig.key.values())[:4]
    acc = SliceDigests(W, T0 - 30)
    for u in units(ids):
        res = await rig.store.write(u)
        assert res.duplicates == 0
        acc.committed(u, whole=True)
    starts = [int(T0 * 1e6) + i * W * 1_000_000 for i in (0, 1, 2)]
    for i, s in enumerate(starts):
        mine = acc.take(s)
        assert mine is not None and mine == await _db_digests(rig, s), s
        assert bool(mine) == (i < 2)  # rows in the first two slices, none in the third
    # NaN and -0.0 were stored as such (the comparison is over their bits)
    async with rig.store.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM readings WHERE value = 'NaN'") > 0
        assert await conn.fetchval("SELECT count(*) FROM readings WHERE float8send(value) = float8send(-0.0::float8)") > 0


async def test_sealing_uses_daemon_digests_and_verify_still_finds_a_change(rig: Rig, db):  # noqa: F811
    ids = sorted(k[1] for k in rig.key.values())[:4]
    early = ReadingRows(np.array(ids, np.int32), np.full(len(ids), T0 - W + 1.5), np.ones(len(ids)),
                        np.zeros(len(ids), np.int16))
    await rig.store.write(early)  # written "before this daemon started": its slice is the database's
    acc = SliceDigests(W, T0 - 0.5)
    acc.committed(early, whole=True)
    for u in units(ids):
        await rig.store.write(u)
        acc.committed(u, whole=True)
    sealer = rig.store.sealer(width=W, horizon=0, local=acc.take)
    assert await sealer.seal(T0 + 4 * W) == 5
    assert (sealer.sealed_local, sealer.sealed_db) == (4, 1)
    async with rig.store.pool.acquire() as conn:
        by = await conn.fetch("SELECT body->>'by' AS by, count(*) AS n FROM audit_log WHERE kind = 'seal'"
                              " AND body->>'table' = 'readings' GROUP BY 1")
    assert {r["by"]: r["n"] for r in by} == {"daemon": 2, "database": 1}  # entries for slices with rows
    v = await inspection.verify_audit(db)
    assert v.ok, [str(p) for p in v.problems]
    admin = await asyncpg.connect(superuser_dsn(db))  # the superuser: the tamper trigger lets it through
    try:
        await admin.execute("UPDATE readings SET value = 0 WHERE sensor_id = $1 AND time >= to_timestamp($2)"
                           " AND time < to_timestamp($3)", ids[1], T0 + W, T0 + 2 * W)
    finally:
        await admin.close()
    v = await inspection.verify_audit(db)
    assert any(f"id {ids[1]}): rows changed" in str(p) for p in v.problems), [str(p) for p in v.problems]


async def test_slices_not_seen_whole_fall_back_to_the_database(rig: Rig):  # noqa: F811
    ids = sorted(k[1] for k in rig.key.values())[:2]
    acc = SliceDigests(W, T0)
    u = units(ids)
    await rig.store.write(u[0])
    acc.committed(u[0], whole=True)
    res = await rig.store.write(u[0])  # redelivered: every row a duplicate
    acc.committed(u[0], whole=res.duplicates == 0)
    s = int((T0 + W) * 1e6)  # the slice of u[0]
    assert acc.take(s) is None  # tainted: the database decides
    assert acc.take(s - W * 1_000_000) is None  # already behind the taken slice
    off = SliceDigests(W, T0, enabled=False)  # several instances
    off.committed(u[1], whole=True)
    assert off.take(int((T0 + W) * 1e6)) is None


async def test_the_slice_of_the_start_is_whole_only_if_nothing_of_it_is_stored(rig: Rig):  # noqa: F811
    ids = sorted(k[1] for k in rig.key.values())[:1]
    assert await seal.first_whole_slice(rig.store.pool, T0 + 3, W) == T0  # nothing stored yet
    await rig.store.write(ReadingRows(np.array(ids, np.int32), np.array([T0 + 1]), np.ones(1), np.zeros(1, np.int16)))
    assert await seal.first_whole_slice(rig.store.pool, T0 + 3, W) == T0 + W  # a previous run wrote into it
    assert await seal.first_whole_slice(rig.store.pool, T0 + W + 3, W) == T0 + W
