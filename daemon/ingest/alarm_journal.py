"""The daemon's side of the alarm journal (connectors/alarm_journal.py): where the file is, what a
full or unwritable journal means, and the replay at start.

The pipeline hands every unit of alarm operations to :meth:`Journaling.record` the moment they are
decided, before they are published; the entry is forgotten (:meth:`Journaling.committed`) once the
unit's transaction has committed them. A full journal (``alarms.journal_limit`` entries waiting
for the database) or one that cannot be written (disk full, I/O error) never holds an alarm back:
the changes are still published and still queued for the database (written when it is back, as
long as the daemon keeps running), but they would not survive a restart, so the condition is loud:
a critical log line per episode, ``plantwatch_alarm_journal_full`` = 1, the operations counted in
``plantwatch_alarm_journal_unjournaled_total``, and a system alarm on
``{prefix}/{site}/alarms/system`` (raised, and cleared once the journal takes entries again).
"""
from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from plantwatch.connectors import alarm_journal as cj
from plantwatch.connectors.errors import StoreRefused
from plantwatch.connectors.store import AlarmWrite, DeadLetter, EventStart, Store

from plantwatch.daemon.config.model import Config
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.ingest.splitting import ALARM_OP_TOPIC, _op_record, _op_summary

log = logging.getLogger("plantwatch.alarm_journal")


def journal_path(cfg: Config, dsn: str) -> Path:
    """``{alarms.journal_dir}/alarm-journal-{site}-{instance}-{database}.sqlite``: a daemon of
    another site, cluster instance or database never shares the file (the database part is a
    digest of host, port and database name, so a password never appears in it)."""
    base = Path(cfg.alarms.journal_dir) if cfg.alarms.journal_dir else Path(cfg.state.data_dir) / "alarm-journal"
    u = urlsplit(dsn)
    where = f"{u.hostname or ''}:{u.port or ''}{u.path}"
    digest = hashlib.blake2b(where.encode(), digest_size=6).hexdigest()
    instance = cfg.cluster.instance_id if cfg.cluster is not None else "single"
    return base / f"alarm-journal-{cfg.site.id}-{instance}-{digest}.sqlite"


class Journaling:
    """Journals units of alarm operations; ``on_condition(active, text)`` raises or clears the
    system alarm of a full or unwritable journal."""

    def __init__(self, journal: cj.AlarmJournal, metrics: Metrics,
                 on_condition: Callable[[bool, str], None] | None = None):
        self.journal = journal
        self.m = metrics
        self.on_condition = on_condition
        self._problem: str | None = None  # the current episode's reason (None: journaling works)
        self._unjournaled = 0
        #: identities of the alarm changes and events a replay wrote (see :meth:`drop_replayed`)
        self.replayed: set[tuple] = set()
        self.m.alarm_journal_entries.set(len(journal))

    def drop_replayed(self, ops: list[Any]) -> list[Any]:
        """``ops`` without the alarm changes and event starts a replay has already written.

        The readings of a unit whose alarm changes were journaled but not committed are not
        acknowledged either: the broker delivers them again after a restart and the detectors,
        restored from their last snapshot, decide the same change again (same detector, sensor,
        condition and reading time). The replay wrote it; writing or publishing it again would
        double it."""
        if not self.replayed:
            return ops
        out = []
        for op in ops:
            k = _identity(op)
            if k is not None and k in self.replayed:
                self.replayed.discard(k)
                log.info("alarm journal: %s of %s/%s at %s was written by the replay; not again",
                         type(op).__name__, k[1], k[2], k[3])
                continue
            out.append(op)
        return out

    def record(self, ops: Sequence[Any], now: float | None = None) -> list[Any]:
        """Journal ``ops`` (one unit's, in order); returns the ops to write: ``ops`` and the marker
        that commits the entry's key with them (or ``ops`` alone when they could not be journaled)."""
        try:
            key = self.journal.append(ops, now)
        except (cj.JournalFull, cj.UnknownOp, sqlite3.Error, OSError, TypeError, ValueError) as e:
            self._failed(e, len(ops))
            return list(ops)
        if self._problem is not None:
            self._recovered()
        self.m.alarm_journal_entries.set(len(self.journal))
        return [*ops, cj.JournalApplied(key)]

    def committed(self, ops: Sequence[Any]) -> None:
        """The database committed ``ops`` (a unit's): forget their journal entry."""
        for op in ops:
            if isinstance(op, cj.JournalApplied):
                self.journal.done(op.key)
        self.m.alarm_journal_entries.set(len(self.journal))

    def _failed(self, e: Exception, n_ops: int) -> None:
        self.m.alarm_journal_unjournaled.inc(n_ops)
        self._unjournaled += n_ops
        text = (f"alarm journal: {e}; alarm changes are published and queued for the database but NOT journaled:"
                " they are lost if the daemon stops before the database has them")
        if self._problem is None:
            self._problem = text
            self.m.alarm_journal_full.set(1)
            log.critical(text)
            if self.on_condition is not None:
                self.on_condition(True, text)

    def _recovered(self) -> None:
        text = (f"alarm journal: writable again ({len(self.journal)} entries waiting); {self._unjournaled} alarm"
                " operation(s) were not journaled meanwhile")
        log.warning(text)
        self._problem = None
        self._unjournaled = 0
        self.m.alarm_journal_full.set(0)
        if self.on_condition is not None:
            self.on_condition(False, text)


def _identity(op: Any) -> tuple | None:
    if isinstance(op, AlarmWrite) and op.active:
        return ("change", op.detector_id, op.sensor_id, op.t, op.condition)
    if isinstance(op, EventStart):
        return ("event", op.detector_id, op.sensor_id, op.t, op.condition)
    return None


async def replay(journaling: Journaling, store: Store, metrics: Metrics) -> int:
    """Write what a previous run journaled and the database does not have, in order, then forget
    it; returns the number of entries written. Called at start before the alarm state is loaded.
    An operation the database refuses for its data is quarantined in ``dead_letters`` (as the
    write path does); an unavailable database raises (the start fails and is retried)."""
    journal = journaling.journal
    entries = journal.pending()
    if not entries:
        return 0
    have = await store.journal_applied([e.key for e in entries])
    written = 0
    for e in entries:
        if e.key not in have:
            await _write_entry(store, e)
            written += 1
            journaling.replayed.update(k for k in map(_identity, e.ops) if k is not None)
            metrics.alarm_journal_replayed.inc()
        journal.done(e.key)
    log.warning("replayed %d alarm journal entries (%d operation(s)) left by the previous run; %d were already"
                " in the database", written, sum(len(e.ops) for e in entries if e.key not in have),
                len(entries) - written)
    metrics.alarm_journal_entries.set(len(journal))
    return written


async def _write_entry(store: Store, e: cj.Entry) -> None:
    try:
        await store.write(None, alarm_ops=[*e.ops, cj.JournalApplied(e.key)])
        return
    except StoreRefused as err:
        log.error("replaying alarm journal entry %s: the database refused it (%s); writing its %d operation(s)"
                  " one by one", e.key, err, len(e.ops))
    for op in e.ops:
        try:
            await store.write(None, alarm_ops=[op])
        except StoreRefused as err:
            log.critical("the database refused a journaled alarm operation (%s); quarantined in dead_letters: %s",
                         err, _op_summary(op))
            record = _op_record(op)
            await store.write(None, dead=[DeadLetter(
                ALARM_OP_TOPIC, None, None, "unstorable_alarm_op",
                f"the database refused this journaled {type(op).__name__}: {err}", record,
                hashlib.blake2b(record, digest_size=12).hexdigest() + f":op:{time.time_ns()}")])
    await store.write(None, alarm_ops=[cj.JournalApplied(e.key)])
