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

The unit is in daemon/ingest/unit.py, the writers and the write path's health in
daemon/ingest/write_path.py.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

import numpy as np

from plantwatch.connectors.store import AlarmOp, AlarmWrite, ReadingRows, RobotRows, Store

from plantwatch.daemon.ingest.alarm_journal import Journaling
from plantwatch.daemon.ingest.partitioning import Partitioning
from plantwatch.daemon.ingest.seal_digests import SliceDigests
from plantwatch.daemon.alarms.release import Decided, DecidedChanges
from plantwatch.daemon.alarms.book import AlarmBook
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.detection import DetectorSet
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.ingest.splitting import _collectors_seen
from plantwatch.daemon.ingest.sequences import Sequences, SeqState, SeqStep
from plantwatch.daemon.ingest.unit import Ack, Pending, Unit
from plantwatch.daemon.ingest.validate import Registry, Validated, flags_of, validate
from plantwatch.daemon.ingest.write_path import WritePath

log = logging.getLogger(__name__)

__all__ = ["Ack", "Pipeline", "Unit"]


class Pipeline(WritePath):
    def __init__(self, cfg: Config, store: Store, registry: Registry, detectors: DetectorSet, alarms: AlarmBook,
                 metrics: Metrics, *, on_alarms: Callable[[list[AlarmWrite]], None] | None = None,
                 queue_units: int = 0, journal: Journaling | None = None,
                 partitioning: Partitioning | None = None, publish_wait: float = 0.2,
                 on_commit: Callable[[Unit], None] | None = None, seal_digests: SliceDigests | None = None):
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
        self._pending = Pending()
        self._unit_seq = 0
        self._in_flight: deque[Unit] = deque()
        self._last_alarm_done: asyncio.Future | None = None
        self.sequences = Sequences(cfg.ingest.max_seq_jump, self._window(),
                                   on_gap=lambda c, n: self.m.sequence_gaps.labels(c).inc(n),
                                   on_restart=lambda c: self.m.sequence_restarts.labels(c).inc())
        self._tick_changes: list = []
        self.committed = asyncio.Event()  # pulsed after each commit (tests, graceful drain)
        self.on_commit = on_commit
        self.seal_digests = seal_digests  # committed readings kept for the sealer's digests
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
        p, self._pending = self._pending, Pending()
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

    @property
    def idle(self) -> bool:
        return not self._in_flight and not self._pending.acks and self.units.empty()


def _live(fixed: list[Validated]) -> np.ndarray | None:
    """Which of the unit's fixed readings detectors judge; None: all (no historical readings)."""
    if all(v.live is None for v in fixed):
        return None
    return np.concatenate([v.live if v.live is not None else np.ones(len(v.col), bool) for v in fixed])
