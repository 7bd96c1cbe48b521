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


class SealingTask:
    def __init__(self, sealer: Sealer, take_marks: Callable[[], set[int]], cfg: RecordConfig,
                 failed: Callable[[str, Exception], None], clock: Callable[[], float] = time.time):
        self.sealer, self.take_marks, self.cfg, self.failed, self.clock = sealer, take_marks, cfg, failed, clock
        self.pending: set[int] = set()
        self.rechecked = False

    async def round(self) -> None:
        if not self.rechecked:
            await self.sealer.reseal(recheck=RECHECK_AT_START)
            self.rechecked = True
        self.pending |= self.take_marks()
        marks, self.pending = self.pending, set()
        try:
            await self.sealer.reseal(marks)
        except BaseException:
            self.pending |= marks
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
