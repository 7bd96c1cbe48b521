"""Several daemon instances sharing one site: partitions of collectors and Sparkplug B nodes, held
through fenced leases.

* A collector belongs to partition ``crc32(collector) % partitions`` (``daemon/ingest/partitions.py``;
  collectors not listed in ``cluster.collectors``, when that list is given, belong to partition 0);
  a Sparkplug node the config maps metrics of to ``crc32("group/node") % partitions``, any other
  node to partition 0. A node's session (births, last ``seq``) is restored with its partition.
* Each partition's MQTT session is an :class:`~plantwatch.daemon.ingest.intake.Intake`, the same
  as a single instance's; what the write path asks of partitions is
  :class:`~plantwatch.daemon.ingest.partitioning.ClusterPartitioning`, kept up to date here.
* A partition is held through a row in ``partition_leases`` (holder instance and *incarnation*,
  expiry, epoch; SQL in ``connectors/leases.py``), renewed every ``renew_interval``. Each process
  makes a new incarnation token at start: a lease is renewed only by the incarnation that took
  it and only under the epoch it took it with, so a process restarted with the same instance id
  never inherits its predecessor's leases: it takes them over at once (a new epoch), restores
  their state and starts their intake. A lease of this process without a running intake is
  released at the next heartbeat.
* Taking a lease bumps its epoch. Every write transaction carries the epochs of the partitions
  it writes for and the database refuses it when one is no longer current (``FencedOut``): a
  frozen or cut-off instance can never write, and so never publish, for a partition it lost.
  A refused unit is not acknowledged (the new holder's session has its messages) and its alarm
  changes are not published; its partitions are stopped here.
* Live instances heartbeat in ``cluster_members``; each aims at ``ceil(P / live)`` partitions,
  releasing extras (after draining and saving their state) and taking free ones; a partition
  seen free on two heartbeats in a row is taken by anyone, whatever its share.
* Each partition has its own persistent MQTT session (client id ``{client_id}-p{k}``), so what
  is published while nobody holds the partition is queued by the broker and delivered to the
  next holder; connecting with the same client id also disconnects a previous holder.
* A database that does not answer is a pause: each lease call has a timeout, a failed heartbeat
  is logged and retried, intake and detection go on; leases still held when the database
  returns are kept (renewed under the same epoch), lost ones are stopped here.

Graceful stop (SIGTERM) drains, saves and releases at once: the others take over at their next
renewal (≤ ``renew_interval``). After SIGKILL or a freeze the lease expires first: takeover
within ``lease_seconds + renew_interval``.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from typing import Any

import numpy as np

from plantwatch.connectors.leases import DB_UNAVAILABLE, Leases, lease_pool, read_partition_readings
from plantwatch.connectors.sparkplug.host import HostState
from plantwatch.connectors.store import Store

from plantwatch.daemon.config.model import ClusterConfig, Config
from plantwatch.daemon.ingest.intake import Intake, IntakeDeps
from plantwatch.daemon.ingest.partitioning import ClusterPartitioning
from plantwatch.daemon.ingest.partitions import partition_state, restore_partition

log = logging.getLogger("plantwatch.cluster")


class ClusterRunner:
    """Holds this process's share of the partitions: leases, one MQTT session per partition
    (:class:`~plantwatch.daemon.ingest.intake.Intake`, as the single instance's), per-partition
    detector state and Sparkplug B node sessions. Runs in place of the single intake task; what
    the write path asks of partitions is ``parts`` (given to the pipeline at its construction)."""

    def __init__(self, cfg: Config, parts: ClusterPartitioning, store: Store, dsn: str, intake: IntakeDeps,
                 client_id: str) -> None:
        self.cfg = cfg
        self.cc: ClusterConfig = cfg.cluster
        self.parts = parts
        self.ownership = parts.ownership
        self.store = store
        self.dsn = dsn
        self.intake = intake
        self.pipeline = intake.pipeline
        self.client_id = client_id
        self.tasks: dict[int, Any] = {}  # partition -> its ingest task
        self.intakes: dict[int, Intake] = {}
        self.leases: Leases | None = None  # on its own connections (connectors/leases.lease_pool), made in run()
        self.stopping: dict[int, asyncio.Event] = {}  # partition -> stop reading, drain, disconnect
        #: partition -> (time taken, epoch), for tests and logs
        self.taken: dict[int, tuple[float, int]] = {}
        self._free_before: set[int] = set()
        self._released: dict[int, float] = {}  # partition -> monotonic time released here (no churn)
        self._trust_after = 0.0  # monotonic: take no expired lease of another holder before this
        self._part_cols: dict[int, np.ndarray] | None = None

    def part_of(self, key: str) -> int:
        return self.parts.part_of(key)

    @property
    def held(self) -> set[int]:
        return set(self.ownership.epochs())

    def _update_active(self) -> None:
        self.parts.set_active(list(self.tasks))

    # --- the loop -----------------------------------------------------------------------------------
    async def run(self) -> None:
        pool = await lease_pool(self.dsn)
        self.leases = Leases(pool, self.cfg.site.id, self.cc.instance_id, partitions=self.cc.partitions,
                             lease_seconds=self.cc.lease_seconds)
        try:
            while True:
                try:
                    await self._round()
                    away = self.parts.db_answered(True)
                    if away is not None:
                        log.warning("cluster: database answering again after %.1f s; held: %s",
                                    away, sorted(self.held) or "none")
                except DB_UNAVAILABLE as e:
                    if self.parts.db_down_since is None:
                        self.parts.db_answered(False)
                        log.error("cluster: lease heartbeat failed (%s: %s); intake goes on, retrying every %g s",
                                  type(e).__name__, e, self.cc.renew_interval)
                self.parts.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.parts.wake.wait(), self.cc.renew_interval)
        finally:
            for k in list(self.tasks):
                await self._stop_ingest(k, drain=True)

    async def _round(self) -> None:
        leases, P = self.leases, self.cc.partitions
        if self.parts.fenced:
            for k in sorted(self.parts.fenced):
                await self._stop_ingest(k)
            # A refused unit also held the deferred acknowledgements of wildcard sessions (other
            # partitions' messages, which were never its to store): they were dropped with it, and
            # unacknowledged they would fill the session's receive window. Reconnecting makes the
            # broker deliver them again.
            for k in [k for k in self.tasks if self.parts.partitioner.topics(k)[1]]:
                await self._stop_ingest(k)
                self._start_ingest(k)
        self.parts.fenced.clear()
        for k in [k for k, t in self.tasks.items() if t.done()]:  # an intake that ended: no lease without it
            self.ownership.lost(k)
            await self._stop_ingest(k)
        sent = time.monotonic()
        held = self.ownership.epochs()
        beat = await leases.heartbeat(held)
        if self.parts.db_down_since is not None:  # the first renewal after the database was away
            self._trust_after = sent + self.cc.lease_seconds + self.cc.renew_interval
        self.ownership.renewed(beat.renewed, sent)
        for k in [k for k in held if k not in beat.renewed]:
            log.warning("partition %d: lease lost (expired and taken over); stopping it here", k)
            self.ownership.lost(k)  # its state belongs to the new holder now: never saved from here
            await self._stop_ingest(k)
        for k in [k for k in self.tasks if k not in self.ownership]:
            await self._stop_ingest(k)
        target = math.ceil(P / max(1, beat.live))
        start = zlib.crc32(self.cc.instance_id.encode()) % P
        if len(self.tasks) > target:
            for k in sorted(self.tasks, key=lambda k: (k - start) % P)[target:]:
                await self._hand_over(k)
            return
        holders = await leases.holders()
        free = {k for k in range(P) if k not in holders}
        mine_before = [k for k, h in holders.items() if leases.is_predecessor(h)]
        now = time.monotonic()
        orphans = {k for k in free & self._free_before if now - self._released.get(k, -1e9) > 3 * self.cc.renew_interval}
        self._free_before = free
        if now < self._trust_after:
            # this process could not reach the database a moment ago: a lease that expired
            # meanwhile says nothing about its holder (it could not renew either); leave the
            # holders a lease's time to renew before taking anything that is theirs
            return
        order = sorted(mine_before) + [(start + j) % P for j in range(P) if (start + j) % P in free]
        for k in order:
            if k in self.tasks:
                continue
            if len(self.tasks) >= target and k not in mine_before and k not in orphans:
                continue
            sent = time.monotonic()
            epoch = await leases.try_take(k)
            if epoch is not None:
                await self._gain(k, epoch, sent)

    async def _gain(self, k: int, epoch: int, sent: float) -> None:
        p, store = self.pipeline, self.store
        saved = await store.load_detector_states(prefix=f"p{k}:")
        # the previous holder advanced the partition's sequence numbers: start from the stored ones
        seqs = {c: q for c, q in (await store.last_sequences()).items() if self.part_of(c) == k}
        alarms = await store.load_alarms()
        sp = self.intake.sparkplug
        if sp is not None:  # the partition's Sparkplug node sessions, as its last holder stored them
            nodes = [n for n in await store.sparkplug_sessions(self.cfg.sparkplug.groups)
                     if self.part_of(f"{n.group}/{n.node}") == k]
            sp.sessions.forget(lambda key: self.part_of(f"{key[0]}/{key[1]}") != k)
            sp.restore(nodes)
        # What this instance remembers of the partition from an earlier holding (or from units the
        # database refused) is not the truth: the saved state and the committed alarms are.
        before = np.flatnonzero(self.parts.col_part == k)
        p.detectors.last_t[before] = -np.inf
        cols = restore_partition(p.detectors, saved)
        self.parts.assign(cols, k)
        p.restore_sequences(seqs)
        await self._replay(k, cols)
        ids = set(p.reg.db_id[np.union1d(before, cols)].tolist())
        book = p.alarms.alarms
        for key in [key for key in book if key[1] in ids]:
            del book[key]
        p.alarms.load([dict(r) for r in alarms if r["sensor_id"] in ids])
        self.ownership.gained(k, epoch, sent)
        self._start_ingest(k)
        self.taken[k] = (time.time(), epoch)
        log.info("partition %d taken (epoch %d): %d sensors restored warm", k, epoch, len(cols))

    async def _replay(self, k: int, restored: np.ndarray) -> None:
        """Bring the partition's detectors from the saved state up to the last committed reading:
        score the stored readings since the saved state's newest scored time, and drop what they
        change (their alarm changes were committed with them, in the same transactions). Without
        it, an alarm raised after the last snapshot by a holder that died would never clear
        here: the restored detector would not know its condition was active."""
        p = self.pipeline
        cols = self._cols_of(k)
        if not len(cols):
            return
        lt = p.detectors.last_t[restored] if len(restored) else np.empty(0)
        lt = lt[np.isfinite(lt)]
        now = time.time()
        since = float(lt.min()) if len(lt) else now - 2 * self.cfg.state.snapshot_interval
        since = max(since, now - 3600.0)
        sid, t, val, q = await read_partition_readings(self.store.pool, p.reg.db_id[cols].tolist(), since, now + 1.0)
        if len(sid):
            col = np.fromiter((self.parts.col_of[int(x)] for x in sid), dtype=np.int64, count=len(sid))
            dropped = p.detectors.process(col, t, val, quality=q)
            log.info("partition %d: %d stored reading(s) since %.1f s ago replayed (%d condition change(s) already"
                     " committed)", k, len(sid), now - since, len(dropped))

    def _cols_of(self, k: int) -> np.ndarray:
        """Columns of the sensors whose collector or Sparkplug node belongs to partition ``k`` (robot
        channels excepted)."""
        if self._part_cols is None:
            parts = np.array([self.parts.partitioner.part_of_sensor(s) for s in self.cfg.sensors], dtype=np.int64)
            fixed = np.array([s.kind != "robot" for s in self.cfg.sensors], dtype=bool)
            self._part_cols = {j: np.flatnonzero((parts == j) & fixed) for j in range(self.cc.partitions)}
        return self._part_cols.get(k, np.empty(0, np.int64))

    def _start_ingest(self, k: int) -> None:
        sp = self.cfg.sparkplug
        partitioner = self.parts.partitioner
        topics, shared = partitioner.topics(k)
        intake = Intake(self.intake, client_id=f"{self.client_id}-p{k}", topics=topics, what=f"partition {k}",
                        mine=partitioner.mine(k) if shared else None,
                        host=HostState(f"{sp.host_id}-p{k}") if sp is not None and sp.host_id else None,
                        on_session=lambda up: (self.parts.session_up.add if up else self.parts.session_up.discard)(k))
        self.intakes[k] = intake
        self.stopping[k] = asyncio.Event()
        self.tasks[k] = asyncio.create_task(intake.run(self.stopping[k]), name=f"ingest-p{k}")
        self._update_active()

    async def _stop_ingest(self, k: int, *, drain: bool = False) -> None:
        """Stop a partition's intake. ``drain``: it stops reading, waits until what it received is
        committed and acknowledged on its own connection, then disconnects (an acknowledgement
        after the disconnect is lost and the broker would redeliver stored readings). Without
        ``drain`` (the lease is lost: the new holder has the session) it is cancelled."""
        t = self.tasks.pop(k, None)
        stopping = self.stopping.pop(k, None)
        if t is not None and drain and stopping is not None and not t.done():
            stopping.set()
            await asyncio.wait({t})
        intake = self.intakes.pop(k, None)
        if intake is not None:
            intake.invalidate()  # its messages can no longer be acknowledged
        if t is not None and not t.done():
            t.cancel()
            await asyncio.wait({t})
        if t is not None and not t.cancelled() and t.exception() is not None:
            e = t.exception()
            log.error("partition %d: intake ended with %s: %s", k, type(e).__name__, e)
        self._update_active()

    async def _hand_over(self, k: int) -> None:
        """Graceful release: stop intake, commit what was received, save state, free the lease."""
        await self._stop_ingest(k, drain=True)
        await self.pipeline.drain()
        epoch = self.ownership.epoch(k)
        if epoch is None:  # refused meanwhile: another holder's already
            return
        await self.save(k)
        self.ownership.lost(k)
        await self.leases.release(k, epoch)
        self._released[k] = time.monotonic()
        log.info("partition %d released", k)

    async def save(self, k: int) -> None:
        cols = np.flatnonzero(self.parts.col_part == k)
        states = [(f"p{k}:{i}", fp, st) for i, fp, st in partition_state(self.pipeline.detectors, cols)]
        await self.store.save_detector_states(states)

    async def snapshot(self) -> None:
        """Save the state of each partition whose lease is still valid by this process's clock (a
        process that was frozen must not overwrite the state its partitions' new holder saves)."""
        for k in sorted(self.held):
            if self.ownership.may_publish(k):
                await self.save(k)

    async def finish(self) -> None:
        """At stop, after the writers drained: save, release everything, leave. A database that
        does not answer leaves the leases to expire by themselves."""
        for k in list(self.tasks):
            await self._stop_ingest(k)
        if self.leases is None:
            return
        try:
            beat = await self.leases.heartbeat(self.ownership.epochs())  # only what is still ours
            for k in sorted(beat.renewed):
                await self.save(k)
                await self.leases.release(k, beat.renewed[k])
                self.ownership.lost(k)
            await self.leases.leave()
        except DB_UNAVAILABLE as e:
            log.error("cluster: leases not released at stop (%s: %s); they expire within %g s",
                      type(e).__name__, e, self.cc.lease_seconds)
        finally:
            self.leases.pool.terminate()
