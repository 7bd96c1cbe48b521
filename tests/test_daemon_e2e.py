"""End to end through a real Mosquitto and a real TimescaleDB, with the daemon as a process.

The daemon is killed with SIGKILL in the middle of a stream: what it had not acknowledged is
redelivered by the broker (persistent session), and the idempotent write stores each reading
exactly once.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiomqtt
import asyncpg
import msgspec
import pytest

from plantwatch.connectors.wire import encode_batch

from .helpers import DaemonProcess, make_batches, new_metrics_port, publish_batches, site_config

pytestmark = pytest.mark.slow


def _daemon(tmp_path, mosquitto, db, prefix, *, n_gas=1000, detectors=None, ingest="", state=""):
    port = new_metrics_port()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(site_config(n_gas=n_gas, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=port, detectors=detectors,
                               ingest=ingest, state=state))
    return DaemonProcess(cfg, port)


async def _wait_rows(dsn: str, table: str, n: int, timeout: float) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        end = time.monotonic() + timeout
        got = 0
        while time.monotonic() < end:
            got = await conn.fetchval(f"SELECT count(*) FROM {table}")
            if got >= n:
                return got
            await asyncio.sleep(0.25)
        return got
    finally:
        await conn.close()


async def test_100k_readings_exactly_once_across_a_kill(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, db, prefix)
    sensors = [f"G{i}" for i in range(1000)]
    t0 = time.time() - 3600
    batches = make_batches("edge1", sensors, 1000, t0=t0, per_batch=100)  # 100,000 distinct readings
    topic = f"{prefix}/testsite/edge1/readings"
    d.start()
    try:
        await d.wait_connected()
        await publish_batches(mosquitto.host, mosquitto.port, topic, batches[:400])
        # kill while it is working through the stream: whatever was not acknowledged is redelivered
        for _ in range(200):
            if d.metrics().get("plantwatch_readings_stored_total{table=\"readings\"}", 0) > 5_000:
                break
            await asyncio.sleep(0.02)
        stored_before_kill = d.metrics().get("plantwatch_readings_stored_total{table=\"readings\"}", 0)
        d.kill()
        assert stored_before_kill < 100_000
        await publish_batches(mosquitto.host, mosquitto.port, topic, batches[400:])  # while it is down
        d.start()
        await d.wait_connected()
        got = await _wait_rows(db, "readings", 100_000, timeout=120)
        await asyncio.sleep(1.0)  # anything extra would show up now
        assert d.terminate() == 0, d.log()
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    conn = await asyncpg.connect(db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM readings") == 100_000 == got
        # exactly the readings that were published: compare the sets both ways
        await conn.execute("CREATE TEMP TABLE expected (tag text, time timestamptz)")
        exp = []
        for b in batches:
            for r in msgspec.json.decode(b)["readings"]:
                exp.append((r["sensor"], r["time"]))
        await conn.copy_records_to_table("expected", records=[(s, _ts(t)) for s, t in exp])
        missing = await conn.fetchval(
            "SELECT count(*) FROM (SELECT tag, time FROM expected EXCEPT"
            " SELECT s.tag, r.time FROM readings r JOIN sensors s ON s.id = r.sensor_id) x")
        extra = await conn.fetchval(
            "SELECT count(*) FROM (SELECT s.tag, r.time FROM readings r JOIN sensors s ON s.id = r.sensor_id"
            " EXCEPT SELECT tag, time FROM expected) x")
        assert (missing, extra) == (0, 0)
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0
        seq = await conn.fetchrow("SELECT last_seq, gaps FROM collectors WHERE id = 'edge1'")
        assert seq["last_seq"] == 999 and seq["gaps"] == 0
    finally:
        await conn.close()


def _ts(t: float):
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _hostile_payloads(prefix: str, now: float) -> tuple[list[tuple[str, bytes]], set[tuple[str, float]], dict[str, int]]:
    """10,000+ bad payloads or readings mixed with good ones; returns (messages, good set, bad counts)."""
    site = f"{prefix}/testsite"
    msgs: list[tuple[str, bytes]] = []
    good: set[tuple[str, float]] = set()
    bad: dict[str, int] = {}
    seq = 0

    def add_bad(reason: str, n: int = 1) -> None:
        bad[reason] = bad.get(reason, 0) + n

    k = 0
    for i in range(1700):
        # a good batch, with hostile readings inside it
        t = now - 600 + i * 0.01
        rs = [{"sensor": f"G{(i + j) % 50}", "time": round(t + j * 1e-4, 6), "value": 1.0} for j in range(5)]
        for r in rs:
            good.add((r["sensor"], r["time"]))
        kind = i % 6
        if kind == 0:
            rs.append({"sensor": "NOPE", "time": t, "value": 1.0}); add_bad("unknown_sensor")
        elif kind == 1:
            rs.append({"sensor": "G1", "time": t + 0.5, "value": 1e9}); add_bad("out_of_range")
        elif kind == 2:
            rs.append({"sensor": "G1", "time": now + 86400, "value": 1.0}); add_bad("future_time")
        elif kind == 3:
            rs.append({"sensor": "G1", "time": now - 90 * 86400, "value": 1.0}); add_bad("too_old")
        elif kind == 4:
            rs.append({"sensor": "G1", "time": t, "value": "1.0"}); add_bad("wrong_type")
        else:
            rs.append({"sensor": "G1", "time": "not a time", "value": 1.0}); add_bad("bad_time")
        msgs.append((f"{site}/edge1/readings", msgspec.json.encode({"v": 1, "collector": "edge1", "seq": seq, "readings": rs})))
        seq += 1
        # whole-message garbage between the good ones
        for g in range(5):
            k += 1
            m = (k + g) % 9
            if m == 0:
                msgs.append((f"{site}/edge2/readings", b'{"v":1,"collector":"edge2","seq":' + str(k).encode())); add_bad("malformed_json")
            elif m == 1:
                msgs.append((f"{site}/edge2/readings", b"\xff\xfe\xfa" + str(k).encode())); add_bad("invalid_utf8")
            elif m == 2:
                msgs.append((f"{site}/edge2/readings", b'{"v":1,"collector":"edge2","seq":%d,"readings":[{"sensor":"G1","time":%d,"value":NaN}]}' % (k, int(now)))); add_bad("non_finite")
            elif m == 3:
                msgs.append((f"{site}/edge2/readings", b'{"v":1,"collector":"edge2","seq":%d,"readings":[{"sensor":"G2","time":%d.5,"value":1e999}]}' % (k, int(now) - 5))); add_bad("non_finite")
            elif m == 4:
                msgs.append((f"{site}/edge2/readings", b"[" * 20 + str(k).encode())); add_bad("bad_envelope")  # not an object: refused before the syntax error
            elif m == 5:
                msgs.append((f"{site}/edge2/readings", b'{"v":9,"collector":"edge2","seq":%d,"readings":[]}' % k)); add_bad("bad_version")
            elif m == 6:
                msgs.append((f"{site}/edge2/readings", b'{"v":1,"collector":"edgeX","seq":%d,"readings":[]}' % k)); add_bad("collector_mismatch")
            elif m == 7:
                msgs.append((f"{site}/alarms/readings", b'{"k":%d}' % k)); add_bad("bad_topic")
            else:
                msgs.append((f"{site}/edge2/readings", b'{"v":1,"collector":"edge2","seq":%d,"readings":[{"sensor":"G3","time":1,"value":1}],"x":"%s"}' % (k, b"A" * 70_000))); add_bad("oversized")
    return msgs, good, bad


async def test_hostile_input_is_dead_lettered_and_good_readings_kept(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, db, prefix, n_gas=50, ingest="{max_payload_bytes: 65536}")
    now = time.time()
    msgs, good, bad = _hostile_payloads(prefix, now)
    n_bad = sum(bad.values())
    assert n_bad >= 10_000 and len(good) >= 7_000
    d.start()
    try:
        await d.wait_connected()
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, max_inflight_messages=1000) as c:
            for topic, payload in msgs:
                await c.publish(topic, payload, qos=1)
        await _wait_rows(db, "dead_letters", n_bad, timeout=60)
        await _wait_rows(db, "readings", len(good), timeout=30)
        m = d.metrics()
        assert d.proc.poll() is None, "the daemon must stay up"
        assert d.terminate() == 0, d.log()
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    for reason, n in bad.items():
        assert m.get(f'plantwatch_readings_rejected_total{{reason="{reason}"}}') == n, reason
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch("SELECT s.tag, extract(epoch FROM r.time)::float8 AS t FROM readings r JOIN sensors s ON s.id = r.sensor_id")
        assert {(r["tag"], round(r["t"], 6)) for r in rows} == good
        by_reason = {r["reason"]: r["n"] for r in await conn.fetch("SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason")}
        assert by_reason == bad
        sample = await conn.fetchrow("SELECT detail, payload FROM dead_letters WHERE reason = 'out_of_range' LIMIT 1")
        assert "outside the measuring range" in sample["detail"] and b"1000000000" in sample["payload"]
    finally:
        await conn.close()


async def test_alarms_raised_published_retained_and_cleared(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    dets = ("detectors:\n"
            "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10, deadband: 0.5}}\n"
            "  - {id: silent, type: stale, select: {kind: gas}, params: {timeout: 2}}\n")
    d = _daemon(tmp_path, mosquitto, db, prefix, n_gas=3, detectors=dets)
    topic = f"{prefix}/testsite/edge1/readings"
    d.start()
    try:
        await d.wait_connected()
        now = time.time()
        seq = iter(range(1000))

        async def send(values: dict[str, float], t: float) -> None:
            await publish_batches(mosquitto.host, mosquitto.port, topic, [encode_batch(
                "edge1", next(seq), [{"sensor": s, "time": t, "value": v} for s, v in values.items()], time.time())])

        await send({"G0": 1.0, "G1": 1.0, "G2": 1.0}, now)
        await send({"G0": 12.0, "G1": 1.0, "G2": 1.0}, now + 0.5)  # G0 high-high
        active = await _retained_alarms(mosquitto, f"{prefix}/testsite/alarms/active",
                                        lambda a: any(x["sensor"] == "G0" for x in a))
        g0 = next(x for x in active if x["sensor"] == "G0")
        assert (g0["state"], g0["condition"], g0["severity"], g0["detector_id"]) == ("unack", "high_high", "critical", "h2s-limit")
        # G2 falls silent while G0 and G1 keep reporting: the stale detector alarms on G2 only
        for k in range(1, 9):
            await send({"G0": 1.0, "G1": 1.0}, now + 0.5 + k * 0.5)
            await asyncio.sleep(0.5)
        active = await _retained_alarms(mosquitto, f"{prefix}/testsite/alarms/active",
                                        lambda a: any(x["sensor"] == "G2" for x in a))
        states = {(x["sensor"], x["detector_id"]): x["state"] for x in active}
        assert states[("G2", "silent")] == "unack"
        assert states[("G0", "h2s-limit")] == "rtn_unack"  # back to normal, not yet acknowledged
        assert ("G1", "silent") not in states and ("G0", "silent") not in states
        assert d.terminate() == 0
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    conn = await asyncpg.connect(db)
    try:
        changes = await conn.fetch(
            "SELECT s.tag, c.from_state, c.to_state, c.condition, c.cause FROM alarm_changes c"
            " JOIN alarms a ON a.id = c.alarm_id JOIN sensors s ON s.id = a.sensor_id"
            " WHERE a.detector_id = 'h2s-limit' ORDER BY c.id")
        assert [(c["tag"], c["from_state"], c["to_state"], c["condition"]) for c in changes] == [
            ("G0", "normal", "unack", "high_high"), ("G0", "unack", "rtn_unack", "normal")]
        cause = changes[0]["cause"]
        cause = json.loads(cause) if isinstance(cause, str) else cause
        assert cause["by"] == "detector" and cause["score"] == 12.0
        ev = await conn.fetchrow("SELECT condition, severity, started_at, ended_at, peak_score, detector FROM events"
                                 " WHERE detector_id = 'h2s-limit'")
        assert ev["condition"] == "high_high" and ev["ended_at"] is not None and ev["peak_score"] == 12.0
        assert "high_high" in (ev["detector"] if isinstance(ev["detector"], str) else json.dumps(ev["detector"]))
    finally:
        await conn.close()


async def _retained_alarms(mosquitto, topic: str, until, timeout: float = 15.0) -> list[dict]:
    end = time.monotonic() + timeout
    last: list[dict] = []
    while time.monotonic() < end:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            await c.subscribe(topic, qos=1)
            try:
                async with asyncio.timeout(2):
                    async for m in c.messages:
                        last = json.loads(m.payload)["alarms"]
                        break
            except TimeoutError:
                pass
        if until(last):
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"retained alarms never matched; last: {last}")


async def test_detector_state_survives_restart(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    dets = "detectors:\n  - {id: z, type: robust_zscore, select: {kind: gas}, params: {window: 60, refresh: 5}}\n"
    d = _daemon(tmp_path, mosquitto, db, prefix, n_gas=4, detectors=dets)
    topic = f"{prefix}/testsite/edge1/readings"
    t0 = time.time() - 1000
    d.start()
    try:
        await d.wait_connected()
        batches = [encode_batch("edge1", k, [{"sensor": f"G{i}", "time": t0 + k, "value": 1.0 + 0.01 * ((k * 7 + i) % 5)}
                                             for i in range(4)]) for k in range(100)]
        await publish_batches(mosquitto.host, mosquitto.port, topic, batches)
        await _wait_rows(db, "readings", 400, 30)
        assert d.terminate() == 0
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    d.start()
    try:
        await d.wait_connected()
        assert "restored learned state of 1 detector(s): z" in d.log()
        # a jump right after the restart is flagged at once: no warm-up was repeated
        await publish_batches(mosquitto.host, mosquitto.port, topic,
                              [encode_batch("edge1", 100, [{"sensor": "G1", "time": t0 + 101, "value": 9.0}])])
        conn = await asyncpg.connect(db)
        try:
            for _ in range(100):
                n = await conn.fetchval("SELECT count(*) FROM alarms WHERE detector_id = 'z' AND active")
                if n:
                    break
                await asyncio.sleep(0.1)
            assert n == 1
        finally:
            await conn.close()
        assert d.terminate() == 0
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
