"""Two daemon instances share one site's collectors through partition leases; when one stops
(SIGTERM or SIGKILL) the other takes its partitions within the stated time, and every reading
is stored exactly once."""
from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import msgspec
import pytest

from plantwatch.connectors.wire import encode_batch

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config

pytestmark = pytest.mark.slow

N_COLLECTORS, PER_COLLECTOR, P = 8, 25, 4
LEASE, RENEW = 4.0, 1.0


def _config(tmp_path, name, mosquitto, db, prefix, client_id):
    port = new_metrics_port()
    collectors = ", ".join(f"c{j}" for j in range(N_COLLECTORS))
    text = site_config(n_gas=N_COLLECTORS * PER_COLLECTOR, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix,
                       dsn=db, client_id=client_id, metrics_port=port, ingest="{flush_interval: 0.05}",
                       state="{snapshot_interval: 2}", collector_of=lambda tag: f"c{int(tag[1:]) // PER_COLLECTOR}")
    text = text.replace("sensors:\n", f"cluster: {{instance_id: {name}, partitions: {P}, collectors: [{collectors}],"
                                      f" lease_seconds: {LEASE}, renew_interval: {RENEW}}}\nsensors:\n", 1)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return DaemonProcess(path, port)


def _batches(t0: float, rounds: int, seq0: int) -> list[tuple[str, bytes, list[tuple[str, float]]]]:
    out = []
    for r in range(rounds):
        for j in range(N_COLLECTORS):
            rs = [{"sensor": f"G{j * PER_COLLECTOR + i}", "time": round(t0 + r * 0.5, 6), "value": 1.0}
                  for i in range(PER_COLLECTOR)]
            out.append((f"c{j}", encode_batch(f"c{j}", seq0 + r, rs, time.time()),
                        [(x["sensor"], x["time"]) for x in rs]))
    return out


async def _publish(mosquitto, prefix, batches) -> None:
    by_topic: dict[str, list[bytes]] = {}
    for c, b, _ in batches:
        by_topic.setdefault(f"{prefix}/testsite/{c}/readings", []).append(b)
    await asyncio.gather(*(publish_batches(mosquitto.host, mosquitto.port, t, bs) for t, bs in by_topic.items()))


async def _holders(conn) -> dict[int, tuple[str, int, float]]:
    rows = await conn.fetch("SELECT partition, holder, epoch, extract(epoch FROM acquired_at)::float8 AS at"
                            " FROM partition_leases WHERE expires_at > now()")
    return {r["partition"]: (r["holder"], r["epoch"], r["at"]) for r in rows}


async def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_two_instances_share_and_take_over(tmp_path, mosquitto, db, topic_prefix, how):
    prefix = topic_prefix.rstrip("/")
    client_id = f"pwc-{uuid.uuid4().hex[:8]}"  # same base: per-partition sessions are shared
    a = _config(tmp_path, "a", mosquitto, db, prefix, client_id)
    b = _config(tmp_path, "b", mosquitto, db, prefix, client_id)
    conn = None
    try:
        a.start()
        await a.wait_connected()
        b.start()
        await b.wait_connected()
        conn = await asyncpg.connect(db)

        async def balanced():
            h = await _holders(conn)
            owners = [x[0] for x in h.values()]
            return h if len(h) == P and owners.count("a") == P // 2 and owners.count("b") == P // 2 else None

        held = await _wait(balanced, 30, "two partitions each")
        t0 = time.time() - 600
        phase1 = _batches(t0, 40, 0)
        await _publish(mosquitto, prefix, phase1)
        n1 = len(phase1) * PER_COLLECTOR

        async def stored(n):
            return (await conn.fetchval("SELECT count(*) FROM readings")) >= n

        await _wait(lambda: stored(n1), 60, "phase 1 stored")
        await asyncio.sleep(0.5)
        # each message was processed by exactly one instance: the received counts add up
        ra = a.metrics().get("plantwatch_readings_received_total", 0)
        rb = b.metrics().get("plantwatch_readings_received_total", 0)
        assert ra + rb == n1 and ra > 0 and rb > 0, (ra, rb)

        a_parts = sorted(k for k, (h, _, _) in held.items() if h == "a")
        t_stop = time.time()
        if how == "sigterm":
            assert a.terminate() == 0, a.log()
        else:
            a.kill()
        # readings published while the partitions change hands are queued in their sessions
        phase2 = _batches(t0 + 100, 40, 40)
        await _publish(mosquitto, prefix, phase2)

        async def taken_over():
            h = await _holders(conn)
            return h if all(h.get(k, ("",))[0] == "b" for k in range(P)) else None

        after = await _wait(taken_over, 30, "b holding every partition")
        took = max(after[k][2] for k in a_parts) - t_stop
        bound = RENEW + 2.0 if how == "sigterm" else LEASE + RENEW + 2.0
        assert took <= bound, f"takeover took {took:.1f}s (stated bound {bound:.1f}s)"
        for k in a_parts:
            assert after[k][1] > held[k][1]  # a new epoch: taken, not shared
            assert after[k][2] >= t_stop - 0.5  # not before a stopped: never held by both
        n = n1 + len(phase2) * PER_COLLECTOR
        await _wait(lambda: stored(n), 60, "everything stored")
        await asyncio.sleep(1.0)
        assert await conn.fetchval("SELECT count(*) FROM readings") == n
        # contiguous seq per collector across the takeover: no gap counted by either instance
        assert [tuple(r) for r in await conn.fetch("SELECT id, last_seq, gaps FROM collectors ORDER BY id")] == [
            (f"c{j}", 79, 0) for j in range(N_COLLECTORS)]
        await conn.execute("CREATE TEMP TABLE expected (tag text, time timestamptz)")
        from datetime import datetime, timezone
        await conn.copy_records_to_table("expected", records=[
            (s, datetime.fromtimestamp(t, timezone.utc)) for _, _, rs in phase1 + phase2 for s, t in rs])
        missing = await conn.fetchval(
            "SELECT count(*) FROM (SELECT tag, time FROM expected EXCEPT"
            " SELECT s.tag, r.time FROM readings r JOIN sensors s ON s.id = r.sensor_id) x")
        assert missing == 0
        # the taker restored the partitions' detector state (saved per partition)
        saved = await conn.fetchval("SELECT count(*) FROM detector_state WHERE detector_id LIKE 'p%:%'")
        assert saved > 0
        if how == "sigterm":
            # a drained and acknowledged everything before leaving: nothing was redelivered to b
            rb2 = b.metrics().get("plantwatch_readings_received_total", 0)
            assert rb2 - rb == len(phase2) * PER_COLLECTOR, (rb2, rb)
        assert b.terminate() == 0, b.log()
    finally:
        if conn is not None:
            await conn.close()
        for d in (a, b):
            if d.proc and d.proc.poll() is None:
                d.kill()
