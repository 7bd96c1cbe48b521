"""The one-way flow: message → validate → (store + detect) → events → alarms → notify.

``Pipeline.submit`` validates a message and keeps its rows pending. ``flush`` turns everything
pending into a :class:`Unit`: it runs the detectors on the unit's readings (in memory, right
away, so alarm latency does not wait for the database), derives event and alarm operations,
journals them on local disk (daemon/ingest/alarm_journal.py) and publishes the alarm changes at once
(MQTT, webhooks, console: an alarm never waits for the historian), and queues the unit for the
writers. Writers commit a unit's readings, dead letters, events and alarm changes in one
transaction (the alarm changes keep their decision order and original times; the journal entry
is forgotten with the commit); only then are the unit's MQTT messages acknowledged, strictly
in arrival order. A unit whose write fails because the database is unavailable (connection,
timeout) is retried with backoff until it succeeds: nothing is acknowledged, so nothing can be
lost, and the withheld acknowledgements push back on the broker: it sends at most
``mqtt.receive_window`` messages not yet acknowledged. Intake never waits for the writers, so
detection (and alarm notification) goes on over everything received while the database is down
or stalled, up to that window (docs/outages.md). A unit the database refuses because of its
data (a value validation could not foresee, a constraint) is never retried as it is: it is
bisected by message and by alarm operation until each refused part stands alone; a refused
message is dead-lettered whole as ``unstorable`` with the database's error, a refused alarm
operation is quarantined in ``dead_letters`` as ``unstorable_alarm_op`` (its JSON as the payload),
the rest is stored, and every message of the unit is acknowledged: one bad message or operator
comment never stalls ingestion.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np

from plantwatch.connectors.errors import StoreRefused
from plantwatch.connectors.leases import FencedOut
from plantwatch.connectors.store import (AlarmOp, AlarmWrite, CollectorSeen, DeadLetter, ReadingRows, RobotRows, Store,
                                         WriteResult)

from plantwatch.daemon.ingest.alarm_journal import Journaling
from plantwatch.daemon.ingest.partitioning import Partitioning
from plantwatch.daemon.alarms.release import Decided, DecidedChanges
from plantwatch.daemon.alarms.book import AlarmBook
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.detection import DetectorSet
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.ingest.splitting import SplitOnDataError, _collectors_seen
from plantwatch.daemon.ingest.sequences import Sequences, SeqState, SeqStep
from plantwatch.daemon.ingest.validate import Registry, Validated, flags_of, validate

log = logging.getLogger(__name__)

Ack = Callable[[], None]

@dataclass(slots=True)
class Unit:
    seq: int
    acks: list[Ack]
    readings: ReadingRows | None
    robot: RobotRows | None
    dead: list[DeadLetter]
    collectors: list[CollectorSeen]
    ops: list[AlarmOp]
    transfers: list
    sent: list[float]
    newest: float
    n_messages: int
    alarm_turn: asyncio.Future | None = None  # set when the previous alarm-writing unit committed
    alarm_done: asyncio.Future | None = None
    done: bool = False
    #: the unit's messages, for splitting it when the database refuses its data
    items: list[Validated] = field(default_factory=list)
    sources: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, payload) per item
    gaps: list[SeqStep] = field(default_factory=list)  # what each item did to its collector's sequence
    received: float = 0.0  # wall time its first message arrived (or its ops were made)
    quarantined: list = field(default_factory=list)  # alarm ops the database refused (dead-lettered)
    release: Any = None  # its alarm changes waiting to go out (daemon/alarms/release.py)
    fence: Any = None  # several instances: the partition epochs the unit was made under (connectors/leases.py)
    sessions: list = field(default_factory=list)  # Sparkplug B session changes, stored in its transaction


@dataclass(slots=True)
class _Pending:
    acks: list[Ack] = field(default_factory=list)
    items: list[Validated] = field(default_factory=list)
    sources: list[tuple[str, bytes]] = field(default_factory=list)
    n: int = 0
    since: float = 0.0
    stale: list[tuple[np.ndarray, float]] = field(default_factory=list)


class Pipeline(SplitOnDataError):
    def __init__(self, cfg: Config, store: Store, registry: Registry, detectors: DetectorSet, alarms: AlarmBook,
                 metrics: Metrics, *, on_alarms: Callable[[list[AlarmWrite]], None] | None = None,
                 queue_units: int = 0, journal: Journaling | None = None,
                 partitioning: Partitioning | None = None, publish_wait: float = 0.2,
                 on_commit: Callable[[Unit], None] | None = None):
        """``on_alarms``: publishes alarm changes the moment they are decided (must not block);
        ``queue_units``: units waiting for a writer (0: no bound of its own; the receive window
        bounds them); ``journal``: keeps decided alarm operations on local disk until the database commits
        them; ``partitioning``: the partitions held here (daemon/ingest/partitioning.py; default: single
        mode, every sensor, no fence, an alarm change may go out before its commit); ``on_commit``:
        called after each commit with the unit (transfer receipts; must not block); ``publish_wait``: how long a decided change waits for its commit
        (to carry its alarm id and audit sequence) before it goes out without (daemon/alarms/release.py)."""
        self.cfg = cfg
        self.store = store
        self.reg = registry
        self.detectors = detectors
        self.alarms = alarms
        self.m = metrics
        self.on_alarms = on_alarms
        self.journal = journal
        self.partitioning = partitioning if partitioning is not None else Partitioning()
        self.release = DecidedChanges(self._publish, self.partitioning.may_publish, publish_wait)
        self.units: asyncio.Queue[Unit | None] = asyncio.Queue(maxsize=queue_units)
        self._pending = _Pending()
        self._unit_seq = 0
        self._in_flight: deque[Unit] = deque()
        self._last_alarm_done: asyncio.Future | None = None
        self.sequences = Sequences(cfg.ingest.max_seq_jump, self._window(),
                                   on_gap=lambda c, n: self.m.sequence_gaps.labels(c).inc(n),
                                   on_restart=lambda c: self.m.sequence_restarts.labels(c).inc())
        self._tick_changes: list = []
        self.committed = asyncio.Event()  # pulsed after each commit (tests, graceful drain)
        self.on_commit = on_commit
        #: the write path's state, read by /healthz and the metrics thread (plain floats and str)
        self.last_write_error: str | None = None
        self._wait_since: float | None = None  # arrival of the oldest message or op not yet committed
        self._wait_ref: float | None = None  # its newest reading's time (arrival when it has none)
        self._committed_lag = 0.0  # at the last commit: commit time minus the newest reading committed
        self.m.ingest_lag.set_function(self.lag)
        self.fenced_units = 0

    # --- intake -------------------------------------------------------------------------------
    def submit(self, topic: str, payload: bytes, ack: Ack, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.submit_validated(topic, payload, validate(topic, payload, self.cfg, self.reg, now), ack, now)

    def submit_validated(self, topic: str, payload: bytes, v: Validated, ack: Ack, now: float,
                         stale: np.ndarray | None = None) -> None:
        """A message validated here or elsewhere (Sparkplug B); ``topic`` and ``payload`` are kept
        so that a message the database refuses can be dead-lettered whole; ``stale``: sensor
        columns whose source announced its death, made stale in this unit (daemon/ingest/sparkplug.py)."""
        if stale is not None and len(stale):
            self._pending.stale.append((stale, now))
        self.partitioning.learn(v)
        self.m.messages.inc()
        n_ok = len(v.col)
        n_bad = sum(1 for d in v.rejected)
        self.m.received.inc(n_ok + n_bad)
        for d in v.rejected:
            self.m.rejected.labels(d.reason).inc()
        p = self._pending
        if not p.acks:
            p.since = now
        p.acks.append(ack)
        p.items.append(v)
        p.sources.append((topic, payload))
        p.n += n_ok + n_bad
        self.m.pending.set(p.n)

    def restore_sequences(self, last_seq: dict[str, SeqState | int]) -> None:
        """Sequence state stored per collector (at start, or on taking a partition over): a gap
        between it and the first batch after a restart is counted like any other."""
        self.sequences.restore(last_seq)

    def defer_ack(self, ack: Ack, now: float | None = None) -> None:
        """Acknowledge a message that is not ours (another partition's) in arrival order."""
        p = self._pending
        if not p.acks:
            p.since = time.time() if now is None else now
        p.acks.append(ack)

    async def drain(self) -> None:
        """Flush what is pending and wait until every unit made so far is committed and
        acknowledged (units made later, from other partitions' intake, are not waited for)."""
        await self.flush()
        last = self._unit_seq
        while self._in_flight and self._in_flight[0].seq <= last:
            await self.committed.wait()

    def due(self, now: float | None = None) -> bool:
        p = self._pending
        if not p.acks:
            return False
        now = time.time() if now is None else now
        return (p.n >= self.cfg.ingest.batch_readings or len(p.acks) >= self._window()
                or now - p.since >= self.cfg.ingest.flush_interval)

    def _window(self) -> int:
        return self.cfg.mqtt.receive_window if self.cfg.mqtt else 1000

    def add_tick(self, now: float) -> bool:
        """Time-driven detector conditions (stale sensors); written with the next unit. True when
        some are waiting for it (the caller flushes then, rather than waiting for readings)."""
        self._tick_changes.extend(self.detectors.tick(now, self.partitioning.active))
        return bool(self._tick_changes)

    # --- flush: detect, derive alarms, hand to writers -------------------------------------------
    async def flush(self) -> None:
        p, self._pending = self._pending, _Pending()
        ticks, self._tick_changes = self._tick_changes, []
        if not p.acks and not ticks:
            return
        fixed = [v for v in p.items if not v.robot and len(v.col)]
        robots = [v for v in p.items if v.robot and len(v.col)]
        col = np.concatenate([v.col for v in fixed]) if fixed else np.empty(0, np.int64)
        t = np.concatenate([v.t for v in fixed]) if fixed else np.empty(0)
        val = np.concatenate([v.value for v in fixed]) if fixed else np.empty(0)
        q = np.concatenate([v.quality for v in fixed]) if fixed else np.empty(0, np.int16)
        rcol = np.concatenate([v.col for v in robots]) if robots else np.empty(0, np.int64)
        rt = np.concatenate([v.t for v in robots]) if robots else np.empty(0)
        rval = np.concatenate([v.value for v in robots]) if robots else np.empty(0)

        transfers = [v for v in p.items if v.transfer is not None]
        for v in transfers:  # declarations first: a draw-off declared with its readings explains them
            x = v.transfer
            self.detectors.declare_transfer(v.transfer_tank, x.start, x.end, x.quantity)
        # each detector judges the reading classes it declares (quality, over range, signal failure)
        changes = list(ticks)
        live = _live(fixed)
        if live is None:
            changes += self.detectors.process(col, t, val, quality=q, flag=flags_of(fixed))
        else:
            flags = flags_of(fixed)
            changes += self.detectors.process(col[live], t[live], val[live], quality=q[live],
                                              flag=None if flags is None else flags[live])
        if len(rcol):
            pos = np.column_stack([np.concatenate([v.x for v in robots]), np.concatenate([v.y for v in robots])])
            changes += self.detectors.process(rcol, rt, rval, pos, quality=np.concatenate([v.quality for v in robots]),
                                              flag=flags_of(robots))
        for cols, at in p.stale:
            changes += self.detectors.mark_stale(cols, at)
        ops, decided = self._decided(self.alarms.apply(changes)) if changes else ([], None)
        for w in self.detectors.watches:
            if w.seconds:
                self.m.detector_seconds.labels(w.cfg.id).inc(w.seconds)
                w.seconds = 0.0

        readings = ReadingRows(self.reg.db_id[col], t, val, q) if len(col) else None
        robot = self._robot_rows(robots)
        gaps = self._gaps(p.items)
        self._unit_seq += 1
        unit = Unit(self._unit_seq, p.acks, readings, robot, [d for v in p.items for d in v.rejected],
                    _collectors_seen(p.items, gaps), ops, [v.transfer for v in transfers], [v.sent for v in p.items if v.sent is not None],
                    float(max(t.max() if len(t) else 0.0, rt.max() if len(rt) else 0.0)), len(p.acks),
                    items=p.items, sources=p.sources, gaps=gaps, sessions=[v.session for v in p.items if v.session],
                    received=p.since if p.acks else time.time(), release=decided)
        unit.fence = self.partitioning.fence_of(unit)
        if ops:
            unit.alarm_turn = self._last_alarm_done
            unit.alarm_done = asyncio.get_running_loop().create_future()
            self._last_alarm_done = unit.alarm_done
        await self._enqueue(unit)

    async def submit_alarm_ops(self, ops: list[AlarmOp]) -> asyncio.Future:
        """Queue alarm ops that do not come from readings (operator actions, shelve expiry,
        incident closing) on the same ordered alarm write path. Call it right after mutating the
        AlarmBook, with no ``await`` in between: the order is fixed before this first suspends.
        The returned future resolves when the ops are committed."""
        ops, decided = self._decided(ops)
        self._unit_seq += 1
        unit = Unit(self._unit_seq, acks=[], readings=None, robot=None, dead=[], collectors=[], ops=list(ops),
                    transfers=[], sent=[], newest=0.0, n_messages=0, received=time.time(), release=decided)
        unit.alarm_turn = self._last_alarm_done
        unit.alarm_done = asyncio.get_running_loop().create_future()
        self._last_alarm_done = unit.alarm_done
        await self._enqueue(unit)
        return unit.alarm_done

    def _decided(self, ops: list[AlarmOp]) -> tuple[list[AlarmOp], Decided | None]:
        """Alarm operations just decided (the AlarmBook already holds their result): journal them,
        hand their alarm changes to the release (out at the commit, or after ``publish_wait`` if
        the database has not committed them by then), and return what the unit writes (with the
        journal's marker) and the changes waiting to go out. Never waits for the database, nor
        for the broker."""
        if not ops:
            return ops, None
        if self.journal is not None:
            ops = self.journal.drop_replayed(ops)
            if not ops:
                return ops, None
            ops = self.journal.record(ops)
        writes = [op for op in ops if isinstance(op, AlarmWrite)]
        if writes:
            for w in writes:
                self.m.alarm_changes.labels(w.to_state).inc()
            for sev, n in self.alarms.counts_by_severity().items():
                self.m.active_alarms.labels(sev).set(n)
            return ops, self.release.add(writes)
        return ops, None

    def _publish(self, writes: list[AlarmWrite]) -> None:
        if self.on_alarms is not None and writes:
            self.on_alarms(writes)

    async def _enqueue(self, unit: Unit) -> None:
        """Hand a unit to the writers. Once it is in flight it must reach the queue even if the
        caller is cancelled (shutdown stops intake mid-flush): a unit in flight that no writer
        gets would hold back every later acknowledgement."""
        self._in_flight.append(unit)
        self._track_waiting()
        await asyncio.shield(self.units.put(unit))

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

    def _robot_rows(self, robots: list[Validated]) -> RobotRows | None:
        if not robots:
            return None
        return RobotRows(self.reg.db_id[np.concatenate([v.col for v in robots])], np.concatenate([v.t for v in robots]),
                         np.concatenate([v.value for v in robots]), np.concatenate([v.quality for v in robots]),
                         np.concatenate([v.x for v in robots]), np.concatenate([v.y for v in robots]),
                         [a for v in robots for a in v.area])

    def _gaps(self, items: list[Validated]) -> list[SeqStep]:
        """What each item did to its collector's sequence (daemon/ingest/sequences.py), in arrival order."""
        return [self.sequences.observe(v.collector, v.seq, v.sent) for v in items]

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
        try:
            try:
                res = await self._store(unit, unit.readings, unit.robot, unit.dead, unit.collectors, unit.ops,
                                        unit.transfers)
            except StoreRefused as e:
                log.error("write of unit %d refused (%s); splitting its %d message(s) and %d alarm operation(s)",
                          unit.seq, e, len(unit.items), len(unit.ops))
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

    @property
    def idle(self) -> bool:
        return not self._in_flight and not self._pending.acks and self.units.empty()


def _live(fixed: list[Validated]) -> np.ndarray | None:
    """Which of the unit's fixed readings detectors judge; None: all (no historical readings)."""
    if all(v.live is None for v in fixed):
        return None
    return np.concatenate([v.live if v.live is not None else np.ones(len(v.col), bool) for v in fixed])
