"""A rollup that fails in the daemon's timer is counted and logged, never dropped silently."""
from __future__ import annotations

import logging
import time

from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.store import Store
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.service import Daemon, Endpoints

CONFIG = """
site:
  id: rollsite
  areas: [{id: unit1, bounds: [0, 0, 50, 50], collector: edge1}]
sensors:
  - {id: PT-1, kind: pressure, unit: bar, range: [0, 100], area: unit1}
detectors:
  - {id: stale, type: stale, select: {kind: pressure}, params: {timeout: 60}}
"""


def _count(m: Metrics, step: str) -> float:
    return m.background_failures.labels(step)._value.get()  # noqa: SLF001 - prometheus_client's own value


async def test_rollup_failures_are_counted_and_logged(db, caplog):
    m = Metrics()
    d = Daemon(load_config_text(CONFIG), Endpoints(BrokerAddress("127.0.0.1", 1883), db), metrics=m)
    d.store = await Store.open(db, connections=1)
    now = time.time()
    await d.mark_unrolled(now)  # a working database: nothing counted
    await d.refresh_rollups(now)
    assert (_count(m, "rollup_mark"), _count(m, "rollup")) == (0, 0)
    d.store.dirty_minutes.add(int(now // 60) - 2)  # a closed minute still to roll up
    await d.store.close()  # the database is gone for the store: every rollup fails
    with caplog.at_level(logging.WARNING, logger="plantwatch"):
        await d.mark_unrolled(now)
        await d.refresh_rollups(now)
        await d.refresh_rollups(now + 10)
    assert (_count(m, "rollup_mark"), _count(m, "rollup")) == (1, 2)
    failed = [r.getMessage() for r in caplog.records if "rollup" in r.getMessage()]
    assert len(failed) == 3 and all("failed" in f for f in failed), failed
    assert int(now // 60) - 2 in d.store.dirty_minutes  # kept for the next round
