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


def _config(tmp_path, name, mosquitto, db, prefix, client_id, grace: float | None = None):
    port = new_metrics_port()
    collectors = ", ".join(f"c{j}" for j in range(N_COLLECTORS))
    text = site_config(n_gas=N_COLLECTORS * PER_COLLECTOR, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix,
                       dsn=db, client_id=client_id, metrics_port=port, ingest="{flush_interval: 0.05" + (f", shutdown_grace: {grace}" if grace else "") + "}",
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


# --- the defects of issue 22: each test fails on the code before the fix ---------------------------
async def _two(tmp_path, mosquitto, dsn, prefix, *, grace: float | None = None):
    """Instances a and b on one site, started, each holding two partitions."""
    client_id = f"pwc-{uuid.uuid4().hex[:8]}"
    a = _config(tmp_path, "a", mosquitto, dsn, prefix, client_id, grace)
    b = _config(tmp_path, "b", mosquitto, dsn, prefix, client_id, grace)
    a.start()
    await a.wait_connected()
    b.start()
    await b.wait_connected()
    return a, b, client_id


async def _balanced(conn):
    async def ok():
        h = await _holders(conn)
        owners = [x[0] for x in h.values()]
        return h if len(h) == P and owners.count("a") == P // 2 and owners.count("b") == P // 2 else None
    return await _wait(ok, 30, "two partitions each")


async def _count(conn) -> int:
    return await conn.fetchval("SELECT count(*) FROM readings")


def _stop_all(*ds) -> None:
    for d in ds:
        if d is not None and d.proc and d.proc.poll() is None:
            d.kill()


async def test_fast_restart_with_the_same_id_takes_its_partitions_over(tmp_path, mosquitto, db, topic_prefix):
    """kill -9 and a restart within the lease (systemd ``Restart=always``): the new process must
    not renew its predecessor's leases without an intake; it takes them over and stores."""
    prefix = topic_prefix.rstrip("/")
    a = b = conn = None
    try:
        a, b, _ = await _two(tmp_path, mosquitto, db, prefix)
        conn = await asyncpg.connect(db)
        held = await _balanced(conn)
        a.kill()
        a.start()  # the same instance_id, at once
        t0 = time.time() - 600
        phase = _batches(t0, 20, 0)
        await _publish(mosquitto, prefix, phase)
        n = len(phase) * PER_COLLECTOR
        t_restart = time.monotonic()
        await _wait(lambda: _stored_at_least(conn, n), LEASE + RENEW + 10, f"all {n} readings stored after the restart")
        took = time.monotonic() - t_restart
        h = await _holders(conn)
        for k, (who, epoch, _) in held.items():
            if who == "a":
                assert h[k][1] > epoch, f"partition {k} still under the dead process's epoch"
        assert a.proc.poll() is None and b.proc.poll() is None
        print(f"fast restart: every reading stored {took:.1f} s after the restart")
    finally:
        if conn is not None:
            await conn.close()
        _stop_all(a, b)


async def _stored_at_least(conn, n: int) -> bool:
    return await _count(conn) >= n


async def test_database_outage_is_a_pause(tmp_path, mosquitto, db, topic_prefix):
    """The database refuses connections for longer than a lease: no instance exits or hangs, the
    partitions are held again afterwards, readings published meanwhile are stored once, and
    SIGTERM ends within ``ingest.shutdown_grace``."""
    from urllib.parse import urlsplit

    from plantwatch.connectors.tcp_proxy import TcpProxy

    prefix = topic_prefix.rstrip("/")
    u = urlsplit(db)
    proxy = await TcpProxy(u.hostname, u.port).start()
    dsn = db.replace(f"{u.hostname}:{u.port}", f"127.0.0.1:{proxy.port}", 1)
    a = b = conn = None
    grace = 8.0
    try:
        a, b, _ = await _two(tmp_path, mosquitto, dsn, prefix, grace=grace)
        conn = await asyncpg.connect(db)
        await _balanced(conn)
        await proxy.close()  # connections cut, new ones refused
        t0 = time.time() - 600
        phase = _batches(t0, 10, 0)
        await _publish(mosquitto, prefix, phase)  # published during the outage
        await asyncio.sleep(2 * LEASE + RENEW)
        assert a.proc.poll() is None, f"a exited during the outage:\n{a.log()}"
        assert b.proc.poll() is None, f"b exited during the outage:\n{b.log()}"
        await proxy.start()
        n = len(phase) * PER_COLLECTOR
        await _wait(lambda: _stored_at_least(conn, n), 60, "readings of the outage stored after it")
        h = await _wait(lambda: _all_held(conn), 30, "every partition held again")
        assert {x[0] for x in h.values()} <= {"a", "b"}
        phase2 = _batches(t0 + 100, 10, 10)
        await _publish(mosquitto, prefix, phase2)
        n += len(phase2) * PER_COLLECTOR
        await _wait(lambda: _stored_at_least(conn, n), 30, "readings after the outage stored")
        await asyncio.sleep(1.0)
        assert await _count(conn) == n  # once each
        # (the proxy runs in this event loop: the waits must not block it)
        for d in (a, b):
            t = time.monotonic()
            rc = await asyncio.to_thread(d.terminate, grace + 5)
            assert time.monotonic() - t < grace + 5 and rc == 0, f"exit {rc} after SIGTERM:\n{d.log()}"
    finally:
        if conn is not None:
            await conn.close()
        _stop_all(a, b)
        await proxy.close()


async def _all_held(conn):
    h = await _holders(conn)
    return h if len(h) == P else None


async def test_instances_connections_have_their_own_identity(tmp_path, mosquitto, db, topic_prefix):
    """Two instances with the documented shared ``mqtt.client_id``: none of their own connections
    (alarm publisher, site status) knocks the other's off the broker."""
    prefix = topic_prefix.rstrip("/")
    a = b = conn = None
    try:
        a, b, client_id = await _two(tmp_path, mosquitto, db, prefix)
        conn = await asyncpg.connect(db)
        await _balanced(conn)
        await asyncio.sleep(6.0)
        clashes = [line for line in mosquitto.log_path.read_text(errors="replace").splitlines()
                   if client_id in line and "already connected" in line and f"{client_id}-p" not in line]
        assert clashes == [], f"{len(clashes)} connection(s) closed by a namesake, e.g. {clashes[:3]}"
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        if conn is not None:
            await conn.close()
        _stop_all(a, b)


async def test_stale_holder_cannot_write_after_its_partition_was_taken(tmp_path, mosquitto, db, topic_prefix):
    """Split brain: a's write of a limit crossing is held up (here: a row lock, as a freeze would)
    while its partition is taken over under a new epoch; when it goes on, the database must refuse
    it, so no stale reading or alarm change lands after the takeover."""
    import zlib

    from plantwatch.connectors.wire import encode_batch

    prefix = topic_prefix.rstrip("/")
    a = b = conn = lock = None
    try:
        a, b, _ = await _two(tmp_path, mosquitto, db, prefix)
        conn = await asyncpg.connect(db)
        held = await _balanced(conn)
        t0 = time.time() - 600
        first = _batches(t0, 2, 0)
        await _publish(mosquitto, prefix, first)
        await _wait(lambda: _stored_at_least(conn, len(first) * PER_COLLECTOR), 30, "first readings stored")
        j = next(j for j in range(N_COLLECTORS) if held[zlib.crc32(f"c{j}".encode()) % P][0] == "a")
        k = zlib.crc32(f"c{j}".encode()) % P
        sensor, t_high = f"G{j * PER_COLLECTOR}", round(t0 + 50.0, 6)
        lock = await asyncpg.connect(db)
        tx = lock.transaction()
        await tx.start()
        await lock.execute("SELECT 1 FROM collectors WHERE id = $1 FOR UPDATE", f"c{j}")  # a's write waits here
        await _publish(mosquitto, prefix, [(f"c{j}", encode_batch(f"c{j}", 2, [{"sensor": sensor, "time": t_high,
                                                                                  "value": 50.0}], time.time()), [])])

        async def a_waiting():
            return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                       " AND datname = current_database()")
        await _wait(a_waiting, 20, "a's write waiting on the row lock")
        # the partition is taken over (as after a freeze longer than the lease), under a new epoch
        await conn.execute("UPDATE partition_leases SET holder = 'thief', epoch = epoch + 1,"
                           " expires_at = now() + interval '1 hour' WHERE partition = $1", k)
        await tx.rollback()
        await asyncio.sleep(3.0)
        stale_readings = await conn.fetchval(
            "SELECT count(*) FROM readings r JOIN sensors s ON s.id = r.sensor_id WHERE s.tag = $1 AND r.time = to_timestamp($2)",
            sensor, t_high)
        stale_changes = await conn.fetchval(
            "SELECT count(*) FROM alarm_changes c JOIN alarms al ON al.id = c.alarm_id JOIN sensors s ON s.id = al.sensor_id"
            " WHERE s.tag = $1", sensor)
        assert (stale_readings, stale_changes) == (0, 0), \
            f"the stale holder wrote after losing partition {k}: {stale_readings} reading(s), {stale_changes} alarm change(s)"
        assert a.proc.poll() is None, a.log()
        assert "write refused" in a.log()
    finally:
        for c in (lock, conn):
            if c is not None:
                await c.close()
        _stop_all(a, b)


async def test_sync_positions_from_instances_starting_together(db):
    """Two instances starting at the same moment sync ``operator_positions`` concurrently."""
    from plantwatch.connectors import alarm_db
    from plantwatch.connectors.store import Store

    store = await Store.open(db)
    await store.close()
    c1, c2 = await asyncpg.connect(db), await asyncpg.connect(db)
    try:
        mapping = {f"area{i}": f"console{i % 3}" for i in range(20)}
        for _ in range(20):
            await c1.execute("DELETE FROM operator_positions")
            await asyncio.gather(alarm_db.sync_positions(c1, mapping), alarm_db.sync_positions(c2, mapping))
            rows = await c1.fetch("SELECT area_id, position FROM operator_positions")
            assert dict((r["area_id"], r["position"]) for r in rows) == mapping
        await alarm_db.sync_positions(c2, {"area1": "other"})
        assert [tuple(r) for r in await c1.fetch("SELECT area_id, position FROM operator_positions")] == [("area1", "other")]
    finally:
        await c1.close()
        await c2.close()


async def test_alarm_publication_fails_over_at_once_when_the_broker_connection_drops(mosquitto):
    """Alarms raised just before a broker restart arrived 10-12 s late while data was stored in
    3.5 s: a QoS 1 publish waiting for its acknowledgement when the connection dropped waited for
    the client's 10 s timeout before the publisher reconnected. It must fail at once instead."""
    import aiomqtt

    from plantwatch.connectors.mqtt import BrokerAddress, Publisher
    from plantwatch.connectors.tcp_proxy import TcpProxy

    async with TcpProxy(mosquitto.host, mosquitto.port) as proxy:
        async with Publisher(BrokerAddress("127.0.0.1", proxy.port), client_id=f"pwpub-{uuid.uuid4().hex[:8]}") as pub:
            await pub.publish("plantwatch-tests/lag/ok", b"1")  # acknowledged while the connection is fine
            proxy.stall()  # the PUBACK of the next one never comes back ...
            sending = asyncio.create_task(pub.publish("plantwatch-tests/lag/alarm", b"2"))
            await asyncio.sleep(0.5)
            assert not sending.done()
            t = time.monotonic()
            proxy.cut_all()  # ... and the connection drops (the broker restarts)
            proxy.resume()
            with pytest.raises(aiomqtt.MqttError):
                await asyncio.wait_for(sending, 15)
            waited = time.monotonic() - t
            assert waited < 2.0, f"the publish noticed the lost connection only after {waited:.1f} s"


def test_may_publish_only_while_the_lease_is_valid_by_the_own_clock():
    """Before its commit, an alarm of a partition may be published only while this process's
    lease is valid by its own clock (last renewal sent + lease - margin); a fence names a
    partition not held with an epoch the database never accepts."""
    from plantwatch.daemon.ingest.ownership import NOT_HELD, PartitionOwnership

    now = [100.0]
    own = PartitionOwnership("s", lease_seconds=2.0, margin=0.2, clock=lambda: now[0])
    assert not own.may_publish(3)
    own.gained(3, 7, sent_at=100.0)
    assert own.may_publish(3)
    now[0] = 101.79
    assert own.may_publish(3)
    now[0] = 101.81
    assert not own.may_publish(3)  # not renewed in time: perhaps already another's
    own.renewed({3: 7}, sent_at=101.5)
    assert own.may_publish(3)
    own.renewed({3: 6}, sent_at=103.0)  # a renewal under another epoch is not this holding's
    now[0] = 103.5
    assert not own.may_publish(3)
    assert own.fence([3, 5], idle_timeout=1.0).epochs == {3: 7, 5: NOT_HELD}
    own.lost(3)
    assert not own.may_publish(3) and own.fence([3], idle_timeout=1.0).epochs == {3: NOT_HELD}


async def test_fence_is_checked_in_the_write_transaction(db):
    """connectors/leases.py against the database: a takeover bumps the epoch, waits for a write
    that already holds the fence, and from then on the database refuses every write of the old
    epoch in its own transaction; a process restarted with the same instance id (a new
    incarnation) does not renew its predecessor's lease but takes it over."""
    from plantwatch.connectors.leases import Fence, FencedOut, Leases
    from plantwatch.connectors.store import CollectorSeen, Store

    store = await Store.open(db, connections=4)
    conn = await asyncpg.connect(db)
    try:
        a = Leases(store.pool, "s", "a", partitions=2, lease_seconds=1.0)
        b = Leases(store.pool, "s", "b", partitions=2, lease_seconds=1.0)
        e1 = await a.try_take(0)
        assert e1 is not None and await b.try_take(0) is None  # held and unexpired

        def seen(c):
            return [CollectorSeen(c, 1, time.time(), 0)]

        await store.write(None, collectors=seen("ok"), fence=Fence("s", {0: e1}))
        assert await conn.fetchval("SELECT count(*) FROM collectors WHERE id = 'ok'") == 1
        # a write of a's holding in progress (holding the fence) delays b's takeover until it commits
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT partition_fence_check('s', ARRAY[0], ARRAY[$1::bigint], '5s')", e1)
        await asyncio.sleep(1.1)  # a's lease expires
        take = asyncio.create_task(b.try_take(0))
        await asyncio.sleep(0.3)
        assert not take.done()
        await tx.commit()
        e2 = await asyncio.wait_for(take, 5)
        assert e2 == e1 + 1
        with pytest.raises(FencedOut) as refused:
            await store.write(None, collectors=seen("stale"), fence=Fence("s", {0: e1}))
        assert refused.value.partitions == [0]
        assert await conn.fetchval("SELECT count(*) FROM collectors WHERE id = 'stale'") == 0  # rolled back
        assert (await a.heartbeat({0: e1})).renewed == {}  # a's renewal under the old epoch fails
        # b crashes and restarts at once: the new process never renews the old lease ...
        b2 = Leases(store.pool, "s", "b", partitions=2, lease_seconds=1.0)
        assert (await b2.heartbeat({0: e2})).renewed == {}
        # ... it takes it over (a new epoch), so the dead process's writes are refused too
        assert b2.is_predecessor((await b2.holders())[0])
        e3 = await b2.try_take(0)
        assert e3 == e2 + 1
        with pytest.raises(FencedOut):
            await store.write(None, collectors=seen("stale"), fence=Fence("s", {0: e2}))
        await store.write(None, collectors=seen("new"), fence=Fence("s", {0: e3}))
        assert (await b2.heartbeat({0: e3})).renewed == {0: e3}
        # a lease of this process with no intake (not in what it says it holds) is released
        await b2.heartbeat({})
        assert 0 not in await b2.holders()
    finally:
        await conn.close()
        await store.close()
