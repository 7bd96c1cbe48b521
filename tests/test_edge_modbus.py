"""Modbus as integrators meet it: a gateway with several unit ids, coils / discrete inputs / bits in
registers as contact readings, every byte order and 64-bit types, RTU over TCP and over a serial
line -- each against pymodbus's own server, through ``plantwatch collect``, a real Mosquitto, the
daemon and TimescaleDB.
"""
from __future__ import annotations

import asyncpg
import pytest

from plantwatch.connectors.edge.modbus_decode import encode

from .edge_helpers import (CollectProcess, ModbusGateway, NullModem, collect_yaml, eventually, latest, logged,
                           start_daemon, teardown)

pytestmark = pytest.mark.slow

GOOD = 0
SENSORS = [
    "id: P-ABCD, kind: pressure, unit: bar, range: [0, 40]",
    "id: P-CDAB, kind: pressure, unit: bar, range: [0, 40]",
    "id: P-BADC, kind: pressure, unit: bar, range: [0, 40]",
    "id: P-DCBA, kind: pressure, unit: bar, range: [0, 40]",
    "id: F-F64, kind: flow, unit: kg/h, range: [0, 100]",
    "id: F-I64, kind: flow, unit: kg, range: [-1e13, 1e13]",
    "id: L-U64, kind: level, unit: kg, range: [0, 1e13]",
    "id: RELAY-1, kind: contact, unit: '', range: [0, 1]",
    "id: ESD-1, kind: contact, unit: '', range: [0, 1]",
    "id: DOOR-1, kind: contact, unit: '', range: [0, 1]",
    "id: P-U9, kind: pressure, unit: bar, range: [0, 40]",  # behind the gateway, but no device 9 answers
]
CONTACTS = ("  - {id: contacts, type: contact_state, select: {kind: contact}, params: {alarm_when: open},"
            " severity: {contact_alarm: critical}}\n")


def gateway_source(port: int, framing: str = "socket") -> str:
    return f"""\
  - type: modbus
    id: gateway
    host: 127.0.0.1
    port: {port}
    framing: {framing}
    unit: 1
    interval: 0.3
    timeout: 1.0
    backoff_max: 1.0
    channels:
      - {{sensor: P-ABCD, address: 0, type: float32, byte_order: ABCD}}
      - {{sensor: P-CDAB, address: 2, type: float32, byte_order: CDAB}}
      - {{sensor: P-BADC, address: 4, type: float32, byte_order: BADC}}
      - {{sensor: P-DCBA, address: 6, type: float32, byte_order: DCBA}}
      - {{sensor: F-F64, unit_id: 7, address: 10, type: float64, byte_order: BADC}}
      - {{sensor: F-I64, unit_id: 7, table: input, address: 20, type: int64, byte_order: DCBA}}
      - {{sensor: L-U64, table: input, address: 30, type: uint64, byte_order: CDAB}}
      - {{sensor: RELAY-1, unit_id: 7, table: coil, address: 3}}
      - {{sensor: ESD-1, table: discrete_input, address: 5}}
      - {{sensor: DOOR-1, unit_id: 7, address: 50, bit: 3}}
      - {{sensor: P-U9, unit_id: 9, address: 0}}
"""


async def fill(gw: ModbusGateway) -> None:
    await gw.set(1, "holding", 0, encode(12.5, "float32", "ABCD") + encode(13.25, "float32", "CDAB")
                 + encode(14.75, "float32", "BADC") + encode(15.5, "float32", "DCBA"))
    await gw.set(7, "holding", 10, encode(21.125, "float64", "BADC"))
    await gw.set(7, "input", 20, encode(-1_234_567_890_123, "int64", "DCBA"))
    await gw.set(1, "input", 30, encode(9_000_000_000_001, "uint64", "CDAB"))
    await gw.set(7, "coil", 3, [True])
    await gw.set(1, "discrete_input", 5, [True])
    await gw.set(7, "holding", 50, [0b1000_0000_0000_1000])  # bit 3 (and bit 15) set


EXPECTED = {"P-ABCD": 12.5, "P-CDAB": 13.25, "P-BADC": 14.75, "P-DCBA": 15.5, "F-F64": 21.125,
            "F-I64": -1_234_567_890_123.0, "L-U64": 9_000_000_000_001.0, "RELAY-1": 1.0, "ESD-1": 1.0, "DOOR-1": 1.0}


async def contact_alarms(dsn: str) -> dict[str, tuple[bool, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT s.tag, a.active, a.condition, a.severity FROM alarms a JOIN sensors s"
                                " ON s.id = a.sensor_id WHERE a.detector_id = 'contacts'")
        return {r["tag"]: (r["active"], r["condition"], r["severity"]) for r in rows}
    finally:
        await conn.close()


async def all_values(db: str, n: int = len(SENSORS)):
    got = await latest(db)
    return got if len(got) == n else None


async def test_gateway_units_share_one_connection_and_contacts_alarm_when_they_open(
        tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    gw = ModbusGateway([1, 7])
    await gw.start()
    await fill(gw)
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix, detectors=CONTACTS)
    c = CollectProcess(tmp_path, collect_yaml(gateway_source(gw.port), mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3"))
    try:
        await d.wait_connected()
        c.start()
        got = await eventually(lambda: all_values(db, len(SENSORS) - 1), "a reading of every channel but P-U9",
                               on_fail=c.log)
        assert {k: v for k, (v, _, _) in got.items()} == EXPECTED
        # the gateway answers for the missing unit 9 with an exception: its request is skipped, logged once
        await eventually(lambda: logged(c, "modbus gateway: unit 9 holding registers 0..0 refused"),
                         "the refused unit in the log", timeout=10, on_fail=c.log)
        assert {q for _, q, _ in got.values()} == {GOOD}
        # unit 1 and unit 7 are read over the gateway's one TCP connection
        assert gw.connections == 1

        # the relay (a coil of unit 7) and the door switch (bit 3 of a register) open: each its own alarm
        await gw.set(7, "coil", 3, [False])
        await gw.set(7, "holding", 50, [0b1000_0000_0000_0000])

        async def opened():
            a = await contact_alarms(db)
            return a if {k for k, v in a.items() if v[0]} == {"RELAY-1", "DOOR-1"} else None

        alarms = await eventually(opened, "contact alarms for the opened relay and door", on_fail=c.log)
        assert alarms["RELAY-1"] == (True, "contact_alarm", "critical")
        assert alarms["DOOR-1"] == (True, "contact_alarm", "critical")
        assert (await latest(db))["ESD-1"][0] == 1.0  # closed: no alarm

        # the relay closes again: its alarm clears, the door's stays
        await gw.set(7, "coil", 3, [True])

        async def relay_back():
            a = await contact_alarms(db)
            return a if not a["RELAY-1"][0] and a["DOOR-1"][0] else None

        await eventually(relay_back, "the relay's alarm clears when it closes", on_fail=c.log)
        assert gw.connections == 1
        assert c.log().count("unit 9 holding registers 0..0 refused") == 1
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        await teardown(c, d, gw)


RTU_SENSORS = ["id: P-RTU1, kind: pressure, unit: bar, range: [0, 40]",
               "id: P-RTU2, kind: pressure, unit: bar, range: [0, 40]",
               "id: ESD-RTU, kind: contact, unit: '', range: [0, 1]"]


def rtu_channels() -> str:
    return """\
    channels:
      - {sensor: P-RTU1, address: 0, type: float32}
      - {sensor: P-RTU2, unit_id: 12, table: input, address: 4, type: int16, scale: 0.1}
      - {sensor: ESD-RTU, unit_id: 12, table: discrete_input, address: 0}
"""


async def rtu_fill(gw: ModbusGateway, p1: float) -> None:
    await gw.set(11, "holding", 0, encode(p1, "float32"))
    await gw.set(12, "input", 4, encode(123, "int16"))
    await gw.set(12, "discrete_input", 0, [True])


@pytest.mark.parametrize("line", ["serial", "rtu-over-tcp"])
async def test_rtu_framing_over_a_serial_line_and_over_tcp(line, tmp_path, mosquitto, db, topic_prefix):
    """RTU framing through pymodbus: over a pseudo-terminal pair with pymodbus's RTU server on the
    other end (an RS-485 line with units 11 and 12), and over TCP (a serial gateway in transparent mode)."""
    prefix = topic_prefix.rstrip("/")
    modem = NullModem() if line == "serial" else None
    gw = ModbusGateway([11, 12], framing="rtu", serial=modem.a if modem else None)
    await gw.start()
    await rtu_fill(gw, 17.5)
    where = (f"    serial: {{port: {modem.b}, baudrate: 19200, parity: N}}\n" if modem else
             f"    host: 127.0.0.1\n    port: {gw.port}\n    framing: rtu\n")
    source = f"  - type: modbus\n    id: rtu\n{where}    unit: 11\n    interval: 0.3\n    timeout: 1.0\n" + rtu_channels()
    d = start_daemon(tmp_path, RTU_SENSORS, mosquitto, db, prefix)
    c = CollectProcess(tmp_path, collect_yaml(source, mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3"))
    try:
        await d.wait_connected()
        c.start()
        got = await eventually(lambda: all_values(db, 3), "a reading of every RTU channel", on_fail=c.log)
        assert {k: (round(v, 6), q) for k, (v, q, _) in got.items()} == {
            "P-RTU1": (17.5, GOOD), "P-RTU2": (12.3, GOOD), "ESD-RTU": (1.0, GOOD)}
        await rtu_fill(gw, 18.25)

        async def changed():
            g = await latest(db)
            return g if g["P-RTU1"][0] == 18.25 else None

        await eventually(changed, "a changed value over RTU", on_fail=c.log)
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        await teardown(c, d, gw)
        if modem is not None:
            modem.close()


async def test_a_unit_that_does_not_answer_costs_its_requests_not_the_line():
    """A device behind the gateway that is silent (the gateway forwards, nothing comes back) times
    out its own requests; the other unit on the same connection is read on every poll."""
    from plantwatch.connectors.edge.modbus import ModbusDevice, ModbusSource, open_client
    from plantwatch.connectors.edge.sources import CollectMetrics

    gw = ModbusGateway([1, 9], silent=(9,))
    await gw.start()
    await gw.set(1, "holding", 0, [42])
    port = gw.port
    cfg = ModbusDevice(type="modbus", id="gw", host="127.0.0.1", port=port, timeout=0.5,
                       channels=[{"sensor": "A", "address": 0}, {"sensor": "B", "unit_id": 9, "address": 0}])
    metrics = CollectMetrics()
    source = ModbusSource(cfg, metrics)
    client = open_client(cfg)
    try:
        assert await client.connect()
        for _ in range(3):
            readings = await source.poll(client)
            assert [(r["sensor"], r["value"]) for r in readings] == [("A", 42.0)]
            assert client.connected
        assert metrics.errors.labels("gw")._value.get() == 3
    finally:
        client.close()
        await gw.stop()
