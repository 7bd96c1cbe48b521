"""A gas release above full scale and a broken loop, end to end: pymodbus's server plays the gas
controller, ``plantwatch collect`` reads it, the real Mosquitto, daemon and TimescaleDB judge it.

A gas controller drives its 4-20 mA loop to 20.5-22 mA when the gas is above full scale (NAMUR
NE43 over range): the most dangerous reading there is, not a sensor fault. The limit detector must
raise ``over_range`` with the first such reading, without waiting for its on-delay (and without a
stale alarm). A loop below 3.6 mA (wire break) is a signal failure, alarmed at once by the
out-of-range detector rather than after the stale timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiomqtt
import asyncpg
import pytest

from .edge_helpers import STALE_TIMEOUT, CollectProcess, ModbusServer, collect_yaml, eventually, start_daemon

pytestmark = pytest.mark.slow

SENSORS = [f"id: G{i}, kind: gas, quantity: H2S, unit: ppm, range: [0, 100]" for i in range(3)]
ON_DELAY = 30.0  # far longer than a poll: an alarm at the first over-range reading did not wait for it
DETECTORS = f"""\
  - {{id: gas-limit, type: limit, select: {{kind: gas}}, params: {{high: 5, high_high: 10, on_delay: {ON_DELAY}, off_delay: 2}}}}
  - {{id: gas-range, type: out_of_range, select: {{kind: gas}}}}
"""
POLL = 0.3


def sources(port: int) -> str:
    chans = "\n".join(f"      - {{sensor: G{i}, address: {i}, scale: 0.001, loop: {{range: [0, 100]}}}}" for i in range(3))
    return f"""\
  - type: modbus
    id: gas-panel
    host: 127.0.0.1
    port: {port}
    interval: {POLL}
    channels:
{chans}
"""


async def _events(dsn: str, detector: str, sensor: str) -> list[tuple[str, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT e.condition, extract(epoch FROM e.started_at)::float8 AS t FROM events e"
                                " JOIN sensors s ON s.id = e.sensor_id WHERE e.detector_id = $1 AND s.tag = $2"
                                " ORDER BY e.started_at", detector, sensor)
        return [(r["condition"], r["t"]) for r in rows]
    finally:
        await conn.close()


async def _first_reading(dsn: str, sensor: str, quality: int, since: float) -> tuple[float, float] | None:
    """(time, value) of the first reading of ``sensor`` with ``quality`` at or after ``since``."""
    conn = await asyncpg.connect(dsn)
    try:
        r = await conn.fetchrow("SELECT extract(epoch FROM r.time)::float8 AS t, r.value FROM readings r"
                                " JOIN sensors s ON s.id = r.sensor_id WHERE s.tag = $1 AND r.quality = $2"
                                " AND r.time >= to_timestamp($3) ORDER BY r.time LIMIT 1", sensor, quality, since)
        return (r["t"], r["value"]) if r else None
    finally:
        await conn.close()


async def _active(dsn: str) -> dict[tuple[str, str], tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT a.detector_id, s.tag, a.condition, a.severity FROM alarms a"
                                " JOIN sensors s ON s.id = a.sensor_id WHERE a.active")
        return {(r["detector_id"], r["tag"]): (r["condition"], r["severity"]) for r in rows}
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def _gas_panel(tmp_path, mosquitto, db, topic_prefix):
    """A gas panel (three channels at 4.4 mA = 2.5 ppm), the daemon and ``plantwatch collect`` reading it,
    the alarms/changes messages gathered; yields (panel, collector, changes) once readings arrive."""
    prefix = topic_prefix.rstrip("/")
    listener = None
    panel = ModbusServer()
    await panel.start()
    await panel.set("holding", 0, [4400, 4400, 4400])
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix, detectors=DETECTORS)
    c = CollectProcess(tmp_path, collect_yaml(sources(panel.port), mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3"))
    try:
        await d.wait_connected()
        changes: list[dict] = []  # what operators' tools (and webhooks) are told: alarms/changes
        listener = asyncio.create_task(_listen(mosquitto, f"{prefix}/testsite/alarms/changes", changes))
        c.start()
        await eventually(lambda: _first_reading(db, "G2", 0, 0.0), "the first readings", on_fail=c.log)
        yield panel, c, changes
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        if listener is not None:
            listener.cancel()
        c.kill()
        d.kill()
        await panel.stop()


async def test_gas_above_full_scale_raises_over_range_with_the_first_reading(tmp_path, mosquitto, db, topic_prefix):
    async with _gas_panel(tmp_path, mosquitto, db, topic_prefix) as (panel, c, changes):
        # gas above full scale: 20.8 mA (NE43 over range) on G0, 22 mA (beyond 21 mA) on G1
        written = time.time()
        await panel.set("holding", 0, [20800, 22000])
        seen: list[dict] = [{}]

        async def over_range():
            seen[0] = a = await _active(db)
            return a if all(a.get(("gas-limit", s), ("",))[0] == "over_range" for s in ("G0", "G1")) else None

        active = await eventually(over_range, "over_range alarms on G0 and G1", timeout=30,
                                  on_fail=lambda: f"active alarms: {seen[0]}")
        assert active[("gas-limit", "G0")] == ("over_range", "critical")
        for sensor, quality in (("G0", 1), ("G1", 2)):  # 20.8 mA uncertain, 22 mA bad: both judged
            t_first, value = await _first_reading(db, sensor, quality, written)
            assert value == 100.0  # stored at the top of the range
            events = await _events(db, "gas-limit", sensor)
            # raised by the first over-range reading itself: no on-delay, no stale timeout
            assert events[-1] == ("over_range", t_first), (sensor, events, t_first)
            print(f"{sensor}: over_range raised {t_first - written:.2f} s after the register was written"
                  f" (poll {POLL} s + batch 0.5 s)")
        assert ("silent", "G0") not in active and ("silent", "G1") not in active  # not mistaken for a stale sensor
        await eventually(lambda: _async([m for m in changes if m["condition"] == "over_range"]),
                         "over_range on alarms/changes")

        # back inside the range: the gas alarm returns to high_high (after the off-delay), G1 to normal
        await panel.set("holding", 0, [12000, 4400])  # 50 ppm, 2.5 ppm

        async def recovered():
            a = await _active(db)
            return a if a.get(("gas-limit", "G0"), ("",))[0] == "high_high" and ("gas-limit", "G1") not in a else None

        await eventually(recovered, "over range back to high_high, G1 normal", timeout=30, on_fail=c.log)


async def test_a_broken_loop_is_a_signal_failure_alarmed_at_once(tmp_path, mosquitto, db, topic_prefix):
    async with _gas_panel(tmp_path, mosquitto, db, topic_prefix) as (panel, c, changes):
        # a broken loop: 2.0 mA on G2 is a signal failure, alarmed at once (not after the stale timeout)
        written = time.time()
        await panel.set("holding", 2, [2000])
        seen: list[dict] = [{}]

        async def signal_failure():
            seen[0] = a = await _active(db)
            return a if a.get(("gas-range", "G2"), ("",))[0] == "signal_failure" else None

        await eventually(signal_failure, "a signal_failure alarm on G2", timeout=30,
                         on_fail=lambda: f"active alarms: {seen[0]}")
        t_first, value = await _first_reading(db, "G2", 2, written)
        assert value == 0.0
        events = await _events(db, "gas-range", "G2")
        assert events[-1] == ("signal_failure", t_first), (events, t_first)
        assert events[-1][1] < t_first + STALE_TIMEOUT
        assert not [e for e in await _events(db, "gas-limit", "G2")]  # no measurement, so no gas alarm either way
        assert [m for m in changes if m["condition"] == "signal_failure"]

        # a measurement again: the signal failure clears
        await panel.set("holding", 2, [4400])

        async def cleared():
            a = await _active(db)
            return True if ("gas-range", "G2") not in a else None

        await eventually(cleared, "the signal failure clears", timeout=30, on_fail=c.log)


async def _listen(mosquitto, topic: str, out: list[dict]) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topic, qos=1)
        async for m in client.messages:
            out.append(json.loads(m.payload))


async def _async(value):
    return value
