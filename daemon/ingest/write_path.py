"""The pipeline's write path: writers take units off the queue and commit each in one
transaction; an unavailable database is retried with backoff until it answers, a refusal of the
data is split (daemon/ingest/splitting.py), a unit fenced out by another instance is left to it;
after a commit the units' MQTT messages are acknowledged strictly in arrival order. Also the
write path's health, read by /healthz, the metrics thread and the stall watch.
Mixed into :class:`~plantwatch.daemon.ingest.pipeline.Pipeline`, which holds the state below.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

from plantwatch.connectors.errors import StoreRefused
from plantwatch.connectors.leases import FencedOut
from plantwatch.connectors.store import AlarmOp, CollectorSeen, DeadLetter, ReadingRows, RobotRows, Store, WriteResult

from plantwatch.daemon.alarms.release import DecidedChanges
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.ingest.alarm_journal import Journaling
from plantwatch.daemon.ingest.partitioning import Partitioning
from plantwatch.daemon.ingest.seal_digests import SliceDigests
from plantwatch.daemon.ingest.splitting import SplitOnDataError
from plantwatch.daemon.ingest.unit import Pending, Unit
from plantwatch.daemon.metrics import Metrics

log = logging.getLogger("plantwatch.daemon.ingest.pipeline")


class WritePath(SplitOnDataError):
    """Writes the units the pipeline makes; the state it shares with the pipeline's intake:"""

    cfg: Config
    store: Store
    m: Metrics
    units: asyncio.Queue[Unit | None]
    journal: Journaling | None
    partitioning: Partitioning
    release: DecidedChanges
    committed: asyncio.Event
    on_commit: Callable[[Unit], None] | None
    seal_digests: SliceDigests | None
    last_write_error: str | None
    fenced_units: int
    _pending: Pending
    _in_flight: deque[Unit]
    _wait_since: float | None
    _wait_ref: float | None
    _committed_lag: float

    # --- the write path's health ---------------------------------------------------------------
    def _track_waiting(self) -> None:
        first = self._in_flight[0] if self._in_flight else None
        self._wait_since = first.received if first is not None else None
        self._wait_ref = (first.newest or first.received) if first is not None else None

    def waiting_for(self, now: float | None = None) -> float:
        """Seconds the oldest received message (or operator action) has waited for its commit."""
        now = time.time() if now is None else now
        since = [x for x in (self._wait_since, self._pending.since if self._pending.acks else None) if x]
        return max(0.0, now - min(since)) if since else 0.0

    def lag(self) -> float:
        """``plantwatch_ingest_lag_seconds``, computed when scraped: the commit lag of the newest
        reading at the last commit, and while something waits for its commit, the time since the
        timestamp of the oldest waiting unit's newest reading (since the arrival of messages not
        yet in a unit), so the gauge keeps growing through a stalled or stopped database."""
        try:
            now = time.time()
            refs = [x for x in (self._wait_ref, self._pending.since if self._pending.acks else None) if x]
            return max(self._committed_lag, now - min(refs)) if refs else self._committed_lag
        except Exception as e:  # noqa: BLE001 - scraped from another thread while the loop changes state
            self.m.background_failures.labels("lag_gauge").inc()  # counted and logged: a scrape must still answer
            log.warning("ingest lag not computed: %s: %s", type(e).__name__, e)
            return self._committed_lag

    def health(self, now: float | None = None) -> tuple[bool, str]:
        waited = self.waiting_for(now)
        if waited >= self.cfg.ingest.stall_after:
            return False, (f"database write stalled: the oldest received message has waited {waited:.0f} s for its"
                           f" commit ({len(self._in_flight)} unit(s) in flight)"
                           + (f"; last write error: {self.last_write_error}" if self.last_write_error else ""))
        if self.last_write_error is not None:
            return False, f"the last database write failed: {self.last_write_error}"
        return True, "ok"

    async def watch_stalls(self, every: float = 0.5) -> None:
        """Log a stalled write path: a warning once a message has waited ``ingest.stall_after``
        seconds for its commit, repeated every ``stall_after`` seconds while it lasts, and a note
        when writes resume."""
        limit = self.cfg.ingest.stall_after
        warned_at = 0.0
        while True:
            await asyncio.sleep(min(every, limit / 2))
            now = time.time()
            _, reason = self.health(now)
            if self.waiting_for(now) >= limit:
                if now - warned_at >= limit:
                    warned_at = now
                    log.warning("%s; %d message(s) received and not yet committed", reason,
                                sum(u.n_messages for u in list(self._in_flight)) + len(self._pending.acks))
            elif warned_at:
                warned_at = 0.0
                log.warning("database writes resumed")

    # --- writers --------------------------------------------------------------------------------
    async def writer(self) -> None:
        """Consume units until a ``None`` sentinel; run several of these for parallel writes."""
        while True:
            unit = await self.units.get()
            if unit is None:
                self.units.task_done()
                return
            try:
                await self._write(unit)
            finally:
                self.units.task_done()

    async def _write(self, unit: Unit) -> None:
        t0 = time.perf_counter()
        split = False
        try:
            try:
                res = await self._store(unit, unit.readings, unit.robot, unit.dead, unit.collectors, unit.ops,
                                        unit.transfers)
            except StoreRefused as e:
                log.error("write of unit %d refused (%s); splitting its %d message(s) and %d alarm operation(s)",
                          unit.seq, e, len(unit.items), len(unit.ops))
                split = True
                res = await self._bisect(unit, list(range(len(unit.items))), unit.ops, e)
        except FencedOut as e:
            self._fenced(unit, e)
            return
        now = time.time()
        self.last_write_error = None
        self.m.write_seconds.observe(time.perf_counter() - t0)
        self.m.batches.inc()
        self.m.stored.labels("readings").inc(res.inserted)
        self.m.stored.labels("robot_readings").inc(res.robot_inserted)
        self.m.duplicates.inc(res.duplicates)
        self.m.dead_lettered.inc(res.dead_lettered)
        for s in unit.sent:
            self.m.store_delay.observe(max(0.0, now - s))
        if unit.newest:
            self._committed_lag = max(0.0, now - unit.newest)
        if unit.alarm_done is not None:
            unit.alarm_done.set_result(unit.quarantined)  # the ops the database refused (normally none)
        unit.done = True
        self._release_acks()
        self.release.committed(unit.release)
        if self.seal_digests is not None:  # the rows as stored, for the slice digests (docs/audit.md)
            self.seal_digests.committed(unit.readings, whole=not split and res.duplicates == 0)
        if self.journal is not None and unit.ops:
            self.journal.committed(unit.ops)
        if self.on_commit is not None:
            self.on_commit(unit)
        self.committed.set()
        self.committed.clear()

    async def _store(self, unit: Unit, readings: ReadingRows | None, robot: RobotRows | None, dead: list[DeadLetter],
                     collectors: list[CollectorSeen], ops: list[AlarmOp], transfers: list) -> WriteResult:
        """One transaction. A database that is unavailable (connection refused or lost, timeout,
        a server shutting down) is retried with backoff until it answers: nothing is
        acknowledged meanwhile, so nothing can be lost. A refusal of the data itself
        (``StoreRefused``, connectors/errors.py) is raised at once, for the caller to split and quarantine: no data
        error is ever retried."""
        delay = 0.2
        while True:
            try:
                turn = unit.alarm_turn if ops else None
                return await self.store.write(readings, robot, dead, collectors, ops,
                                              before_alarms=(lambda: asyncio.shield(turn)) if turn else None,
                                              transfers=transfers, fence=unit.fence, sessions=unit.sessions)
            except FencedOut:
                raise
            except StoreRefused:
                self.m.write_errors.inc()
                raise
            except Exception as e:  # noqa: BLE001 - the database is unavailable: retry until it is durable
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a stop that gave up closed the connections
                    raise asyncio.CancelledError from e  # (the driver turned our cancellation into its error)
                self.m.write_errors.inc()
                self.last_write_error = f"{type(e).__name__}: {e}"
                log.error("write of unit %d failed (%s: %s); retrying in %.1fs", unit.seq, type(e).__name__, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _fenced(self, unit: Unit, e: FencedOut) -> None:
        """The database refused the unit: its epoch is stale (another instance holds a partition
        of it now). Nothing of it is acknowledged (the new holder's session delivers the messages
        again) and none of its alarm changes is published."""
        log.warning("write of unit %d refused: %s; its %d message(s) are left to the new holder",
                    unit.seq, e, len(unit.acks))
        self.fenced_units += 1
        unit.acks = []
        self.release.refused(unit.release)
        if unit.alarm_done is not None:
            unit.alarm_done.set_result(list(unit.ops))
        unit.done = True
        self._release_acks()
        self.partitioning.on_fenced(unit.fence, e)
        self.committed.set()
        self.committed.clear()

    def unacknowledged(self) -> tuple[int, str]:
        """Messages received and not acknowledged (in units not yet committed, or pending), and a
        summary by collector with their sequence ranges, for the log of a stop that gave up."""
        items = [v for u in self._in_flight for v in u.items] + list(self._pending.items)
        n = sum(len(u.acks) for u in self._in_flight) + len(self._pending.acks)
        seqs: dict[str, list[int]] = {}
        for v in items:
            if v.collector is not None and v.seq is not None:
                seqs.setdefault(v.collector, []).append(v.seq)
        parts = [f"{c} seq {min(q)}..{max(q)} ({len(q)})" for c, q in sorted(seqs.items())[:20]]
        ops = sum(len(u.ops) for u in self._in_flight if not u.done)
        if ops:
            parts.append(f"{ops} alarm operation(s) not written")
        return n, ", ".join(parts)

    def _release_acks(self) -> None:
        """Acknowledge committed units' messages, oldest first, stopping at the first unit still
        being written (MQTT requires PUBACKs in the order the PUBLISHes arrived)."""
        n = 0
        while self._in_flight and self._in_flight[0].done:
            u = self._in_flight.popleft()
            for ack in u.acks:
                ack()
            n += len(u.acks)
        if n:
            self.m.acked.inc(n)
        self._track_waiting()
        self.m.pending.set(self._pending.n)
