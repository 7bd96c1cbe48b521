"""The sealing task: every ``record.interval_seconds`` it chains a sealed delta for each sealed
slice that received readings since (late arrivals), then seals the slices that are complete
(``connectors/seal.py``, docs/audit.md). A failed round is counted and logged and its marks are
kept for the next one; readings are never held back by it."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from plantwatch.connectors.seal import Sealer
from plantwatch.daemon.config.record import RecordConfig

#: seconds before the sealed point rechecked at start (the marks of a run that stopped are lost)
RECHECK_AT_START = 3600.0


def merged(spans: list[tuple[float, float]], gap: float = 1.0) -> list[tuple[float, float]]:
    """Overlapping or nearly adjacent spans as one (what is kept while the database is away
    stays small: live writes form one span)."""
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + gap:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class SealingTask:
    def __init__(self, sealer: Sealer, take_marks: Callable[[], list[tuple[float, float]]], cfg: RecordConfig,
                 failed: Callable[[str, Exception], None], clock: Callable[[], float] = time.time):
        self.sealer, self.take_marks, self.cfg, self.failed, self.clock = sealer, take_marks, cfg, failed, clock
        self.pending: list[tuple[float, float]] = []
        self.rechecked = False

    async def round(self) -> None:
        if not self.rechecked:
            await self.sealer.reseal(recheck=RECHECK_AT_START)
            self.rechecked = True
        marks, self.pending = merged(self.pending + self.take_marks()), []
        try:
            await self.sealer.reseal(marks)
        except BaseException:
            self.pending = marks + self.pending
            raise
        while await self.sealer.seal(self.clock()) >= self.sealer.MAX_SLICES:
            await asyncio.sleep(0)  # a backlog: the next rounds at once

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception as e:  # noqa: BLE001 - counted and logged by `failed`; retried next round
                self.failed("seal", e)
            await asyncio.sleep(self.cfg.interval_seconds)
