"""Start-up and communication loss (ISA-18.2 designed suppression), against the real broker and
database: collectors started after the daemon raise no stale alarm; a dead collector is one
alarm (its sensors' stale alarms are recorded as suppressed); one silent sensor in a live
collector is one alarm."""
from __future__ import annotations

import asyncio
import time

import aiomqtt
import numpy as np
import pytest

from plantwatch.connectors.wire import encode_batch
from plantwatch.detectors import REGISTRY, SensorInfo

from .helpers import until
from .test_alarm_delivery import _daemon, _fetch, _stop

pytestmark = pytest.mark.slow

SECOND = 1.0  # the test's time scale: stale timeout 3 s, comm_lost timeout 2 s (site defaults: minutes)
DETECTORS = ("detectors:\n"
             "  - {id: stale, type: stale, select: {kind: gas}, params: {timeout: 3}}\n"
             "  - {id: comm, type: comm_lost, select: {kind: gas}, params: {timeout: 2, startup_grace: 120}}\n")
EDGE_A, EDGE_B = [f"G{i}" for i in range(5)], [f"G{i}" for i in range(5, 10)]


def collector_of(tag: str) -> str:
    return "edgeA" if tag in EDGE_A else "edgeB"


class Collector:
    """An edge collector publishing its sensors every 0.5 s until stopped; ``sensors`` may change."""

    def __init__(self, host: str, port: int, prefix: str, cid: str, sensors: list[str]):
        self.host, self.port, self.topic, self.cid = host, port, f"{prefix}/testsite/{cid}/readings", cid
        self.sensors = list(sensors)
        self.seq = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client(self.host, self.port) as c:
            while not self._stop.is_set():
                await c.publish(self.topic, encode_batch(self.cid, self.seq, [
                    {"sensor": s, "time": time.time(), "value": 1.0} for s in self.sensors]), qos=1)
                self.seq += 1
                await asyncio.sleep(0.5)

    def start(self) -> "Collector":
        self._stop.clear()
        self._task = asyncio.create_task(self._run())
        return self

    async def kill(self) -> None:
        self._stop.set()
        await self._task


_RAISES = ("SELECT s.tag, a.detector_id, c.to_state, c.condition FROM alarm_changes c JOIN alarms a ON a.id = c.alarm_id"
           " JOIN sensors s ON s.id = a.sensor_id WHERE c.from_state NOT IN ('unack', 'suppressed')"
           " AND c.to_state IN ('unack', 'suppressed') AND c.seq > $1 ORDER BY c.seq")
_ANNUNCIATED = ("SELECT s.tag, a.detector_id, c.condition FROM alarm_changes c JOIN alarms a ON a.id = c.alarm_id"
                " JOIN sensors s ON s.id = a.sensor_id WHERE c.to_state = 'unack' AND c.from_state <> 'unack'"
                " AND c.seq > $1 ORDER BY c.seq")
_VISIBLE = ("SELECT s.tag, a.detector_id, a.state, a.condition FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
            " WHERE a.state IN ('unack', 'ack', 'rtn_unack') AND a.active ORDER BY s.tag")


async def _seq(db: str) -> int:
    return (await _fetch(db, "SELECT coalesce(max(seq), 0) AS s FROM alarm_changes"))[0]["s"]


async def test_startup_then_dead_collector_then_one_silent_sensor(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, DETECTORS, n_gas=10, collector_of=collector_of)
    d.start()
    a = b = None
    try:
        await d.wait_connected()
        # 1. the collectors come up well after the stale timeout (a minute on a site, 8 s here)
        await asyncio.sleep(8 * SECOND)
        a = Collector(mosquitto.host, mosquitto.port, prefix, "edgeA", EDGE_A).start()
        b = Collector(mosquitto.host, mosquitto.port, prefix, "edgeB", EDGE_B).start()
        await until(lambda: d.stored() >= 40, what="readings of both collectors stored")
        await asyncio.sleep(4 * SECOND)
        assert await _fetch(db, _RAISES, 0) == [], "no alarm at start-up"
        # 2. one collector dies: exactly one alarm, communication lost with edgeA
        mark = await _seq(db)
        await a.kill()
        await until(lambda: _fetch(db, _VISIBLE), what="the comm_lost alarm")
        await asyncio.sleep(5 * SECOND)  # past the stale timeout of edgeA's sensors
        visible = [tuple(r) for r in await _fetch(db, _VISIBLE)]
        assert [(t, det, c) for t, det, _, c in visible] == [("G0", "comm", "comm_lost")], visible
        raises = [tuple(r) for r in await _fetch(db, _RAISES, mark)]
        assert raises[0] == ("G0", "comm", "unack", "comm_lost"), raises
        # its sensors' stale alarms are recorded, suppressed by design (not annunciated)
        assert sorted(raises[1:]) == [(t, "stale", "suppressed", "stale") for t in EDGE_A], raises
        sup = await _fetch(db, "SELECT DISTINCT a.suppressed_by FROM alarms a WHERE a.detector_id = 'stale'"
                               " AND a.state = 'suppressed'")
        assert [r["suppressed_by"] for r in sup] == ["comm/edgeA"]
        # 3. edgeA back, but one of its sensors stays silent: exactly one alarm, that sensor stale
        mark = await _seq(db)
        a = Collector(mosquitto.host, mosquitto.port, prefix, "edgeA", EDGE_A[:3] + EDGE_A[4:]).start()
        await until(lambda: _fetch(db, "SELECT 1 FROM alarms WHERE detector_id = 'comm' AND NOT active"),
                    what="communication with edgeA back")
        await asyncio.sleep(4 * SECOND)
        annunciated = [tuple(r) for r in await _fetch(db, _ANNUNCIATED, mark)]
        assert annunciated == [("G3", "stale", "stale")], annunciated
        visible = [tuple(r) for r in await _fetch(db, _VISIBLE)]
        assert [(t, det, c) for t, det, _, c in visible] == [("G3", "stale", "stale")], visible
        assert d.terminate() == 0, d.log()
    finally:
        for c in (a, b):
            if c is not None and not c._stop.is_set():
                await c.kill()
        _stop(d)


def test_comm_lost_one_condition_per_collector_held_on_its_anchor():
    cls = REGISTRY["comm_lost"]
    sensors = [SensorInfo(id=f"s{i}", kind="gas", unit="ppm", range_min=0, range_max=100, area="A",
                          collector="edgeA" if i < 3 else "edgeB") for i in range(5)]
    det = cls(cls.Params(timeout=10, startup_grace=100), sensors)
    det.restart_clock(0.0)
    out = det.tick(50.0)  # nobody heard yet: within the start-up grace
    assert out.code.tolist() == [0, 0]
    det.update(np.array([0, 1, 2, 3, 4]), np.full(5, 60.0), np.ones(5))
    det.update(np.array([1, 4]), np.full(2, 65.0), np.ones(2))
    out = det.tick(74.0)  # edgeA last heard at 65 (from s1, not its anchor s0): alive
    assert dict(zip(out.idx.tolist(), out.code.tolist())) == {0: 0, 3: 0}
    out = det.tick(76.0)
    assert dict(zip(out.idx.tolist(), out.code.tolist())) == {0: 1, 3: 1}
    # a Sparkplug NDEATH of a whole collector: comm_lost at once
    det.update(np.array([0, 3]), np.full(2, 80.0), np.ones(2))
    det.tick(81.0)
    out = det.mark_stale(np.array([3, 4]), 82.0)
    assert (out.idx.tolist(), out.code.tolist()) == ([3], [1])


def test_stale_start_up_grace_covers_a_collector_never_heard_from():
    cls = REGISTRY["stale"]
    sensors = [SensorInfo(id=f"s{i}", kind="gas", unit="ppm", range_min=0, range_max=100, area="A",
                          collector="edgeA" if i < 3 else "edgeB") for i in range(5)]
    det = cls(cls.Params(timeout=10, startup_grace=100), sensors)
    det.restart_clock(0.0)
    assert det.tick(60.0).code.tolist() == [0] * 5  # a minute: collectors not up yet, no stale
    det.update(np.array([0, 1]), np.full(2, 61.0), np.ones(2))  # edgeA up, s2 silent; edgeB still down
    assert det.tick(70.0).code.tolist() == [0] * 5
    det.update(np.array([0, 1]), np.full(2, 70.5), np.ones(2))
    assert det.tick(72.0).code.tolist() == [0, 0, 1, 0, 0]  # s2: grace from its collector's first report
    assert det.tick(101.0).code.tolist() == [1, 1, 1, 1, 1]  # s0, s1 silent for 30 s; edgeB past startup_grace
