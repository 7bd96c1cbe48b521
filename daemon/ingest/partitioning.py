"""What the pipeline asks of partitioning, given to it at construction.

Several instances can share a site (daemon/ingest/cluster.py): each reads and writes the
partitions it holds a lease for. The pipeline needs four things from that: the partition of each
sensor column (learned from the collector a message comes from), the columns held here (stale
ticks only for those), the fence a unit's write carries and what to do when the database refuses
it, and whether an alarm change may go out before its commit. :class:`Partitioning` is single
mode: every sensor is held here, no unit carries a fence, and every change may go out.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from plantwatch.connectors.leases import Fence, FencedOut
from plantwatch.connectors.store import AlarmWrite

if TYPE_CHECKING:
    from plantwatch.daemon.ingest.validate import Validated


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
