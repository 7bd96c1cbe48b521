"""What the write path does when the database refuses a unit for its data (``StoreRefused``):
it is never retried as it is. The unit is bisected by message, and its alarm operations by
operation (in order), until each refused part stands alone; a refused message is dead-lettered
whole as ``unstorable``, a refused alarm operation is quarantined in ``dead_letters`` as
``unstorable_alarm_op`` with its JSON as the payload, and the rest is committed. Mixed into the
write path (:class:`~plantwatch.daemon.ingest.write_path.WritePath`), whose ``_store`` (one transaction, an
unavailable database retried) it calls.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from plantwatch.connectors.errors import StoreRefused
from plantwatch.connectors.store import AlarmOp, CollectorSeen, DeadLetter, ReadingRows, WriteResult

from plantwatch.daemon.ingest.sequences import SeqStep
from plantwatch.daemon.ingest.validate import Validated

if TYPE_CHECKING:
    from plantwatch.daemon.ingest.unit import Unit

log = logging.getLogger("plantwatch.daemon.ingest.pipeline")


class SplitOnDataError:
    """The splitting half of the pipeline's write path (needs ``_store``, ``_robot_rows``,
    ``reg`` and ``m`` of the pipeline)."""

    async def _write_split(self, unit: Unit, idx: list[int], ops: list[AlarmOp]) -> WriteResult:
        """Write the unit's messages ``idx`` (and ``ops``) in one transaction, bisecting on data errors."""
        items = [unit.items[i] for i in idx]
        fixed = [v for v in items if not v.robot and len(v.col)]
        readings = None
        if fixed:
            col = np.concatenate([v.col for v in fixed])
            readings = ReadingRows(self.reg.db_id[col], np.concatenate([v.t for v in fixed]),
                                   np.concatenate([v.value for v in fixed]), np.concatenate([v.quality for v in fixed]))
        try:
            return await self._store(unit, readings, self._robot_rows([v for v in items if v.robot and len(v.col)]),
                                     [d for v in items for d in v.rejected],
                                     _collectors_seen(items, [unit.gaps[i] for i in idx]), ops,
                                     [v.transfer for v in items if v.transfer is not None])
        except StoreRefused as e:
            return await self._bisect(unit, idx, ops, e)

    async def _bisect(self, unit: Unit, idx: list[int], ops: list[AlarmOp], error: Exception) -> WriteResult:
        """The database refused messages ``idx`` (with ``ops``) for their data: write each half
        on its own, down to single messages, which are dead-lettered whole, and single alarm
        operations, which are quarantined (also in ``dead_letters``)."""
        if len(idx) > 1:
            mid = len(idx) // 2
            first = await self._write_split(unit, idx[:mid], ops)
            return _sum(first, await self._write_split(unit, idx[mid:], []))
        if ops:  # the alarm operations go on alone (in order), then the message alone
            first = await self._write_ops(unit, ops, error if not idx else None)
            return _sum(first, await self._write_split(unit, idx, [])) if idx else first
        if not idx:
            return WriteResult()
        (i,) = idx
        v = unit.items[i]
        topic, payload = unit.sources[i]
        detail = f"the database refused this message: {error}"
        dl = DeadLetter(topic, v.collector, v.seq, "unstorable", detail, payload,
                        hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=12).hexdigest() + ":unstorable")
        log.error("dead-lettered a message of %s (seq %s) the database refused: %s", v.collector, v.seq, error)
        self.m.rejected.labels("unstorable").inc(max(1, len(v.col)))
        return await self._last_resort(unit, [dl], _collectors_seen([v], [unit.gaps[i]]))

    async def _write_ops(self, unit: Unit, ops: list[AlarmOp], error: Exception | None) -> WriteResult:
        """Alarm operations alone, in order; a refused run is halved (order kept) down to the
        single operation the database refuses, which is quarantined with the database's reason.
        ``error``: the refusal already seen for exactly these ops (skip trying them whole again)."""
        if error is None:
            try:
                return await self._store(unit, None, None, [], [], ops, [])
            except StoreRefused as e:
                error = e
        if len(ops) > 1:
            mid = len(ops) // 2
            return _sum(await self._write_ops(unit, ops[:mid], None), await self._write_ops(unit, ops[mid:], None))
        (op,) = ops
        unit.quarantined.append(op)
        self.m.rejected.labels("unstorable_alarm_op").inc()
        log.critical("the database refused an alarm operation (%s); quarantined in dead_letters: %s",
                     error, _op_summary(op))
        record = _op_record(op)
        dl = DeadLetter(ALARM_OP_TOPIC, None, None, "unstorable_alarm_op",
                        f"the database refused this {type(op).__name__}: {error}", record,
                        hashlib.blake2b(record, digest_size=12).hexdigest() + f":op:{time.time_ns()}")
        return await self._last_resort(unit, [dl], [])

    async def _last_resort(self, unit: Unit, dead: list[DeadLetter], collectors: list[CollectorSeen]) -> WriteResult:
        """Write dead letters (and the collector rows of their messages). Their fields are safe by
        construction (bytes, escaped text); should the database still refuse them, the loss is
        logged loudly rather than retried forever."""
        try:
            return await self._store(unit, None, None, dead, collectors, [], [])
        except StoreRefused as e:
            if collectors:
                return await self._last_resort(unit, dead, [])
            log.critical("the database refused even the dead letter of unit %d (%s): %s", unit.seq,
                         e, [(d.topic, d.collector, d.seq, d.reason) for d in dead])
            return WriteResult()


def _collectors_seen(items: list[Validated], steps: list[SeqStep]) -> list[CollectorSeen]:
    """One row per collector of the items: its sequence state after its last item (in arrival
    order), its newest send time, and the gaps, restarts and batches of these items."""
    seen: dict[str, CollectorSeen] = {}
    for v, step in zip(items, steps):
        if v.collector is None or v.seq is None or step.state is None:
            continue
        c = seen.get(v.collector)
        t = v.sent if v.sent is not None else time.time()
        if c is None:
            c = seen[v.collector] = CollectorSeen(v.collector, step.state.last, t, 0, 0)
        c.t, c.gaps, c.batches, c.restarts = max(c.t, t), c.gaps + step.gap, c.batches + 1, c.restarts + step.restart
        if step.order >= c.order:
            c.seq, c.seq_sent, c.episode_gaps, c.order = step.state.last, step.state.sent, step.state.episode_gaps, step.order
    return list(seen.values())


#: the ``topic`` of the dead letter of a quarantined alarm operation (it came from no topic)
ALARM_OP_TOPIC = "(alarm operation)"


def _op_fields(op: AlarmOp) -> dict:
    if dataclasses.is_dataclass(op):
        return {f.name: getattr(op, f.name) for f in dataclasses.fields(op)}
    return {"repr": repr(op)}


def _op_summary(op: AlarmOp) -> str:
    f = _op_fields(op)
    keys = ("detector_id", "sensor_id", "action", "actor", "to_state", "condition", "key")
    return type(op).__name__ + " " + ", ".join(f"{k}={f[k]!r}" for k in keys if k in f)[:400]


def _op_record(op: AlarmOp) -> bytes:
    """The operation as JSON (ASCII: NUL and lone surrogates escaped), kept as the dead letter's payload."""
    doc = {"op": type(op).__name__, **_op_fields(op)}
    try:
        return json.dumps(doc, default=repr, ensure_ascii=True).encode()
    except (TypeError, ValueError, RecursionError):  # keys that are not text, a cycle: its repr then
        return repr(doc).encode("ascii", "backslashreplace")


def _sum(a: WriteResult, b: WriteResult) -> WriteResult:
    return WriteResult(a.inserted + b.inserted, a.duplicates + b.duplicates, a.robot_inserted + b.robot_inserted,
                       a.dead_lettered + b.dead_lettered, a.alarm_ids + b.alarm_ids)
