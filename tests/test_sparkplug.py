"""Sparkplug B ingest, with an independent edge-node implementation (pysparkplug) building the
payloads. The decoder tests are pure; the daemon test goes through a real Mosquitto and a real
TimescaleDB, with the daemon as a process. pysparkplug's own MQTT client is written for
paho-mqtt 1, so its payloads are published with aiomqtt."""
from __future__ import annotations

import asyncio
import time
import uuid

import aiomqtt
import asyncpg
import pysparkplug as ps
import pytest
from prometheus_client import CollectorRegistry
from pysparkplug import _protobuf as ps_pb

from plantwatch.connectors.sparkplug import payload as sp
from plantwatch.connectors.sparkplug.session import Sessions
from plantwatch.connectors.sparkplug.topic import parse
from plantwatch.daemon.config.model import ConfigError, load_config_text
from plantwatch.daemon.ingest.sparkplug import SparkplugIngest
from plantwatch.daemon.ingest.validate import Registry

from .helpers import DaemonProcess, new_metrics_port, site_config

DT = ps.DataType


def _ms(t: float | None = None) -> int:
    return int((time.time() if t is None else t) * 1000)


def _birth_metrics(ms: int) -> list[ps.Metric]:
    return [
        ps.Metric(ms, "bdSeq", DT.INT64, 0),
        ps.Metric(ms, "Node Control/Rebirth", DT.BOOLEAN, False),
        ps.Metric(ms, "i8", DT.INT8, -5, alias=1),
        ps.Metric(ms, "i16", DT.INT16, -300, alias=2),
        ps.Metric(ms, "i32", DT.INT32, -70_000, alias=3),
        ps.Metric(ms, "i64", DT.INT64, -5_000_000_000, alias=4),
        ps.Metric(ms, "u8", DT.UINT8, 250, alias=5),
        ps.Metric(ms, "u16", DT.UINT16, 65_000, alias=6),
        ps.Metric(ms, "u32", DT.UINT32, 4_000_000_000, alias=7),
        ps.Metric(ms, "u64", DT.UINT64, 2**63 + 5, alias=8),
        ps.Metric(ms, "f", DT.FLOAT, 1.5, alias=9),
        ps.Metric(ms, "d", DT.DOUBLE, -2.25, alias=10),
        ps.Metric(ms, "b", DT.BOOLEAN, True, alias=11),
        ps.Metric(ms, "s", DT.STRING, "running", alias=12),
    ]


SP_DETECTORS = ("detectors:\n"
                "  - {id: silent, type: stale, select: {kind: gas}, params: {timeout: 3600}}\n")


def _values(o) -> dict[str, float | None]:
    return {m.name: m.value for m in o.metrics if m.error is None}


# --- decoder: payloads built by the third-party library -------------------------------------------
def test_birth_decodes_every_numeric_datatype_and_rejects_string_per_metric():
    ms = _ms()
    o = Sessions().handle(parse("spBv1.0/g/NBIRTH/n"), ps.NBirth(ms, 0, _birth_metrics(ms)).encode(), ms / 1000)
    assert o.refused is None and not o.rebirth
    assert _values(o) == {"i8": -5, "i16": -300, "i32": -70_000, "i64": -5_000_000_000, "u8": 250, "u16": 65_000,
                          "u32": 4_000_000_000, "u64": float(2**63 + 5), "f": 1.5, "d": -2.25, "b": 1.0}
    errors = {m.name: m.error.reason for m in o.metrics if m.error is not None}
    assert errors == {"s": "sp_unsupported_type"}
    assert all(m.t == ms / 1000 for m in o.metrics)


def test_data_by_alias_with_metric_or_payload_timestamp_and_null():
    s, t0 = Sessions(), _ms()
    s.handle(parse("spBv1.0/g/NBIRTH/n"), ps.NBirth(t0, 0, _birth_metrics(t0)).encode(), t0 / 1000)
    data = ps.NData(t0 + 1000, 1, [ps.Metric(t0 + 500, None, DT.INT8, -7, alias=1),  # own timestamp
                                   ps.Metric(None, None, DT.DOUBLE, 3.5, alias=10),  # the payload's
                                   ps.Metric(t0 + 700, None, DT.FLOAT, None, alias=9, is_null=True)])
    o = s.handle(parse("spBv1.0/g/NDATA/n"), data.encode(), t0 / 1000)
    assert not o.gap and not o.rebirth
    got = {m.name: (m.t, m.value) for m in o.metrics}
    assert got == {"i8": ((t0 + 500) / 1000, -7.0), "d": ((t0 + 1000) / 1000, 3.5), "f": ((t0 + 700) / 1000, None)}


def test_tahu_style_sign_extended_small_ints_and_quality_property():
    """Eclipse Tahu sign-extends Int8/Int16 to 32 bits; Ignition puts OPC quality in a property."""
    p = ps_pb.Payload(timestamp=_ms(), seq=0)
    p.metrics.add(name="bdSeq", datatype=DT.INT64, long_value=0)
    p.metrics.add(name="t8", datatype=DT.INT8, int_value=2**32 - 3)
    for name, q in (("good", 192), ("uncertain", 64), ("bad", 0)):
        m = p.metrics.add(name=name, datatype=DT.DOUBLE, double_value=1.0)
        m.properties.keys.append("Quality")
        m.properties.values.add(type=DT.INT32, int_value=q)
    o = Sessions().handle(parse("spBv1.0/g/NBIRTH/n"), p.SerializeToString(), time.time())
    assert {m.name: (m.value, m.quality) for m in o.metrics} == {
        "t8": (-3.0, 0), "good": (1.0, 0), "uncertain": (1.0, 1), "bad": (1.0, 2)}


def test_quality_property_carries_over_range_and_signal_failure():
    """OPC DA quality words: high-limited or 'engineering units exceeded' is over range (the daemon
    judges it at full scale); Bad sensor / device failure or not connected is a signal failure."""
    p = ps_pb.Payload(timestamp=_ms(), seq=0)
    p.metrics.add(name="bdSeq", datatype=DT.INT64, long_value=0)
    words = {"plain": 192, "good_high_limited": 194, "eu_exceeded": 84, "eu_exceeded_high": 86,
             "eu_exceeded_low": 85, "bad_high_limited": 2, "sensor_failure": 16, "device_failure": 12,
             "not_connected": 8, "out_of_service": 28, "comm_failure": 24}
    for name, q in words.items():
        m = p.metrics.add(name=name, datatype=DT.DOUBLE, double_value=1.0)
        m.properties.keys.append("Quality")
        m.properties.values.add(type=DT.INT32, int_value=q)
    o = Sessions().handle(parse("spBv1.0/g/NBIRTH/n"), p.SerializeToString(), time.time())
    assert {m.name: (m.quality, m.flag) for m in o.metrics} == {
        "plain": (0, 0), "good_high_limited": (0, 1), "eu_exceeded": (1, 1), "eu_exceeded_high": (1, 1),
        "eu_exceeded_low": (1, 0), "bad_high_limited": (2, 1), "sensor_failure": (2, 2), "device_failure": (2, 2),
        "not_connected": (2, 2), "out_of_service": (2, 0), "comm_failure": (2, 0)}


def test_sequence_wraps_at_256_and_a_gap_asks_for_rebirth():
    s, t0 = Sessions(), _ms()
    s.handle(parse("spBv1.0/g/NBIRTH/n"), ps.NBirth(t0, 0, _birth_metrics(t0)).encode(), t0 / 1000)
    s.nodes["g", "n"].seq = 254
    for seq in (255, 0, 1):
        o = s.handle(parse("spBv1.0/g/NDATA/n"), ps.NData(t0, seq, [ps.Metric(t0, None, DT.INT8, 1, alias=1)]).encode(), t0 / 1000)
        assert not o.gap and not o.rebirth, seq
    o = s.handle(parse("spBv1.0/g/NDATA/n"), ps.NData(t0, 3, [ps.Metric(t0, None, DT.INT8, 2, alias=1)]).encode(), t0 / 1000)
    assert o.gap and o.rebirth
    assert _values(o) == {"i8": 2.0}  # the readings of the message after the gap are kept


def test_data_before_birth_is_refused_and_asks_for_rebirth_once_per_interval():
    s, t0 = Sessions(), _ms()
    raw = ps.NData(t0, 5, [ps.Metric(t0, None, DT.INT8, 1, alias=1)]).encode()
    first = s.handle(parse("spBv1.0/g/NDATA/n"), raw, t0 / 1000)
    again = s.handle(parse("spBv1.0/g/NDATA/n"), raw, t0 / 1000 + 1)
    assert first.refused[0] == "sp_no_birth" and first.rebirth
    assert again.refused[0] == "sp_no_birth" and not again.rebirth


def test_ddeath_without_a_known_birth_still_makes_the_device_stale():
    t0 = _ms()
    o = Sessions().handle(parse("spBv1.0/g/DDEATH/n/d"), ps.DDeath(t0, 4).encode(), t0 / 1000)
    assert o.died == "device" and o.rebirth and o.refused is None


def test_ndeath_must_carry_the_births_bdseq():
    s, t0 = Sessions(), _ms()
    s.handle(parse("spBv1.0/g/NBIRTH/n"), ps.NBirth(t0, 0, [ps.Metric(t0, "bdSeq", DT.INT64, 7)]).encode(), t0 / 1000)
    old = s.handle(parse("spBv1.0/g/NDEATH/n"), ps.NDeath(t0, ps.Metric(t0, "bdSeq", DT.INT64, 6)).encode(), t0 / 1000)
    assert old.ignored_death and old.died is None
    cur = s.handle(parse("spBv1.0/g/NDEATH/n"), ps.NDeath(t0, ps.Metric(t0, "bdSeq", DT.INT64, 7)).encode(), t0 / 1000)
    assert cur.died == "node"


def test_malformed_payload_is_refused():
    o = Sessions().handle(parse("spBv1.0/g/NBIRTH/n"), b"\x0a\xff\xff\xff", time.time())
    assert o.refused[0] == "sp_malformed"


def test_rebirth_command_is_read_by_the_edge_node_library():
    cmd = ps.NCmd.decode(sp.rebirth_command())
    assert [(m.name, m.value) for m in cmd.metrics] == [("Node Control/Rebirth", True)]


def test_mapping_rejects_mapped_string_and_out_of_range_and_ignores_unmapped():
    cfg = load_config_text(site_config(n_gas=3, detectors=SP_DETECTORS) + (
        "sparkplug:\n  groups: [g]\n  metrics:\n"
        "    - {source: g/n, metric: s, sensor: G0}\n"
        "    - {source: g/n, metric: u16, sensor: G1}\n"
        "    - {source: g/n, metric: f, sensor: G2}\n"))
    reg = Registry.build(cfg, {s.id: i + 1 for i, s in enumerate(cfg.sensors)})
    registry = CollectorRegistry()
    ing = SparkplugIngest(cfg, reg, registry)
    ms = _ms()
    h = ing.handle("spBv1.0/g/NBIRTH/n", ps.NBirth(ms, 0, _birth_metrics(ms)).encode(), ms / 1000)
    v = h.validated
    assert [cfg.sensors[c].id for c in v.col] == ["G2"] and list(v.value) == [1.5]
    assert sorted((d.reason, d.detail.split(":")[0]) for d in v.rejected) == [
        ("out_of_range", "u16 -> G1"), ("sp_unsupported_type", "s")]
    # the birth's other numeric metrics are counted, not dead-lettered
    assert registry.get_sample_value("plantwatch_sparkplug_unmapped_metrics_total") == 9
    assert v.flag is None


def test_mapped_metric_flags_reach_the_detectors():
    cfg = load_config_text(site_config(n_gas=2, detectors=SP_DETECTORS) + (
        "sparkplug:\n  groups: [g]\n  metrics:\n"
        "    - {source: g/n, metric: a, sensor: G0}\n"
        "    - {source: g/n, metric: b, sensor: G1}\n"))
    reg = Registry.build(cfg, {s.id: i + 1 for i, s in enumerate(cfg.sensors)})
    ing = SparkplugIngest(cfg, reg, CollectorRegistry())
    p = ps_pb.Payload(timestamp=_ms(), seq=0)
    p.metrics.add(name="bdSeq", datatype=DT.INT64, long_value=0)
    for name, value, q in (("a", 100.0, 86), ("b", 0.0, 16)):
        m = p.metrics.add(name=name, datatype=DT.DOUBLE, double_value=value)
        m.properties.keys.append("Quality")
        m.properties.values.add(type=DT.INT32, int_value=q)
    v = ing.handle("spBv1.0/g/NBIRTH/n", p.SerializeToString(), time.time()).validated
    assert v.rejected == [] and v.quality.tolist() == [1, 2] and v.flag.tolist() == [1, 2]


# --- config ----------------------------------------------------------------------------------------


def test_config_mapping_errors_name_file_and_line():
    text = site_config(n_gas=2, n_pressure=1, detectors=SP_DETECTORS) + (
        "sparkplug:\n"
        "  groups: [plant]\n"
        "  metrics:\n"
        "    - {source: plant/edge1, metric: H2S, sensor: G9}\n"
        "    - {source: other/edge1, metric: H2S, sensor: G0}\n"
        "    - {source: plant/edge1/dev, metric: P, sensor: P0}\n")
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "site.yaml")
    lines = text.splitlines()
    row = {k: i + 1 for i, line in enumerate(lines) for k in ("G9", "other/", "P0}") if k in line}
    probs = e.value.problems
    assert any(p.startswith(f"site.yaml:{row['G9']}:") and "unknown sensor 'G9'" in p for p in probs), probs
    assert any(p.startswith(f"site.yaml:{row['other/']}:") and "group 'other'" in p for p in probs), probs
    assert any(p.startswith(f"site.yaml:{row['P0}']}:") and "no enabled stale detector" in p for p in probs), probs
    assert len(probs) == 3, probs


# --- through the real broker and database ----------------------------------------------------------
class EdgeNode:
    """A Sparkplug edge node with two devices, its payloads built by pysparkplug and published
    through the real broker."""

    def __init__(self, client: aiomqtt.Client, group: str, node: str = "edge1"):
        self.c, self.group, self.node = client, group, node
        self.seq = 0
        self.bd_seq = 0

    def topic(self, kind: str, device: str | None = None) -> str:
        return str(ps.Topic(group_id=self.group, message_type=kind, edge_node_id=self.node,
                            device_id=device))

    def next_seq(self) -> int:
        s, self.seq = self.seq, (self.seq + 1) % 256
        return s

    async def send(self, kind: str, payload, device: str | None = None) -> None:
        await self.c.publish(self.topic(kind, device), payload.encode(), qos=1)

    async def births(self, t: float, v: float) -> None:
        """NBIRTH + DBIRTHs: names, aliases, datatypes and first values."""
        ms = _ms(t)
        self.seq = 0
        await self.send("NBIRTH", ps.NBirth(ms, self.next_seq(), [
            ps.Metric(ms, "bdSeq", DT.INT64, self.bd_seq), ps.Metric(ms, "Node Control/Rebirth", DT.BOOLEAN, False),
            ps.Metric(ms, "Node/H2S", DT.FLOAT, v, alias=1), ps.Metric(ms, "Node/Status", DT.STRING, "ok", alias=2)]))
        await self.send("DBIRTH", ps.DBirth(ms, self.next_seq(), [
            ps.Metric(ms, "H2S", DT.INT16, int(v) + 1, alias=10), ps.Metric(ms, "Pressure", DT.DOUBLE, v + 0.25, alias=11),
            ps.Metric(ms, "Alarm", DT.BOOLEAN, True, alias=12), ps.Metric(ms, "Count", DT.UINT32, int(v) + 2, alias=13),
            ps.Metric(ms, "Pressure2", DT.INT64, int(v) + 3, alias=14)]), "dev1")
        await self.send("DBIRTH", ps.DBirth(ms, self.next_seq(), [ps.Metric(ms, "H2S", DT.FLOAT, v + 0.5, alias=20)]),
                        "dev2")

    async def data(self, t: float, v: float, *, seq: int | None = None) -> None:
        """NDATA + DDATA naming metrics by alias only (no names, no datatypes)."""
        ms = _ms(t)
        if seq is not None:
            self.seq = seq
        await self.send("NDATA", ps.NData(ms, self.next_seq(), [ps.Metric(ms, None, DT.FLOAT, v, alias=1)]))
        await self.send("DDATA", ps.DData(ms, self.next_seq(), [
            ps.Metric(ms, None, DT.INT16, int(v) + 1, alias=10), ps.Metric(None, None, DT.DOUBLE, v + 0.25, alias=11),
            ps.Metric(ms, None, DT.BOOLEAN, False, alias=12), ps.Metric(ms, None, DT.UINT32, int(v) + 2, alias=13),
            ps.Metric(ms, None, DT.INT64, int(v) + 3, alias=14)]), "dev1")
        await self.send("DDATA", ps.DData(ms, self.next_seq(), [ps.Metric(ms, None, DT.FLOAT, v + 0.5, alias=20)]), "dev2")


def _sparkplug_site(tmp_path, mosquitto, db, group: str) -> DaemonProcess:
    port = new_metrics_port()
    detectors = ("detectors:\n"  # a timeout no test waits for: only a DEATH can make these stale
                 "  - {id: silent, type: stale, select: {areas: [area1, area2]}, params: {timeout: 3600}}\n")
    text = site_config(n_gas=5, n_pressure=2, mqtt=(mosquitto.host, mosquitto.port), dsn=db,
                       client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=port, detectors=detectors) + (
        "sparkplug:\n"
        f"  groups: [{group}]\n"
        "  metrics:\n"
        f"    - {{source: {group}/edge1, metric: Node/H2S, sensor: G0}}\n"
        f"    - {{source: {group}/edge1/dev1, metric: H2S, sensor: G1}}\n"
        f"    - {{source: {group}/edge1/dev1, metric: Pressure, sensor: P0}}\n"
        f"    - {{source: {group}/edge1/dev1, metric: Alarm, sensor: G2}}\n"
        f"    - {{source: {group}/edge1/dev1, metric: Count, sensor: G3}}\n"
        f"    - {{source: {group}/edge1/dev1, metric: Pressure2, sensor: P1}}\n"
        f"    - {{source: {group}/edge1/dev2, metric: H2S, sensor: G4}}\n")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(text)
    return DaemonProcess(cfg, port)


async def _until(conn: asyncpg.Connection, sql: str, want, *args, timeout: float = 30.0):
    got = None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = await conn.fetchval(sql, *args)
        if got == want:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"{sql} {args}: wanted {want!r}, last got {got!r}")


def _expected(v: float, alarm: float, *, dev2: bool = True) -> dict[str, float]:
    """What EdgeNode.births/data send for value ``v``, by the sensor each metric is mapped to."""
    out = {"G0": v, "G1": float(int(v) + 1), "P0": v + 0.25, "G2": alarm, "G3": float(int(v) + 2), "P1": float(int(v) + 3)}
    return {**out, "G4": v + 0.5} if dev2 else out


async def _readings_at(conn: asyncpg.Connection, t: float) -> dict[str, float]:
    rows = await conn.fetch("SELECT s.tag, r.value FROM readings r JOIN sensors s ON s.id = r.sensor_id"
                            " WHERE r.time = to_timestamp($1)", t)
    return {r["tag"]: r["value"] for r in rows}


STALE_ACTIVE = ("SELECT coalesce(string_agg(s.tag, ',' ORDER BY s.tag), '') FROM alarms a JOIN sensors s"
                " ON s.id = a.sensor_id WHERE a.detector_id = 'silent' AND a.active AND a.condition = 'stale'")


async def test_sparkplug_edge_node_through_broker_and_database(tmp_path, mosquitto, db):
    group = f"g{uuid.uuid4().hex[:10]}"
    d = _sparkplug_site(tmp_path, mosquitto, db, group)
    d.start()
    try:
        await d.wait_connected()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher, \
                aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
            await watcher.subscribe(f"spBv1.0/{group}/NCMD/#", qos=1)
            commands: list[tuple[str, ps.NCmd]] = []

            async def watch():
                async for m in watcher.messages:
                    commands.append((str(m.topic), ps.NCmd.decode(m.payload)))
            watching = asyncio.create_task(watch())
            node = EdgeNode(pub, group)
            conn = await asyncpg.connect(db)
            try:
                # births and data by alias: every mapped metric becomes a reading
                t1 = round(time.time() - 30, 3)
                await node.births(t1, 1.0)
                t2 = round(t1 + 1, 3)
                await node.data(t2, 2.0)
                await _until(conn, "SELECT count(*) FROM readings", 14)
                assert await _readings_at(conn, t1) == pytest.approx(_expected(1.0, 1.0))
                assert await _readings_at(conn, t2) == pytest.approx(_expected(2.0, 0.0))
                assert await conn.fetchval(STALE_ACTIVE) == ""
                assert await conn.fetchval("SELECT count(*) FROM dead_letters WHERE reason = 'sp_unsupported_type'") == 0

                # DDEATH: the device's sensor is stale at once (the stale timeout is an hour)
                await node.send("DDEATH", ps.DDeath(_ms(), node.next_seq()), "dev2")
                await _until(conn, STALE_ACTIVE, "G4")

                # a sequence gap: the daemon asks for a rebirth; the node's new births are ingested
                t3 = round(t2 + 1, 3)
                await node.data(t3, 3.0, seq=node.seq + 2)
                for _ in range(150):
                    if commands:
                        break
                    await asyncio.sleep(0.1)
                assert [(tp, [(m.name, m.value) for m in c.metrics]) for tp, c in commands] == [
                    (f"spBv1.0/{group}/NCMD/edge1", [("Node Control/Rebirth", True)])]
                t4 = round(t3 + 1, 3)
                node.bd_seq = 1
                await node.births(t4, 4.0)
                await _until(conn, "SELECT count(*) FROM readings WHERE time = to_timestamp($1)", 7, t4)
                # the readings after the gap are kept; dev2's, sent after its DDEATH, are not data
                assert await _readings_at(conn, t3) == pytest.approx(_expected(3.0, 0.0, dev2=False))
                assert await conn.fetchval("SELECT count(*) FROM dead_letters WHERE reason = 'sp_no_birth'") == 1
                await _until(conn, STALE_ACTIVE, "")  # the reborn device reports again

                # malformed protobuf: dead-lettered with its reason; the daemon goes on
                await pub.publish(f"spBv1.0/{group}/DDATA/edge1/dev1", b"\x0a\xff\xff\xff\xff", qos=1)
                await _until(conn, "SELECT count(*) FROM dead_letters WHERE reason = 'sp_malformed'", 1)
                t5 = round(t4 + 1, 3)
                await node.data(t5, 5.0)
                await _until(conn, "SELECT count(*) FROM readings WHERE time = to_timestamp($1)", 7, t5)

                # an NDEATH of the previous session (late Last Will) is ignored; the current one
                # makes every sensor of the node and its devices stale at once
                await node.send("NDEATH", ps.NDeath(_ms(), ps.Metric(None, "bdSeq", DT.INT64, 0)))
                await node.send("NDEATH", ps.NDeath(_ms(), ps.Metric(None, "bdSeq", DT.INT64, 1)))
                await _until(conn, STALE_ACTIVE, "G0,G1,G2,G3,G4,P0,P1")
                ignored = d.metrics().get("plantwatch_sparkplug_deaths_ignored_total", 0)
                assert ignored == 1

                # data after the death, before a new birth: dead-lettered, and a rebirth is requested
                commands.clear()
                await node.send("NDATA", ps.NData(_ms(), 0, [ps.Metric(_ms(), None, DT.FLOAT, 1.0, alias=1)]))
                await _until(conn, "SELECT count(*) FROM dead_letters WHERE reason = 'sp_no_birth'", 2)
                for _ in range(150):
                    if commands:
                        break
                    await asyncio.sleep(0.1)
                assert [tp for tp, _ in commands] == [f"spBv1.0/{group}/NCMD/edge1"]
                m = d.metrics()
                assert m.get('plantwatch_sparkplug_rebirth_requests_total{reason="sequence_gap"}') == 1
                assert m.get('plantwatch_sparkplug_rebirth_requests_total{reason="sp_no_birth"}') == 1
                assert m.get('plantwatch_readings_rejected_total{reason="sp_malformed"}') == 1
            finally:
                watching.cancel()
                await conn.close()
        assert d.terminate() == 0, d.log()
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
