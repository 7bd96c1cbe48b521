"""``plantwatch collect`` subscribed to asyncua's server, through a real Mosquitto, daemon and TimescaleDB.

Data changes arrive with their source timestamps, converted, and with the quality the status code
gives (Good, Uncertain, Bad); a stopped server makes the daemon's stale detector alarm on its
sensors, and the collector subscribes again when the server is back.
"""
from __future__ import annotations

import time

import pytest

from .edge_helpers import CollectProcess, OpcuaServer, collect_yaml, eventually, latest, stale_sensors, start_daemon

pytestmark = pytest.mark.slow

SENSORS = [
    "id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 50]",
    "id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 50]",
    "id: P0, kind: pressure, unit: bar, range: [0, 40]",
    "id: T0, kind: temperature, unit: degC, range: [-50, 150]",
]
GOOD, UNCERTAIN, BAD = 0, 1, 2


def sources(server: OpcuaServer) -> str:
    return f"""\
  - type: opcua
    id: dcs
    url: {server.url}
    sampling_interval: 0.1
    publishing_interval: 0.2
    repeat_after: 1.0
    timeout: 2.0
    backoff_max: 1.0
    security: {{mode: None}}
    channels:
      - {{sensor: G0, node: "{server.node_id('GasLoop')}", loop: {{range: [0, 50]}}}}
      - {{sensor: G1, node: "{server.node_id('GasPpm')}"}}
      - {{sensor: P0, node: "{server.node_id('Pressure')}", scale: 0.001}}
      - {{sensor: T0, node: "{server.node_id('Temp')}", scale: 0.1, offset: -40}}
"""


async def test_opcua_changes_arrive_with_source_time_and_status_and_a_stopped_server_raises_stale_alarms(
        tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    names = ["GasLoop", "GasPpm", "Pressure", "Temp"]
    server = OpcuaServer(names)
    await server.start({"GasLoop": 12.0, "GasPpm": 3.0, "Pressure": 12500.0, "Temp": 650.0})
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix)
    c = CollectProcess(tmp_path, collect_yaml(sources(server), mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3", interval=0.2))
    try:
        await d.wait_connected()
        c.start()

        async def all_arrived():
            got = await latest(db)
            return got if len(got) == len(SENSORS) else None

        got = await eventually(all_arrived, "readings of every node", on_fail=c.log)
        assert {k: (round(v, 6), q) for k, (v, q, _) in got.items()} == {
            "G0": (25.0, GOOD), "G1": (3.0, GOOD), "P0": (12.5, GOOD), "T0": (25.0, GOOD)}

        # a change stamped by the source keeps its timestamp
        stamped = round(time.time() - 30, 3)
        await server.write("GasPpm", 4.5, source_time=stamped)

        async def g1_at_source_time():
            conn_rows = await _readings(db, "G1")
            return [r for r in conn_rows if abs(r[0] - stamped) < 0.001] or None

        [(t, v, q)] = await eventually(g1_at_source_time, "the change at its source timestamp", on_fail=c.log)
        assert (v, q) == (4.5, GOOD)

        # status codes: Uncertain keeps the value; Bad comes without one and repeats the last value, marked bad
        await server.write("GasPpm", 5.0, status="UncertainLastUsableValue")
        await eventually(lambda: _latest_is(db, "G1", 5.0, UNCERTAIN), "an uncertain reading", on_fail=c.log)
        await server.write("GasPpm", None, status="BadSensorFailure")
        await eventually(lambda: _latest_is(db, "G1", 5.0, BAD), "a bad reading", on_fail=c.log)
        # a 4-20 mA node below NE43's failure limit: bad, clamped to the range
        await server.write("GasLoop", 2.0)
        await eventually(lambda: _latest_is(db, "G0", 0.0, BAD), "a loop failure reading", on_fail=c.log)

        # unchanged values keep arriving (repeated while connected), so nothing is stale
        await server.write("Pressure", 20000.0)
        t_before = (await latest(db))["P0"][2]
        await eventually(lambda: _newer(db, "P0", t_before + 1.5), "the unchanged value repeated", on_fail=c.log)
        assert not (await stale_sensors(db)) & {"P0", "T0"}
        assert (await latest(db))["P0"][:2] == (20.0, GOOD)

        # the server stops: stale alarms, not silence
        await server.stop()
        await eventually(lambda: _stale_includes(db, {"P0", "T0"}), "stale alarms for the stopped server's sensors",
                         on_fail=c.log)
        assert f"opcua dcs: {server.url} unavailable" in c.log()

        # back on the same port: the collector subscribes again and the alarms clear
        await server.start({"GasLoop": 12.0, "GasPpm": 3.0, "Pressure": 15000.0, "Temp": 700.0})
        await eventually(lambda: _latest_is(db, "P0", 15.0, GOOD), "readings after the server is back", on_fail=c.log)
        await eventually(lambda: _stale_excludes(db, {"P0", "T0", "G0", "G1"}), "stale alarms clear", on_fail=c.log)
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        c.kill()
        d.kill()
        await server.stop()


async def _readings(dsn: str, sensor: str) -> list[tuple[float, float, int]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT extract(epoch FROM r.time)::float8 AS t, r.value, r.quality FROM readings r"
                                " JOIN sensors s ON s.id = r.sensor_id WHERE s.tag = $1 ORDER BY r.time", sensor)
        return [(r["t"], r["value"], r["quality"]) for r in rows]
    finally:
        await conn.close()


async def _latest_is(dsn: str, sensor: str, value: float, quality: int) -> bool:
    got = (await latest(dsn)).get(sensor)
    return got is not None and round(got[0], 6) == value and got[1] == quality


async def _newer(dsn: str, sensor: str, t: float) -> bool:
    return (await latest(dsn))[sensor][2] > t


async def _stale_includes(dsn: str, sensors: set[str]) -> bool:
    return sensors <= await stale_sensors(dsn)


async def _stale_excludes(dsn: str, sensors: set[str]) -> bool:
    return not sensors & await stale_sensors(dsn)


async def test_opcua_sign_and_encrypt_with_client_certificate(tmp_path, mosquitto, db, topic_prefix):
    from plantwatch.connectors.edge.opcua import certificate_uri

    from .edge_helpers import make_certificate

    prefix = topic_prefix.rstrip("/")
    srv_cert, srv_key = await make_certificate(tmp_path, "server", "urn:plantwatch:test:opcua-server", server=True)
    cli_cert, cli_key = await make_certificate(tmp_path, "collector", "urn:plantwatch:test:collect", server=False)
    assert certificate_uri(cli_cert) == "urn:plantwatch:test:collect"  # announced as the client's URI
    server = OpcuaServer(["Pressure"], certificate=srv_cert, private_key=srv_key)
    await server.start({"Pressure": 17250.0})
    source = f"""\
  - type: opcua
    id: secure
    url: {server.url}
    sampling_interval: 0.1
    publishing_interval: 0.2
    security: {{mode: SignAndEncrypt, policy: Basic256Sha256, certificate: {cli_cert}, private_key: {cli_key},
                server_certificate: {srv_cert}}}
    channels:
      - {{sensor: P0, node: "{server.node_id('Pressure')}", scale: 0.001}}
"""
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix)
    c = CollectProcess(tmp_path, collect_yaml(source, mosquitto=mosquitto, prefix=prefix,
                                              buffer=tmp_path / "buf.sqlite3", interval=0.2))
    try:
        await d.wait_connected()
        c.start()
        await eventually(lambda: _latest_is(db, "P0", 17.25, GOOD), "a reading over an encrypted session",
                         on_fail=c.log)
        await server.write("Pressure", 18500.0)
        await eventually(lambda: _latest_is(db, "P0", 18.5, GOOD), "a change over an encrypted session",
                         on_fail=c.log)
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        c.kill()
        d.kill()
        await server.stop()
