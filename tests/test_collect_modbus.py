"""``plantwatch collect`` reading pymodbus's server, through a real Mosquitto, daemon and TimescaleDB.

Values written into the server's registers arrive in the database converted to engineering units
with the right quality, for every data type and word order; a device that stops makes the
daemon's stale detector alarm on its sensors (not silence) while the other device keeps
reporting, and the collector picks the device up again when it is back.
"""
from __future__ import annotations

import struct
import urllib.request

import pytest

from .edge_helpers import (CollectProcess, ModbusServer, collect_yaml, eventually, free_tcp_port, latest,
                           stale_sensors, start_daemon)

pytestmark = pytest.mark.slow

SENSORS = [
    "id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 50]",
    "id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 100]",
    "id: G2, kind: gas, quantity: H2S, unit: ppm, range: [0, 50]",
    "id: G3, kind: gas, quantity: CH4, unit: '%LEL', range: [0, 100]",
    "id: T0, kind: temperature, unit: degC, range: [-50, 150]",
    "id: P0, kind: pressure, unit: bar, range: [0, 40]",
    "id: P1, kind: pressure, unit: bar, range: [0, 40]",
    "id: L0, kind: level, unit: kg, range: [0, 5000000]",
    "id: F0, kind: flow, unit: kg/h, range: [-10000000, 10000000]",
    "id: U0, kind: flow, unit: m3/h, range: [0, 70000]",
    "id: Z0, kind: flow, unit: m3/h, range: [0, 70000]",
]

BANDS = "[{low: 1.5, high: 2.5, state: fault}, {low: 2.8, high: 3.2, state: inhibit}]"


def sources(panel_port: int, plc_port: int) -> str:
    return f"""\
  - type: modbus
    id: panel
    host: 127.0.0.1
    port: {panel_port}
    interval: 0.3
    timeout: 1.0
    backoff_max: 1.0
    channels:
      - {{sensor: G0, address: 0, scale: 0.001, loop: {{range: [0, 50]}}}}
      - {{sensor: G1, address: 1, scale: 0.001, loop: {{range: [0, 100]}}}}
      - {{sensor: G2, address: 2, scale: 0.001, loop: {{range: [0, 50], bands: {BANDS}}}}}
      - {{sensor: T0, table: input, address: 0, type: int16, scale: 0.1}}
      - {{sensor: P0, address: 10, type: float32}}
      - {{sensor: P1, table: input, address: 10, type: float32, word_order: little}}
      - {{sensor: L0, address: 20, type: uint32, word_order: little}}
      - {{sensor: F0, table: input, address: 20, type: int32}}
      - {{sensor: U0, address: 30, type: uint16, scale: 1, offset: 0}}
      - {{sensor: Z0, address: 500}}  # past the device's registers: refused, the others still read
  - type: modbus
    id: plc
    host: 127.0.0.1
    port: {plc_port}
    unit: 7
    interval: 0.3
    channels:
      - {{sensor: G3, address: 5, scale: 0.001, loop: {{range: [0, 100]}}}}
"""


def regs(fmt: str, value, word_order: str = "big") -> list[int]:
    raw = struct.pack(">" + fmt, value)
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return words if word_order == "big" else words[::-1]


GOOD, UNCERTAIN, BAD = 0, 1, 2
PANEL_GOOD = {"G0", "T0", "P0", "P1", "L0", "F0", "U0"}


async def test_modbus_values_arrive_converted_and_a_stopped_device_raises_stale_alarms(
        tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    panel, plc = ModbusServer(), ModbusServer(unit=7)
    await panel.start()
    await plc.start()
    await panel.set("holding", 0, [12000, 3700, 2000])  # 12 mA; 3.7 mA under-range; 2 mA vendor fault
    await panel.set("input", 0, regs("h", -123))  # -12.3 degC
    await panel.set("holding", 10, regs("f", 12.5))
    await panel.set("input", 10, regs("f", 7.25, "little"))
    await panel.set("holding", 20, regs("I", 3_000_123, "little"))
    await panel.set("input", 20, regs("i", -7_654_321))
    await panel.set("holding", 30, [54321])
    await plc.set("holding", 5, [8000])  # 8 mA = 25 %LEL

    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix)
    metrics_port = free_tcp_port()
    c = CollectProcess(tmp_path, collect_yaml(sources(panel.port, plc.port), mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3", metrics_port=metrics_port))
    try:
        await d.wait_connected()
        c.start()

        async def all_arrived():
            got = await latest(db)
            return got if len(got) == len(SENSORS) - 1 else None

        got = await eventually(all_arrived, "readings of every sensor but Z0", on_fail=c.log)
        assert "modbus panel: unit 1 holding registers 500..500 refused" in c.log()
        values = {k: (round(v, 4), q) for k, (v, q, _) in got.items()}
        assert values == {
            "G0": (25.0, GOOD), "G1": (0.0, UNCERTAIN), "G2": (0.0, BAD), "G3": (25.0, GOOD),
            "T0": (-12.3, GOOD), "P0": (12.5, GOOD), "P1": (7.25, GOOD), "L0": (3_000_123.0, GOOD),
            "F0": (-7_654_321.0, GOOD), "U0": (54321.0, GOOD)}

        # values written on the server arrive
        await panel.set("holding", 0, [20000, 21500, 3000])  # 20 mA = 50 ppm; 21.5 mA failure; 3 mA inhibit
        await panel.set("holding", 10, regs("f", 30.0))

        async def changed():
            g = await latest(db)
            return g if (g["G0"][0], g["P0"][0], g["G1"][1:2], g["G2"][1:2]) == (50.0, 30.0, (BAD,), (BAD,)) else None

        got = await eventually(changed, "the new values", on_fail=c.log)
        assert got["G1"][0] == 100.0  # a failure above 21 mA is clamped to the range, not dead-lettered
        assert not (await stale_sensors(db)) & (PANEL_GOOD | {"G3"})

        # the panel stops: its sensors go stale; the PLC's keeps reporting
        await panel.stop()

        async def panel_stale():
            s = await stale_sensors(db)
            return s if PANEL_GOOD <= s else None

        stale = await eventually(panel_stale, "stale alarms for the stopped device's sensors", on_fail=c.log)
        assert "G3" not in stale
        plc_before = (await latest(db))["G3"][2]
        await eventually(lambda: _newer(db, "G3", plc_before), "the other device keeps reporting")
        assert "modbus panel: 127.0.0.1:%d unit 1 unavailable" % panel.port in c.log()
        errors = _metric(metrics_port, 'plantwatch_collect_source_errors_total{source="panel"}')
        assert errors >= 1

        # back again: the collector reconnects and the stale alarms clear
        await panel.start()

        async def panel_back():
            s = await stale_sensors(db)
            return True if not s & PANEL_GOOD else None

        await eventually(panel_back, "stale alarms clear when the device is back", on_fail=c.log)
        # a refused read is retried every poll but logged once, not every 0.3 s
        assert c.log().count("unit 1 holding registers 500..500 refused") == 1
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        c.kill()
        d.kill()
        await panel.stop()
        await plc.stop()


async def _newer(dsn: str, sensor: str, t: float) -> bool:
    return (await latest(dsn))[sensor][2] > t


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the collector's metrics")
