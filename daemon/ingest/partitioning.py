"""What the pipeline asks of partitioning, given to it at construction.

Several instances can share a site (daemon/ingest/cluster.py): each reads and writes the
partitions it holds a lease for. The pipeline needs four things from that: the partition of each
sensor column (learned from the collector a message comes from), the columns held here (stale
ticks only for those), the fence a unit's write carries and what to do when the database refuses
it, and whether an alarm change may go out before its commit. :class:`Partitioning` is single
mode: every sensor is held here, no unit carries a fence, and every change may go out;
:class:`ClusterPartitioning` is several instances' (kept up to date by the cluster's runner).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from plantwatch.connectors.alarm_journal import JournalApplied
from plantwatch.connectors.leases import Fence, FencedOut
from plantwatch.connectors.store import AlarmWrite

from plantwatch.daemon.config.model import Config
from plantwatch.daemon.ingest.ownership import PartitionOwnership
from plantwatch.daemon.ingest.partitions import Partitioner

if TYPE_CHECKING:
    from plantwatch.daemon.ingest.validate import Validated

log = logging.getLogger("plantwatch.cluster")


class Partitioning:
    """Single mode (one instance reads the whole site); the cluster's runner overrides it."""

    #: partition of each sensor column (-1: not seen yet); None: single mode
    col_part: np.ndarray | None = None
    #: sensor columns whose partition is held here (masks the stale ticks); None: all of them
    active: np.ndarray | None = None

    def learn(self, v: Validated) -> None:
        """A message's collector tells the partition of its sensors. Single mode: nothing to learn."""

    def fence_of(self, unit) -> Fence | None:  # noqa: ANN001 - the pipeline's Unit (no import circle)
        """The fence a unit's write carries (the epochs of its partitions); None: no fence."""
        return None

    def on_fenced(self, fence: Fence, e: FencedOut) -> None:
        """The database refused a unit for a stale epoch. Single mode carries no fence, so never."""

    def may_publish(self, w: AlarmWrite) -> bool:
        """Whether an alarm change may go out before its commit."""
        return True


class ClusterPartitioning(Partitioning):
    """Several instances: the partitions held here (``ownership``, kept by the cluster's runner),
    the partition of each sensor column as messages tell it, the fence of each unit."""

    def __init__(self, cfg: Config, db_ids: np.ndarray):
        assert cfg.cluster is not None
        self.cc = cfg.cluster
        self.partitioner = Partitioner(cfg)
        self.ownership = PartitionOwnership(cfg.site.id, lease_seconds=self.cc.lease_seconds)
        n = len(cfg.sensors)
        self.col_part = np.full(n, -1, dtype=np.int16)
        self.active = np.zeros(n, dtype=bool)
        self.col_of: dict[int, int] = {int(db): c for c, db in enumerate(db_ids.tolist())}
        self.fenced: set[int] = set()  # partitions a write was refused for, stopped at the runner's next round
        self.wake = asyncio.Event()  # the runner's next round is due now
        self.db_down_since: float | None = None  # set by the runner while no lease call answers
        self.session_up: set[int] = set()  # partitions whose MQTT session (client id ...-p{k}) is connected here

    def part_of(self, key: str) -> int:
        return self.partitioner.part_of(key)

    def learn(self, v: Validated) -> None:
        """The partition of a message's sensors, from the collector or Sparkplug node it comes from."""
        key = _source_key(v)
        if key is not None and len(v.col):
            self.col_part[v.col] = self.part_of(key)

    def assign(self, cols: np.ndarray, k: int) -> None:
        """Sensor columns restored for partition ``k`` (its state was saved by their holder)."""
        self.col_part[cols] = k

    def set_active(self, partitions) -> None:  # noqa: ANN001 - the partitions whose intake runs here
        self.active = np.isin(self.col_part, np.fromiter(partitions, dtype=np.int16))

    def fence_of(self, unit) -> Fence:  # noqa: ANN001
        """The fence of a unit: the epochs of the partitions its messages and alarm changes belong to."""
        parts = {self.part_of(k) for k in map(_source_key, unit.items) if k is not None}
        for op in unit.ops:
            if isinstance(op, JournalApplied):  # the journal's marker, about no sensor
                continue
            c = self.col_of.get(op.sensor_id)
            if c is not None and self.col_part[c] >= 0:
                parts.add(int(self.col_part[c]))
        return self.ownership.fence(parts, idle_timeout=min(2.0, self.cc.lease_seconds / 2))

    def may_publish(self, w: AlarmWrite) -> bool:
        """Whether an alarm change may go out before its commit: while this process holds the
        partition of its sensor by its own clock; or, while the database does not answer (no lease
        can be renewed), while the partition's MQTT session is still connected here. The broker lets
        one client hold a client id: a new holder of the partition connects with the same id and
        disconnects this one, so a connected session proves nobody else reads the partition's
        messages (docs/scaling.md, "Alarms during a database outage"). An operator's action on a
        sensor no partition here reads is the API's, and goes out."""
        c = self.col_of.get(w.sensor_id)
        k = int(self.col_part[c]) if c is not None else -1
        if k < 0 or self.ownership.may_publish(k):
            return True
        return self.db_down_since is not None and k in self.session_up

    def on_fenced(self, fence: Fence, e: FencedOut) -> None:
        """A write was refused for a stale epoch: those partitions are another holder's now. The
        other partitions of the refused unit are stopped too (their messages were not stored nor
        acknowledged, and their detectors went past them): their leases are released at the next
        heartbeat and taken again from the saved state, so the messages are delivered again."""
        parts = set(e.partitions) | set(fence.epochs)
        log.warning("partition(s) %s: write refused, the lease was taken over; stopping %s here",
                    ", ".join(map(str, e.partitions)), ", ".join(map(str, sorted(parts))))
        for k in parts:
            self.ownership.lost(k)
        self.fenced.update(parts)
        self.wake.set()

    def db_answered(self, ok: bool) -> float | None:
        """The runner's lease call answered (``ok``) or not; returns how long it had been away
        when it answers again (None otherwise)."""
        if ok:
            since, self.db_down_since = self.db_down_since, None
            return None if since is None else time.monotonic() - since
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
        return None


def _source_key(v) -> str | None:  # noqa: ANN001 - a Validated message
    """The partition key of a message: its collector, or its Sparkplug node (``group/node``)."""
    if v.collector is not None:
        return v.collector
    if v.session is not None:
        return f"{v.session.group}/{v.session.node}"
    return None
