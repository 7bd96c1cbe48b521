"""Field defects of the ingest path, through a real Mosquitto and a real TimescaleDB with the
daemon as a process: a message that cannot be stored never stalls ingestion, a NaN never takes
its batch down, sensors belong to their collectors, and sequence gaps survive a restart."""
from __future__ import annotations

import json
import time
import uuid

import aiomqtt
import asyncpg
import msgspec
import pytest

from plantwatch.connectors.wire import encode_batch

from .helpers import DaemonProcess, make_batches, new_metrics_port, publish_batches, site_config
from .test_daemon_e2e import _wait_rows

pytestmark = pytest.mark.slow

LEVEL = "  - {id: TK1, kind: level, unit: m3, range: [0, 100], area: area1}\n"


def _daemon(tmp_path, mosquitto, db, prefix, *, n_gas=10) -> DaemonProcess:
    port = new_metrics_port()
    cfg = tmp_path / "site.yaml"
    text = site_config(n_gas=n_gas, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                       client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=port)
    cfg.write_text(text.replace("sensors:\n", "sensors:\n" + LEVEL, 1))
    return DaemonProcess(cfg, port)


async def _dead_letters(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT reason, detail, seq, payload FROM dead_letters ORDER BY id")
    finally:
        await conn.close()


async def test_values_that_cannot_be_stored_are_dead_lettered_and_ingest_goes_on(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, db, prefix)
    topic = f"{prefix}/testsite/edge1/readings"
    now = time.time()
    sensors = [f"G{i}" for i in range(10)]

    def batch(seq: int, k: int, **envelope) -> bytes:
        body = {"v": 1, "collector": "edge1", "seq": seq,
                "readings": [{"sensor": s, "time": now - 100 + k, "value": 1.0} for s in sensors]} | envelope
        return msgspec.json.encode(body)

    bad = [batch(2 ** 63, 50), batch(7, 51, sent=1e300), batch(-1, 52)]
    good = [batch(k, k) for k in range(6)]
    d.start()
    try:
        await d.wait_connected()
        await publish_batches(mosquitto.host, mosquitto.port, topic, good[:3] + bad + good[3:])
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/transfers/declared", [
            msgspec.json.encode({"tank": "TK1", "start": 1e300, "end": 1e300, "quantity": 5.0, "unit": "m3"})])
        got = await _wait_rows(db, "readings", 60, timeout=30)
        n_dead = await _wait_rows(db, "dead_letters", 4, timeout=10)
        m = d.metrics()
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
    assert (got, n_dead) == (60, 4)
    dead = await _dead_letters(db)
    assert [r["reason"] for r in dead] == ["bad_envelope"] * 3 + ["bad_transfer"]
    assert [r["payload"] for r in dead[:3]] == bad and all(r["seq"] is None for r in dead)
    assert m['plantwatch_readings_rejected_total{reason="bad_envelope"}'] == 3
    assert m.get("plantwatch_write_errors_total", 0) == 0


async def test_a_message_the_database_refuses_is_split_off_and_the_rest_stored(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, db, prefix)
    topic = f"{prefix}/testsite/edge1/readings"
    batches = make_batches("edge1", [f"G{i}" for i in range(10)], 20, t0=time.time() - 600, per_batch=10)
    # a rule of this database that validation cannot know about: the write of the unit fails
    refused = msgspec.json.decode(batches[7])
    refused["readings"][3]["value"] = 4.4
    batches[7] = msgspec.json.encode(refused)
    alarming = msgspec.json.decode(batches[6])  # written with the same unit: its alarm must not be lost
    alarming["readings"][0]["value"] = 12.0
    batches[6] = msgspec.json.encode(alarming)
    d.start()
    try:
        await d.wait_connected()
        conn = await asyncpg.connect(db)
        try:
            await conn.execute("ALTER TABLE readings ADD CONSTRAINT no_4_4 CHECK (value <> 4.4)")
        finally:
            await conn.close()
        await publish_batches(mosquitto.host, mosquitto.port, topic, batches)
        got = await _wait_rows(db, "readings", 190, timeout=30)
        n_dead = await _wait_rows(db, "dead_letters", 1, timeout=10)
        m = d.metrics()
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
    assert (got, n_dead) == (190, 1)
    dead = await _dead_letters(db)
    assert dead[0]["reason"] == "unstorable" and "no_4_4" in dead[0]["detail"]
    assert dead[0]["payload"] == batches[7] and dead[0]["seq"] == 7
    assert m['plantwatch_readings_rejected_total{reason="unstorable"}'] == 10
    conn = await asyncpg.connect(db)
    try:
        assert await conn.fetchval("SELECT last_seq FROM collectors WHERE id = 'edge1'") == 19
        assert await conn.fetchval("SELECT count(*) FROM readings WHERE value = 4.4") == 0
        raised = await conn.fetch("SELECT s.tag FROM alarm_changes c JOIN alarms a ON a.id = c.alarm_id"
                                  " JOIN sensors s ON s.id = a.sensor_id WHERE c.to_state = 'unack' AND c.condition = 'high_high'")
        assert [r["tag"] for r in raised] == [alarming["readings"][0]["sensor"]]
    finally:
        await conn.close()


async def test_nan_rejects_its_reading_and_wrong_collectors_are_refused(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, db, prefix, n_gas=100)
    now = time.time()
    rs = [{"sensor": f"G{i}", "time": now - 60, "value": 1.0} for i in range(100)]
    rs[42]["value"] = float("nan")
    with_nan = json.dumps({"v": 1, "collector": "edge1", "seq": 0, "readings": rs}).encode()  # bare NaN token
    malformed = b'{"v":1,"collector":"edge1","seq":1,"readings":[' + b'{"sensor":"G1","time":1,"value":1},' * 300 + b"oops]}"
    foreign = encode_batch("edge2", 0, [{"sensor": "G1", "time": now - 50, "value": 1.0},
                                        {"sensor": "G2", "time": now - 50, "value": 1.0}])
    d.start()
    try:
        await d.wait_connected()
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings", [with_nan, malformed])
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge2/readings", [foreign])
        got = await _wait_rows(db, "readings", 99, timeout=30)
        n_dead = await _wait_rows(db, "dead_letters", 4, timeout=10)
        m = d.metrics()
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
    assert (got, n_dead) == (99, 4)
    dead = await _dead_letters(db)
    by_reason: dict[str, list] = {}
    for r in dead:
        by_reason.setdefault(r["reason"], []).append(r)
    assert sorted((k, len(v)) for k, v in by_reason.items()) == [("malformed_json", 1), ("non_finite", 1), ("wrong_collector", 2)]
    assert b"NaN" in by_reason["non_finite"][0]["payload"]
    assert by_reason["malformed_json"][0]["payload"] == malformed and len(malformed) > 4096
    assert m['plantwatch_readings_rejected_total{reason="wrong_collector"}'] == 2


async def test_sequence_gap_across_a_restart_is_counted(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, db, prefix)
    topic = f"{prefix}/testsite/edge1/readings"
    batches = make_batches("edge1", [f"G{i}" for i in range(10)], 11, t0=time.time() - 600, per_batch=10)
    d.start()
    try:
        await d.wait_connected()
        await publish_batches(mosquitto.host, mosquitto.port, topic, batches[:5])  # seq 0..4
        assert await _wait_rows(db, "readings", 50, timeout=30) == 50
        assert d.terminate(timeout=30) == 0, d.log()
        d.start()
        await d.wait_connected()
        await publish_batches(mosquitto.host, mosquitto.port, topic, batches[10:])  # seq 10: 5..9 were lost
        assert await _wait_rows(db, "readings", 60, timeout=30) == 60
        m = d.metrics()
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
    conn = await asyncpg.connect(db)
    try:
        row = await conn.fetchrow("SELECT last_seq, gaps FROM collectors WHERE id = 'edge1'")
    finally:
        await conn.close()
    assert (row["last_seq"], row["gaps"]) == (10, 5)
    assert m['plantwatch_sequence_gaps_total{collector="edge1"}'] == 5


async def test_a_deeply_nested_message_is_dead_lettered_not_fatal(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, db, prefix)
    topic = f"{prefix}/testsite/edge1/readings"
    deep = b'{"v":1,"collector":"edge1","seq":1,"readings":[' + b"[" * 5000 + b"]" * 5000 + b"]}"
    good = make_batches("edge1", [f"G{i}" for i in range(10)], 3, t0=time.time() - 600, per_batch=10, seq0=2)
    d.start()
    try:
        await d.wait_connected()
        await publish_batches(mosquitto.host, mosquitto.port, topic, [deep] + good)
        got = await _wait_rows(db, "readings", 30, timeout=30)
        n_dead = await _wait_rows(db, "dead_letters", 1, timeout=10)
        assert d.proc.poll() is None, d.log()
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
    assert (got, n_dead) == (30, 1)
    (dead,) = await _dead_letters(db)
    assert dead["reason"] == "malformed_json" and dead["payload"] == deep
