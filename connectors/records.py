"""The domain records that cross rooms: readings batches, dead letters, collector rows,
transfers, events, alarm changes and the alarm-management operations. Plain data, no SQL: the
store writes them (``connectors/store.py``, ``connectors/alarm_db.py``), the daemon makes them.

:data:`AlarmOp` is the one union of what travels in a unit's ``ops`` list, applied in order in
the unit's transaction by :func:`~plantwatch.connectors.alarm_writes.apply_alarm_ops`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class ReadingRows:
    sensor_id: np.ndarray  # int32 database ids
    t: np.ndarray  # float64 Unix seconds
    value: np.ndarray  # float64
    quality: np.ndarray  # int16

    def __len__(self) -> int:
        return len(self.t)


@dataclass(slots=True)
class RobotRows(ReadingRows):
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    area: list[str | None] = field(default_factory=list)


@dataclass(slots=True)
class DeadLetter:
    topic: str
    collector: str | None
    seq: int | None
    reason: str
    detail: str
    payload: bytes
    key: str  # idempotency key: same message + position → same key


@dataclass(slots=True)
class CollectorSeen:
    collector: str
    seq: int
    t: float  # Unix seconds
    gaps: int  # batches missing (sequence numbers skipped)
    batches: int = 1
    restarts: int = 0  # counter restarts (backwards, or an implausible jump forward)
    seq_sent: float | None = None  # ``sent`` of the batch numbered ``seq``
    episode_gaps: int = 0  # batches missing since the counter's last restart
    order: int = 0  # arrival order of the batch numbered ``seq``: the row keeps the latest


@dataclass(slots=True)
class Transfer:
    sensor_id: int
    start: float
    end: float
    quantity: float
    by: str
    reference: str
    key: str
    unit: str = ""  # the unit of ``quantity`` (the tank's inventory unit)
    declared_quantity: float | None = None  # as declared, in ``declared_unit``
    declared_unit: str = ""


@dataclass(slots=True)
class EventStart:
    detector_id: str
    detector: dict[str, Any]
    sensor_id: int
    condition: str
    severity: str
    t: float
    score: float


@dataclass(slots=True)
class EventEnd:
    detector_id: str
    sensor_id: int
    t: float
    peak: float


@dataclass(slots=True)
class AlarmWrite:
    """New state of the alarm of (detector, sensor), and the change record that explains it."""

    detector_id: str
    sensor_id: int
    from_state: str
    to_state: str
    active: bool
    condition: str
    severity: str
    t: float
    cause: dict[str, Any]
    raised: bool = False  # this change (re-)raised the alarm: set raised_at, link the open event
    cleared: bool = False  # the condition returned to normal: set cleared_at
    # --- the alarm record's order and message content (connectors/alarm_db.py, daemon/alarms/message.py)
    area: str | None = None  # where the alarm was raised (kept through its life)
    #: what an alarm message says besides the state: tag, unit, value, limit (daemon/alarms/message.py)
    info: dict[str, Any] = field(default_factory=dict)
    alarm_id: int | None = None  # set when written
    seq: int | None = None  # the change's audit sequence number: its place in the alarm record, set when written



@dataclass(slots=True)
class WriteResult:
    inserted: int = 0
    duplicates: int = 0
    robot_inserted: int = 0
    dead_lettered: int = 0
    alarm_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class AlarmFields:
    """Set bookkeeping columns of the alarm of (detector, sensor). Values: float → timestamp."""

    detector_id: str
    sensor_id: int
    fields: dict[str, Any]

@dataclass(slots=True)
class OperatorAction:
    """Who did what to which alarm, when and why (also: 'system' for shelve expiry)."""

    detector_id: str
    sensor_id: int
    t: float
    action: str
    actor: str
    role: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    from_state: str | None = None
    to_state: str | None = None
    result: dict[str, Any] = field(default_factory=dict)  # filled on apply: {"id": ...}

@dataclass(slots=True)
class IncidentOpen:
    key: str
    site_id: str
    t: float
    title: str
    area: str
    sensor: str
    detector_id: str
    sensor_id: int
    condition: str
    severity: str
    config_hash: str | None
    flood: bool = False

@dataclass(slots=True)
class IncidentJoin:
    key: str
    t: float
    area: str
    sensor: str
    detector_id: str
    sensor_id: int
    condition: str
    severity: str
    flood: bool = False

@dataclass(slots=True)
class IncidentCause:
    """The incident's cause becomes the alarm of (detector, sensor): the first alarm of the
    highest priority in the incident (the previous cause stays in it as a consequence)."""

    key: str
    t: float
    title: str
    detector_id: str
    sensor_id: int
    condition: str
    severity: str

@dataclass(slots=True)
class IncidentClose:
    key: str
    t: float


@dataclass(slots=True)
class JournalApplied:
    """Alarm op recording, in the unit's transaction, that journal entry ``key`` is committed."""

    key: str


#: every operation a unit's ``ops`` may carry, applied in order in the unit's transaction
AlarmOp = (EventStart | EventEnd | AlarmWrite | AlarmFields | OperatorAction | IncidentOpen | IncidentJoin
           | IncidentCause | IncidentClose | JournalApplied)
