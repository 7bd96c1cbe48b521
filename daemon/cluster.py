"""Several daemon instances sharing one site: partitions of collectors, held through leases.

* A collector belongs to partition ``crc32(collector) % partitions`` (collectors not listed in
  ``cluster.collectors``, when that list is given, belong to partition 0). All of a collector's
  sensors are therefore scored by whichever instance holds its partition.
* A partition is held through a row in ``partition_leases`` (holder, expiry, epoch): renewed every
  ``renew_interval``; an instance takes a lease only when it is free or expired, and bumps its
  epoch. Live instances heartbeat in ``cluster_members``; each aims at ``ceil(P / live)``
  partitions, releasing extras (after draining and saving their state) and taking free ones.
* Each partition has its own persistent MQTT session (client id ``{client_id}-p{k}``), so what
  is published while nobody holds the partition is queued by the broker and delivered to the
  next holder; connecting with the same client id also disconnects a previous holder that is
  still connected (the broker fences it).
* Detector state is saved per partition (``detector_state`` rows ``p{k}:{detector}``): only the
  rows of the sensors seen from the partition's collectors. A taker restores them before it
  subscribes, so it resumes warm, and reloads those sensors' alarms from the database.

Graceful stop (SIGTERM) drains, saves and releases at once: the others take over at their next
renewal (≤ ``renew_interval``). After SIGKILL the lease expires first: takeover within
``lease_seconds + renew_interval``.
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from typing import Any

import asyncpg
import numpy as np

from .config import ClusterConfig, Config
from .reconnect import Backoff

log = logging.getLogger("plantwatch.cluster")


def partition_of(collector: str, cc: ClusterConfig | None, listed: frozenset[str] | None = None) -> int:
    if cc is None or cc.partitions == 1:
        return 0
    if cc.collectors and collector not in (listed if listed is not None else frozenset(cc.collectors)):
        return 0
    return zlib.crc32(collector.encode()) % cc.partitions


def partition_topics(cfg: Config, k: int) -> tuple[list[str], bool]:
    """Topics partition ``k``'s session subscribes to, and whether they are wildcards that also
    bring other partitions' messages (which are then acknowledged and left alone)."""
    cc = cfg.cluster
    prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
    base = f"{prefix}/{cfg.site.id}"
    if cc is None or cc.partitions == 1 or not cc.collectors or k == 0:
        return [f"{base}/+/readings", f"{base}/+/robot"], cc is not None and cc.partitions > 1
    mine = [c for c in cc.collectors if partition_of(c, cc) == k]
    return [f"{base}/{c}/{kind}" for c in mine for kind in ("readings", "robot")], False


class Leases:
    """The lease table, seen from one instance."""

    def __init__(self, pool: asyncpg.Pool, site: str, cc: ClusterConfig):
        self.pool = pool
        self.site = site
        self.cc = cc
        self.me = cc.instance_id

    async def heartbeat(self) -> tuple[set[int], int]:
        """Renew membership and every lease still held; returns (held partitions, live instances)."""
        lease = self.cc.lease_seconds
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(
                "INSERT INTO cluster_members (site_id, instance_id, expires_at)"
                " VALUES ($1, $2, now() + make_interval(secs => $3))"
                " ON CONFLICT (site_id, instance_id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                self.site, self.me, lease)
            live = await c.fetchval("SELECT count(*) FROM cluster_members WHERE site_id = $1 AND expires_at > now()",
                                    self.site)
            rows = await c.fetch(
                "UPDATE partition_leases SET expires_at = now() + make_interval(secs => $3)"
                " WHERE site_id = $1 AND holder = $2 AND partition < $4 RETURNING partition",
                self.site, self.me, lease, self.cc.partitions)
        return {r["partition"] for r in rows}, int(live)

    async def holders(self) -> dict[int, str]:
        async with self.pool.acquire() as c:
            rows = await c.fetch("SELECT partition, holder FROM partition_leases WHERE site_id = $1 AND expires_at > now()",
                                 self.site)
        return {r["partition"]: r["holder"] for r in rows}

    async def try_take(self, k: int) -> int | None:
        """Take partition ``k`` if it is free or its lease expired; returns the new epoch."""
        async with self.pool.acquire() as c:
            return await c.fetchval(
                "INSERT INTO partition_leases (site_id, partition, holder, expires_at)"
                " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
                " ON CONFLICT (site_id, partition) DO UPDATE SET holder = EXCLUDED.holder,"
                "  expires_at = EXCLUDED.expires_at, epoch = partition_leases.epoch + 1, acquired_at = now()"
                " WHERE partition_leases.expires_at <= now() OR partition_leases.holder = EXCLUDED.holder"
                " RETURNING epoch", self.site, k, self.me, self.cc.lease_seconds)

    async def release(self, k: int) -> None:
        async with self.pool.acquire() as c:
            await c.execute("UPDATE partition_leases SET expires_at = now() - interval '1 second'"
                            " WHERE site_id = $1 AND partition = $2 AND holder = $3", self.site, k, self.me)

    async def leave(self) -> None:
        async with self.pool.acquire() as c:
            await c.execute("DELETE FROM cluster_members WHERE site_id = $1 AND instance_id = $2", self.site, self.me)

    def target(self, live: int) -> int:
        return math.ceil(self.cc.partitions / max(1, live))


# --- detector state of one partition ---------------------------------------------------------
def _rows_of(state: Any, n: int, sel: np.ndarray) -> Any:
    if isinstance(state, dict):
        return {k: _rows_of(v, n, sel) for k, v in state.items()}
    if isinstance(state, np.ndarray) and state.ndim >= 1 and state.shape[0] == n:
        return state[sel].copy()
    return None  # parameters and scalars stay with the instance


def _patch(cur: Any, saved: Any, n: int, sel: np.ndarray) -> Any:
    if isinstance(cur, dict) and isinstance(saved, dict):
        return {k: (_patch(v, saved[k], n, sel) if k in saved else v) for k, v in cur.items()}
    if isinstance(cur, np.ndarray) and isinstance(saved, np.ndarray) and cur.ndim >= 1 and cur.shape[0] == n:
        out = cur.copy()
        out[sel] = saved
        return out
    return cur


def partition_state(detectors, cols: np.ndarray) -> list[tuple[str, str, dict]]:
    """``(row id, fingerprint, state)`` of the sensors ``cols`` (global columns) per detector."""
    out = []
    for w in detectors.watches:
        loc = w.local[cols]
        has = loc >= 0
        sel = loc[has]
        out.append((w.cfg.id, w.fingerprint, {"cols": cols[has], "state": _rows_of(w.get_state(), len(w.cols), sel)}))
    out.append(("__last_t__", detectors._sensors_fp(), {"cols": cols, "last_t": detectors.last_t[cols].copy()}))  # noqa: SLF001
    return out


def restore_partition(detectors, saved: dict[str, tuple[str, dict]]) -> np.ndarray:
    """Patch the saved rows into the running detectors; returns the global columns restored."""
    cols_all: list[np.ndarray] = []
    for w in detectors.watches:
        fp_state = saved.get(w.cfg.id)
        if not fp_state or fp_state[0] != w.fingerprint:
            continue
        st = fp_state[1]
        cols = np.asarray(st["cols"], dtype=np.int64)
        sel = w.local[cols]
        try:
            w.set_state(_patch(w.get_state(), st["state"], len(w.cols), sel))
        except (KeyError, ValueError) as e:
            log.warning("detector %s: partition state not usable (%s)", w.cfg.id, e)
            continue
        cols_all.append(cols)
    lt = saved.get("__last_t__")
    if lt and lt[0] == detectors._sensors_fp():  # noqa: SLF001
        cols = np.asarray(lt[1]["cols"], dtype=np.int64)
        detectors.last_t[cols] = np.fmax(detectors.last_t[cols], lt[1]["last_t"])
        cols_all.append(cols)
    return np.unique(np.concatenate(cols_all)) if cols_all else np.empty(0, np.int64)


class ClusterRunner:
    """Holds this instance's share of the partitions: leases, one MQTT session per partition,
    per-partition detector state. Runs in place of the single ``Daemon._ingest`` task."""

    def __init__(self, daemon) -> None:
        self.d = daemon
        self.cfg: Config = daemon.cfg
        self.cc: ClusterConfig = daemon.cfg.cluster
        self.listed = frozenset(self.cc.collectors)
        self.tasks: dict[int, Any] = {}  # partition -> its ingest task
        self.held: set[int] = set()  # partitions whose lease this instance holds
        self.gen: dict[int, int] = {}
        self.stopping: dict[int, Any] = {}  # partition -> asyncio.Event: stop reading, drain, disconnect
        self.leases: Leases | None = None
        #: partition -> (time taken, epoch), for tests and logs
        self.taken: dict[int, tuple[float, int]] = {}

    def part_of(self, collector: str) -> int:
        return partition_of(collector, self.cc, self.listed)

    def _update_active(self) -> None:
        p = self.d.pipeline
        p.active = np.isin(p.col_part, np.fromiter(self.tasks, dtype=np.int16, count=len(self.tasks)))

    async def run(self) -> None:
        import asyncio
        import time

        p = self.d.pipeline
        n = len(self.cfg.sensors)
        p.part_of = self.part_of
        p.col_part = np.full(n, -1, dtype=np.int16)
        p.active = np.zeros(n, dtype=bool)
        self.leases = leases = Leases(self.d.store.pool, self.cfg.site.id, self.cc)
        P = self.cc.partitions
        start = zlib.crc32(self.cc.instance_id.encode()) % P
        try:
            while True:
                held, live = await leases.heartbeat()
                for k in [k for k in self.held if k not in held]:
                    log.warning("partition %d: lease lost (expired and taken); stopping it here", k)
                    self.held.discard(k)  # its state belongs to the new holder now: never saved from here
                    await self._stop_ingest(k)
                target = leases.target(live)
                if len(self.tasks) > target:
                    for k in sorted(self.tasks, key=lambda k: (k - start) % P)[target:]:
                        await self._hand_over(k)
                elif len(self.tasks) < target:
                    holders = await leases.holders()
                    for j in range(P):
                        k = (start + j) % P
                        if len(self.tasks) >= target:
                            break
                        if k in self.tasks or k in holders:
                            continue
                        epoch = await leases.try_take(k)
                        if epoch is not None:
                            await self._gain(k, epoch)
                            self.taken[k] = (time.time(), epoch)
                await asyncio.sleep(self.cc.renew_interval)
        finally:
            for k in list(self.tasks):
                await self._stop_ingest(k, drain=True)

    async def _gain(self, k: int, epoch: int) -> None:
        import asyncio

        d, p = self.d, self.d.pipeline
        saved = await d.store.load_detector_states(prefix=f"p{k}:")
        cols = restore_partition(p.detectors, saved)
        p.col_part[cols] = k
        # the previous holder advanced the partition's sequence numbers: start from the stored ones
        p.restore_sequences({c: q for c, q in (await d.store.last_sequences()).items() if self.part_of(c) == k})
        if len(cols):
            ids = set(p.reg.db_id[cols].tolist())
            p.alarms.load([dict(r) for r in await d.store.load_alarms() if r["sensor_id"] in ids])
        self.gen[k] = self.gen.get(k, 0) + 1
        self.held.add(k)
        self.stopping[k] = asyncio.Event()
        self.tasks[k] = asyncio.create_task(self._ingest(k, self.gen[k]), name=f"ingest-p{k}")
        self._update_active()
        log.info("partition %d taken (epoch %d): %d sensors restored warm", k, epoch, len(cols))

    async def _stop_ingest(self, k: int, *, drain: bool = False) -> None:
        """Stop a partition's intake. ``drain``: it stops reading, waits until what it received is
        committed and acknowledged on its own connection, then disconnects (an acknowledgement
        after the disconnect is lost and the broker would redeliver stored readings). Without
        ``drain`` (the lease is lost: the new holder has the session) it is cancelled."""
        import asyncio
        import contextlib

        t = self.tasks.pop(k, None)
        stopping = self.stopping.pop(k, None)
        if t is not None and drain and stopping is not None and not t.done():
            stopping.set()
            with contextlib.suppress(Exception):
                await t
        self.gen[k] = self.gen.get(k, 0) + 1  # its messages can no longer be acknowledged
        if t is not None and not t.done():
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._update_active()

    async def _hand_over(self, k: int) -> None:
        """Graceful release: stop intake, commit what was received, save state, free the lease."""
        await self._stop_ingest(k, drain=True)
        await self.d.pipeline.drain()
        await self.save(k)
        self.held.discard(k)
        await self.leases.release(k)
        log.info("partition %d released", k)

    async def save(self, k: int) -> None:
        p = self.d.pipeline
        cols = np.flatnonzero(p.col_part == k)
        states = [(f"p{k}:{i}", fp, st) for i, fp, st in partition_state(p.detectors, cols)]
        await self.d.store.save_detector_states(states)

    async def snapshot(self) -> None:
        for k in list(self.held):
            await self.save(k)

    async def finish(self) -> None:
        """At stop, after the writers drained: save, release everything, leave."""
        for k in list(self.tasks):
            await self._stop_ingest(k)
        if self.leases is None:
            return
        held, _ = await self.leases.heartbeat()  # only what is still ours: never overwrite a taker's state
        for k in sorted(held & self.held):
            await self.save(k)
            await self.leases.release(k)
        self.held.clear()
        await self.leases.leave()

    def _ack(self, sub, msg, k: int, gen: int) -> None:
        if self.gen.get(k) == gen:
            sub.ack(msg)

    async def _ingest(self, k: int, gen: int) -> None:
        import asyncio
        import contextlib
        from functools import partial

        import aiomqtt

        from plantwatch.connectors.mqtt import Subscriber

        from .service import raise_if_cancelling, read_until

        d, p = self.d, self.d.pipeline
        topics, shared = partition_topics(self.cfg, k)
        mq = self.cfg.mqtt
        stopping = self.stopping.get(k) or asyncio.Event()
        backoff = Backoff()

        async def read(sub) -> None:
            async for msg in sub.messages():
                if self.gen.get(k) != gen:
                    return
                topic = str(msg.topic)
                ack = partial(self._ack, sub, msg, k, gen)
                if shared:
                    parts = topic.rsplit("/", 2)
                    if len(parts) == 3 and self.part_of(parts[1]) != k:
                        p.defer_ack(ack)  # another partition's collector: its holder stores it
                        continue
                payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else str(msg.payload).encode()
                p.submit(topic, bytes(payload), ack)
                if p.due():
                    await p.flush()

        while not stopping.is_set():
            try:
                async with Subscriber(d.ep.broker, client_id=f"{d.client_id}-p{k}", topics=topics,
                                      keepalive=mq.keepalive if mq else 30,
                                      receive_window=mq.receive_window if mq else 1000) as sub:
                    raise_if_cancelling()  # the MQTT client's connect can swallow a cancellation
                    d.m.connected.set(1)
                    d.connect_problems.ok(f"partition {k}")
                    await d.broker_sessions.connected(f"{d.client_id}-p{k}", sub.session_present)
                    d.ready.set()
                    p.detectors.restart_clocks(time.time())  # readings may have been missed until now
                    backoff.reset()
                    log.info("partition %d: subscribed to %s", k, ", ".join(topics[:4]) + (" …" if len(topics) > 4 else ""))
                    await read_until(read(sub), stopping, name=f"mqtt-read-p{k}")  # an MqttError: reconnect below
                    if stopping.is_set():
                        await p.drain()  # committed and acknowledged before the disconnect
                    return
            except aiomqtt.MqttError as e:
                if stopping.is_set():
                    return
                delay = backoff.next()
                d.connect_problems.failed(e, delay, what=f"partition {k}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
