"""A unit: the messages received between two flushes, with the rows, dead letters and alarm
operations made of them, written in one transaction and acknowledged together after its commit
(daemon/ingest/pipeline.py makes units, daemon/ingest/write_path.py writes them)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from plantwatch.connectors.store import AlarmOp, CollectorSeen, DeadLetter, ReadingRows, RobotRows

from plantwatch.daemon.ingest.sequences import SeqStep
from plantwatch.daemon.ingest.validate import Validated

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
class Pending:
    """What was received since the last flush: the next unit's messages."""

    acks: list[Ack] = field(default_factory=list)
    items: list[Validated] = field(default_factory=list)
    sources: list[tuple[str, bytes]] = field(default_factory=list)
    n: int = 0
    since: float = 0.0
    stale: list[tuple[np.ndarray, float]] = field(default_factory=list)
