"""Hostile input at the operator API, through a real daemon process, a real Mosquitto and a real
TimescaleDB: text the database cannot hold is refused at the boundary (400 naming the field) and
never stops ingestion or alarms; an operator action the database refuses anyway is quarantined,
not retried forever; every input error is a 4xx with a JSON reason; a SIGTERM during a stuck
write ends within ``ingest.shutdown_grace`` and loses nothing."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest

from plantwatch.connectors.services import free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.api import hash_token

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, superuser_dsn, until

pytestmark = pytest.mark.slow

OPERATOR = "tok-op-" + uuid.uuid4().hex


def _daemon(tmp_path: Path, mosquitto, dsn: str, prefix: str, *, ingest: str = "") -> tuple[DaemonProcess, int]:
    api_port, mport = free_port(), new_metrics_port()
    detectors = ("detectors:\n"
                 "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}\n"
                 f"api: {{port: {api_port}, tokens: [{{name: op1, role: operator, sha256: {hash_token(OPERATOR)}}}]}}\n")
    cfg = tmp_path / f"site-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(site_config(n_gas=10, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=dsn,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport, detectors=detectors,
                               ingest=ingest))
    return DaemonProcess(cfg, mport), api_port


def _post(port: int, path: str, raw: bytes | None, *, token: str | None = OPERATOR, method: str = "POST",
          timeout: float = 20) -> tuple[int, str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=raw,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), json.loads(r.read())
    except urllib.error.HTTPError as e:
        data = e.read()
        ct = e.headers.get("Content-Type", "")
        return e.code, ct, (json.loads(data) if "json" in ct else data.decode(errors="replace"))


async def _apost(*args, **kw):
    return await asyncio.to_thread(_post, *args, **kw)


async def _fetch(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _alarm_id(dsn: str, tag: str) -> int | None:
    rows = await _fetch(dsn, "SELECT a.id FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
                             " WHERE s.tag = $1 AND a.state = 'unack'", tag)
    return rows[0]["id"] if rows else None


def _crossing(seq: int, tag: str, value: float = 12.0) -> bytes:
    return encode_batch("edge1", seq, [{"sensor": tag, "time": time.time(), "value": value}])


async def test_unstorable_comment_is_400_and_alarms_keep_coming(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    topic = f"{prefix}/testsite/edge1/readings"
    d, api = _daemon(tmp_path, mosquitto, db, prefix)
    d.start()
    try:
        await d.wait_connected(60)
        await publish_batches(mosquitto.host, mosquitto.port, topic, [_crossing(0, "G0")])
        first = await until(lambda: _alarm_id(db, "G0"), timeout=30, what="the first alarm")
        await until(lambda: _apost(api, "/healthz", None, token=None, method="GET"), what="api up")
        # JSON escapes as any client writes them: a NUL and a lone surrogate
        for raw, why in [(b'{"reason": "a\\u0000b"}', "NUL"), (b'{"reason": "\\ud800"}', "surrogate"),
                         (b'{"text": "x\\u0000"}', "NUL")]:
            st, ct, got = await _apost(api, f"/api/alarms/{first}/comment", raw)
            assert st == 400 and "json" in ct and why in got["error"], (raw, st, got)
            assert ("reason" if b"reason" in raw else "text") in got["error"], got
        # ingestion and alarms go on: a crossing injected now is raised within seconds
        t0 = time.monotonic()
        await publish_batches(mosquitto.host, mosquitto.port, topic, [_crossing(1, "G1")])
        await until(lambda: _alarm_id(db, "G1"), timeout=15, what="an alarm injected after the bad comments")
        print(f"alarm after the bad comments raised in {time.monotonic() - t0:.2f} s")
        st, _, got = await _apost(api, f"/api/alarms/{first}/comment", b'{"reason": "checked on site"}')
        assert st == 200, got
        m = d.metrics()
        assert m["plantwatch_messages_acked_total"] == 2
        assert m.get("plantwatch_write_errors_total", 0) == 0
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
    rows = await _fetch(db, "SELECT reason FROM operator_actions ORDER BY id")
    assert [r["reason"] for r in rows] == ["checked on site"]


async def test_action_the_database_refuses_is_quarantined_not_retried(tmp_path, mosquitto, db, topic_prefix):
    """Whatever the unit holds: an operator action that passed validation but that this database
    refuses (a rule validation cannot know) is quarantined in dead_letters; the rest goes on."""
    prefix = topic_prefix.rstrip("/")
    topic = f"{prefix}/testsite/edge1/readings"
    d, api = _daemon(tmp_path, mosquitto, db, prefix)
    admin = await asyncpg.connect(superuser_dsn(db))
    try:
        d.start()
        await d.wait_connected(60)
        await admin.execute("ALTER TABLE operator_actions ADD CONSTRAINT no_forbidden CHECK (reason <> 'forbidden')")
        await publish_batches(mosquitto.host, mosquitto.port, topic, [_crossing(0, "G0")])
        first = await until(lambda: _alarm_id(db, "G0"), timeout=30, what="the first alarm")
        st, ct, got = await _apost(api, f"/api/alarms/{first}/comment", b'{"reason": "forbidden"}')
        assert st == 500 and "json" in ct and "dead_letters" in got["error"], (st, got)
        await publish_batches(mosquitto.host, mosquitto.port, topic, [_crossing(1, "G1")])
        await until(lambda: _alarm_id(db, "G1"), timeout=15, what="an alarm injected after the refused action")
        st, _, got = await _apost(api, f"/api/alarms/{first}/ack", b"{}")
        assert st == 200 and got["state"] == "ack", got
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
        await admin.close()
    dead = await _fetch(db, "SELECT topic, reason, detail, payload FROM dead_letters")
    assert len(dead) == 1 and dead[0]["reason"] == "unstorable_alarm_op", dead
    assert "no_forbidden" in dead[0]["detail"]
    record = json.loads(dead[0]["payload"])
    assert record["op"] == "OperatorAction" and record["reason"] == "forbidden" and record["actor"] == "op1"
    assert [r["action"] for r in await _fetch(db, "SELECT action FROM operator_actions")] == ["ack"]
    assert "retrying" not in d.log()


async def test_every_api_input_error_is_a_4xx_with_a_json_reason(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d, api = _daemon(tmp_path, mosquitto, db, prefix)
    d.start()
    try:
        await d.wait_connected(60)
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings", [_crossing(0, "G0")])
        a = await until(lambda: _alarm_id(db, "G0"), timeout=30, what="an alarm")
        cases = [
            (f"/api/alarms/{a}/shelve", b"[" * 30000, "nested"),  # under 64 KiB
            (f"/api/alarms/{a}/shelve", b'{"reason": "x", "duration": 1' + b"0" * 400 + b"}", "duration"),
            (f"/api/alarms/{a}/shelve", b'{"reason": "x", "duration": 1e999}', "duration"),
            (f"/api/alarms/{a}/shelve", b'{"reason": "x", "duration": NaN}', "NaN"),
            (f"/api/alarms/{a}/shelve", b'{"reason": "x", "duration": "60"}', "duration"),
            (f"/api/alarms/{a}/comment", b'{"reason": "a", "reason": "b"}', "duplicate"),
            (f"/api/alarms/{a}/comment", b'{"reason": "x", "colour": "red"}', "colour"),
            (f"/api/alarms/{a}/comment", b'{"reason": "' + b"x" * 2001 + b'"}', "2000"),
            (f"/api/alarms/{a}/comment", b"\xff\xfe", "UTF-8"),
            (f"/api/alarms/{a}/comment", b"not json", "JSON"),
            (f"/api/alarms/{a}/comment", b'"a string"', "object"),
            (f"/api/alarms/{a}/comment", b'{"reason": 1' + b"0" * 5000 + b"}", "JSON"),
            (f"/api/alarms/{a}/comment", b'{"reason": "' + b"x" * 70000 + b'"}', "larger"),
            ("/api/incidents?sensor=a%00b", None, "NUL"),
            ("/api/incidents?event=%EF%BC%91", None, "event"),  # a full-width digit
            ("/api/no-such-thing", None, "Not Found"),
        ]
        for path, raw, word in cases:
            st, ct, got = await _apost(api, path, raw, method="POST" if raw is not None else "GET")
            assert 400 <= st < 500 and "json" in ct and word in got["error"], (path, raw[:60] if raw else raw, st, got)
        st, ct, got = await _apost(api, "/api/alarms", b"{}")  # wrong method
        assert st == 405 and "json" in ct and "error" in got, (st, got)
        assert d.proc.poll() is None
        assert "Traceback" not in d.log(), d.log()
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()


async def test_sigterm_during_a_stuck_write_ends_within_the_grace_and_loses_nothing(tmp_path, mosquitto, db,
                                                                                   topic_prefix):
    prefix = topic_prefix.rstrip("/")
    topic = f"{prefix}/testsite/edge1/readings"
    grace = 3.0
    d, _ = _daemon(tmp_path, mosquitto, db, prefix, ingest=f"{{shutdown_grace: {grace}}}")
    lock = await asyncpg.connect(superuser_dsn(db))
    try:
        d.start()
        await d.wait_connected(60)
        batch = [encode_batch("edge1", k, [{"sensor": f"G{i}", "time": time.time() + k * 0.01, "value": 1.0}
                                           for i in range(10)]) for k in range(5)]
        await publish_batches(mosquitto.host, mosquitto.port, topic, batch[:1])
        await until(lambda: d.stored() >= 10, what="the first batch stored")
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")  # every write now waits
        await publish_batches(mosquitto.host, mosquitto.port, topic, batch[1:])
        await until(lambda: d.metrics().get("plantwatch_messages_received_total", 0) >= 5, what="received")
        t0 = time.monotonic()
        code = await asyncio.to_thread(d.terminate, grace + 20)
        took = time.monotonic() - t0
        await tx.rollback()
        log = d.log()
        print(f"SIGTERM during a stuck write: exit {code} after {took:.1f} s (grace {grace:g} s)")
        assert code == 3, log
        assert "not acknowledged" in log and "edge1 seq 1..4" in log, log
        assert "Traceback" not in log and "stop did not end within" not in log, log  # the bound, not the backstop
        d.start()  # the broker delivers the unacknowledged batches again: nothing lost, nothing twice
        await d.wait_connected(60)
        await until(lambda: d.stored() >= 40, timeout=30, what="the redelivered batches stored")
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
        await lock.close()
    rows = await _fetch(db, "SELECT count(*) AS n FROM readings")
    assert rows[0]["n"] == 50
