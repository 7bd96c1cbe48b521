"""Partition leases and write fencing for several daemon instances sharing one site (the SQL
behind ``daemon/ingest/cluster.py``; tables in migrations 021 and 050).

* A lease row (``partition_leases``) names its holder by ``instance_id`` **and** ``incarnation``,
  a token made by each process at start. Only the incarnation that took a lease renews it, and
  only while its epoch is still the one it took: a process restarted with the same instance id
  never inherits its predecessor's leases; it takes them over (a new epoch), restores the
  partition's state and starts its intake, like any other taker.
* Taking a lease bumps its epoch; a trigger copies the epoch to ``partition_fences``. Every write
  transaction for a partition ends with :func:`check_fence`: the database locks the fences of
  the partitions written for and refuses the transaction when an epoch is no longer current
  (Kleppmann's fencing tokens; Temporal's shard range id). A takeover waits for writes that
  already hold a fence and makes every later write of the old epoch fail.
* Every call has a timeout: a database that does not answer is an error the caller handles
  (a pause), never a hang.
"""
from __future__ import annotations

import asyncio
import io
import uuid
from dataclasses import dataclass, field

import asyncpg
import numpy as np

from . import pgcopy
from .errors import DRIVER_UNAVAILABLE, StoreUnavailable

#: a database that is not there (refused, lost, shutting down, not answering in time): a pause.
#: The driver's own errors (what lease and state calls still raise) and the store's
#: :class:`~plantwatch.connectors.errors.StoreUnavailable`.
DB_UNAVAILABLE = (*DRIVER_UNAVAILABLE, StoreUnavailable)

#: SQLSTATE raised by ``partition_fence_check`` for a stale epoch
FENCE_SQLSTATE = "PWF01"


class FencedOut(Exception):
    """The database refused a write: this instance no longer holds these partitions' epochs."""

    def __init__(self, partitions: list[int]):
        super().__init__(f"stale epoch: partition(s) {', '.join(map(str, partitions))} taken over by another holder")
        self.partitions = partitions


@dataclass(frozen=True, slots=True)
class Fence:
    """The epochs a write transaction was made under: ``{partition: epoch}`` of one site."""

    site: str
    epochs: dict[int, int] = field(default_factory=dict)
    #: how long the session may sit idle in the transaction after taking the fences (seconds)
    idle_timeout: float = 2.0


async def check_fence(conn: asyncpg.Connection, fence: Fence) -> None:
    """Lock ``fence``'s partitions and check their epochs, inside the caller's transaction;
    raises :class:`FencedOut` (the transaction must then roll back)."""
    parts = sorted(fence.epochs)
    if not parts:
        return
    try:
        await conn.execute("SELECT partition_fence_check($1, $2::int[], $3::bigint[], $4)", fence.site, parts,
                           [fence.epochs[k] for k in parts], f"{max(1, int(fence.idle_timeout * 1000))}ms")
    except asyncpg.PostgresError as e:
        if getattr(e, "sqlstate", None) == FENCE_SQLSTATE:
            detail = getattr(e, "detail", "") or ""
            raise FencedOut([int(x) for x in detail.split(",") if x.strip()] or parts) from None
        raise


def new_incarnation() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True, slots=True)
class Holder:
    instance: str
    incarnation: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat found: the leases renewed (``{partition: epoch}``) and the live instances."""

    renewed: dict[int, int]
    live: int


async def lease_pool(dsn: str) -> asyncpg.Pool:
    """The lease calls' own connections: a renewal never waits behind the writers' COPYs for a
    connection of the store's pool (a catch-up after a restart keeps all of those busy). Opened
    without connecting (a database that is away at start is a pause, not a failure)."""
    return await asyncpg.create_pool(dsn, min_size=0, max_size=2, command_timeout=30)


class Leases:
    """The lease table seen from one running process (``instance_id`` + ``incarnation``)."""

    def __init__(self, pool: asyncpg.Pool, site: str, instance_id: str, *, partitions: int, lease_seconds: float,
                 incarnation: str | None = None, timeout: float | None = None):
        self.pool = pool
        self.site = site
        self.me = instance_id
        self.incarnation = incarnation or new_incarnation()
        self.partitions = partitions
        self.lease = lease_seconds
        #: every call gives up after this long (a database that does not answer is a pause)
        self.timeout = timeout if timeout is not None else max(1.0, lease_seconds / 2)

    async def heartbeat(self, held: dict[int, int]) -> Beat:
        """Renew membership and the leases of ``held`` (``{partition: epoch}`` of the partitions
        whose intake runs here), each only if this incarnation still holds it under that epoch;
        a lease of this incarnation that is not in ``held`` (no intake for it) is released."""
        parts = sorted(held)
        async with asyncio.timeout(self.timeout):
            async with self.pool.acquire() as c, c.transaction():
                await c.execute(
                    "INSERT INTO cluster_members (site_id, instance_id, incarnation, expires_at)"
                    " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
                    " ON CONFLICT (site_id, instance_id) DO UPDATE SET expires_at = EXCLUDED.expires_at,"
                    " incarnation = EXCLUDED.incarnation",
                    self.site, self.me, self.incarnation, self.lease)
                live = await c.fetchval(
                    "SELECT count(*) FROM cluster_members WHERE site_id = $1 AND expires_at > now()", self.site)
                rows = await c.fetch(
                    "UPDATE partition_leases l SET expires_at = now() + make_interval(secs => $4)"
                    " FROM unnest($5::int[], $6::bigint[]) AS h(p, e)"
                    " WHERE l.site_id = $1 AND l.holder = $2 AND l.incarnation = $3 AND l.partition = h.p"
                    " AND l.epoch = h.e AND l.partition < $7 RETURNING l.partition, l.epoch",
                    self.site, self.me, self.incarnation, self.lease, parts, [held[k] for k in parts], self.partitions)
                await c.execute(
                    "UPDATE partition_leases SET expires_at = now() - interval '1 second'"
                    " WHERE site_id = $1 AND holder = $2 AND incarnation = $3 AND expires_at > now()"
                    " AND NOT (partition = ANY ($4::int[]))", self.site, self.me, self.incarnation, parts)
        return Beat({r["partition"]: r["epoch"] for r in rows}, int(live))

    async def holders(self) -> dict[int, Holder]:
        """Partitions whose lease is unexpired, with their holder."""
        async with asyncio.timeout(self.timeout):
            async with self.pool.acquire() as c:
                rows = await c.fetch("SELECT partition, holder, incarnation, epoch FROM partition_leases"
                                     " WHERE site_id = $1 AND expires_at > now()", self.site)
        return {r["partition"]: Holder(r["holder"], r["incarnation"], r["epoch"]) for r in rows}

    def is_predecessor(self, h: Holder) -> bool:
        """A lease held under this instance id by another incarnation: a process that has ended
        (instance ids are unique per running instance), whose leases are taken over at once."""
        return h.instance == self.me and h.incarnation != self.incarnation

    async def try_take(self, k: int) -> int | None:
        """Take partition ``k`` if it is free, expired, or held by this instance's predecessor;
        returns the new epoch (bumped, so every write of an older holder is refused from now)."""
        async with asyncio.timeout(self.timeout):
            async with self.pool.acquire() as c:
                return await c.fetchval(
                    "INSERT INTO partition_leases (site_id, partition, holder, incarnation, expires_at)"
                    " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))"
                    " ON CONFLICT (site_id, partition) DO UPDATE SET holder = EXCLUDED.holder,"
                    "  incarnation = EXCLUDED.incarnation, expires_at = EXCLUDED.expires_at,"
                    "  epoch = partition_leases.epoch + 1, acquired_at = now()"
                    " WHERE partition_leases.expires_at <= now()"
                    "  OR (partition_leases.holder = EXCLUDED.holder AND partition_leases.incarnation <> EXCLUDED.incarnation)"
                    " RETURNING epoch", self.site, k, self.me, self.incarnation, self.lease)

    async def release(self, k: int, epoch: int) -> None:
        async with asyncio.timeout(self.timeout):
            async with self.pool.acquire() as c:
                await c.execute("UPDATE partition_leases SET expires_at = now() - interval '1 second'"
                                " WHERE site_id = $1 AND partition = $2 AND holder = $3 AND incarnation = $4"
                                " AND epoch = $5", self.site, k, self.me, self.incarnation, epoch)

    async def leave(self) -> None:
        async with asyncio.timeout(self.timeout):
            async with self.pool.acquire() as c:
                await c.execute("DELETE FROM cluster_members WHERE site_id = $1 AND instance_id = $2"
                                " AND incarnation = $3", self.site, self.me, self.incarnation)


async def read_partition_readings(pool: asyncpg.Pool, sensor_ids: list[int], start: float, end: float,
                                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(sensor_id, t, value, quality) of the readings of ``sensor_ids`` in [start, end), in time
    order (binary COPY): what a taker replays through its detectors from the partition's saved
    state up to the last committed reading."""
    buf = io.BytesIO()
    async with pool.acquire() as conn:
        await conn.copy_from_query(
            "SELECT time, sensor_id, value, quality FROM readings WHERE sensor_id = ANY ($3::int[])"
            " AND time >= $1 AND time < $2 ORDER BY time",
            pgcopy.pg_datetime(start), pgcopy.pg_datetime(end), sensor_ids,
            output=buf, format="binary")
    data = buf.getvalue()
    if len(data) <= len(pgcopy.HEADER) + len(pgcopy.TRAILER):
        return np.empty(0, np.int32), np.empty(0), np.empty(0), np.empty(0, np.int16)
    t, sid, val, q = pgcopy.decode_fixed(data, ["timestamptz", "int4", "float8", "int2"])
    return sid, t, val, q
