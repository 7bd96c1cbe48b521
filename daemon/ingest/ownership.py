"""What this running process holds: the epoch of each partition it took, and until when its
lease is valid by its own clock. Read by the write path (the fence every write transaction
carries) and by alarm publishing (:meth:`PartitionOwnership.may_publish`).
"""
from __future__ import annotations

import time
from collections.abc import Iterable

from plantwatch.connectors.leases import Fence

#: the epoch a fence names for a partition this process does not hold: never current
NOT_HELD = -1


class PartitionOwnership:
    """Epochs of the partitions whose intake runs here, and when each lease was last renewed.

    ``lease_seconds`` is counted by the database from the moment it ran the renewal, which is
    after this process sent it: counting from the send time (monotonic clock) is on the safe side.
    ``margin`` covers the two clocks running at slightly different rates.
    """

    def __init__(self, site: str, *, lease_seconds: float, margin: float | None = None,
                 clock=time.monotonic):
        self.site = site
        self.lease = lease_seconds
        self.margin = margin if margin is not None else max(0.2, 0.1 * lease_seconds)
        self.clock = clock
        self._epochs: dict[int, int] = {}
        self._renewed: dict[int, float] = {}  # partition -> monotonic time the last successful renewal was sent

    # --- kept by the cluster runner ----------------------------------------------------------------
    def gained(self, k: int, epoch: int, sent_at: float) -> None:
        self._epochs[k] = epoch
        self._renewed[k] = sent_at

    def renewed(self, held: dict[int, int], sent_at: float) -> None:
        for k, e in held.items():
            if self._epochs.get(k) == e:
                self._renewed[k] = sent_at

    def lost(self, k: int) -> None:
        self._epochs.pop(k, None)
        self._renewed.pop(k, None)

    # --- read by the write path and alarm publishing -------------------------------------------------
    def epochs(self) -> dict[int, int]:
        return dict(self._epochs)

    def epoch(self, k: int) -> int | None:
        return self._epochs.get(k)

    def __contains__(self, k: int) -> bool:
        return k in self._epochs

    def valid_until(self, k: int) -> float | None:
        """Monotonic time until which partition ``k``'s lease is surely still this process's."""
        t = self._renewed.get(k)
        return None if t is None else t + self.lease - self.margin

    def may_publish(self, k: int) -> bool:
        """Whether an alarm of partition ``k`` may be published before its database commit:
        only while this process holds the partition and its lease is still valid by its own
        clock (last successful renewal + ``lease_seconds`` - margin). After that another
        instance may have taken the partition over, and publishing is the new holder's."""
        until = self.valid_until(k)
        return until is not None and self.clock() < until

    def fence(self, partitions: Iterable[int], *, idle_timeout: float) -> Fence:
        """The fence of a write for ``partitions``: the epoch held of each (``NOT_HELD`` when not
        held, which the database always refuses)."""
        return Fence(self.site, {int(k): self._epochs.get(int(k), NOT_HELD) for k in partitions},
                     idle_timeout=idle_timeout)
