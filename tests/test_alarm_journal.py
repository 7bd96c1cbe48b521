"""Alarms do not wait for the database: a real daemon process, a real Mosquitto and a PostgreSQL
cluster of this module's own (it is stopped and frozen here). A limit crossing injected while the
database is stopped (60 s) or frozen (SIGSTOP, 30 s) is published on MQTT within 2 s, and once the
database is back the change is in ``alarm_changes`` with its original time, exactly once, and the
audit chain verifies. A daemon killed during the outage replays its alarm journal on the next start.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import aiomqtt
import asyncpg
import pytest

from plantwatch.connectors import audit
from plantwatch.connectors.db_setup import provision
from plantwatch.connectors.services import PostgresInstance
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.lab.faults.rig import signal_tree

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, until

pytestmark = pytest.mark.slow

APP_ROLE = "plantwatch_app"


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresInstance]:
    """A cluster of this module alone: the tests stop and freeze it."""
    pg = PostgresInstance(fast=True)
    pg.start()
    try:
        yield pg
    finally:
        if pg.pid is not None:
            signal_tree(pg.pid, signal.SIGCONT)
        pg.stop()


@pytest.fixture
async def own_db(own_pg: PostgresInstance) -> str:
    name = f"test_{uuid.uuid4().hex}"
    await provision(own_pg.admin_dsn, own_pg.dsn_for(name), role=APP_ROLE, database=name,
                    timescaledb=own_pg.timescaledb)
    return own_pg.dsn_for(name).replace("postgresql://postgres@", f"postgresql://{APP_ROLE}@", 1)


class Changes:
    """A subscriber of ``alarms/changes`` noting each message and when it arrived."""

    def __init__(self, host: str, port: int, topic: str):
        self.host, self.port, self.topic = host, port, topic
        self.got: list[tuple[float, dict[str, Any]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        async with aiomqtt.Client(self.host, self.port) as c:
            await c.subscribe(self.topic, qos=1)
            self._ready.set()
            async for m in c.messages:
                self.got.append((time.time(), json.loads(m.payload)))

    async def __aenter__(self) -> "Changes":
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task

    def raises(self, t: float) -> list[tuple[float, dict[str, Any]]]:
        return [(at, m) for at, m in self.got if m["to"] == "unack" and abs(m["time"] - t) < 1e-3]


def _daemon(tmp_path, mosquitto, dsn: str, prefix: str) -> DaemonProcess:
    mport = new_metrics_port()
    cfg = tmp_path / f"site-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(site_config(mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=dsn,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport, n_gas=4,
                               ingest="{stall_after: 5}", state=f"{{data_dir: '{tmp_path}'}}"))
    return DaemonProcess(cfg, mport)


async def _fetch(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _raised_in_db(dsn: str, t: float) -> list[asyncpg.Record]:
    return await _fetch(dsn, "SELECT c.id, c.time, c.to_state FROM alarm_changes c JOIN alarms a ON a.id = c.alarm_id"
                             " JOIN sensors s ON s.id = a.sensor_id WHERE s.tag = 'G1' AND c.to_state = 'unack'"
                             " AND c.time = $1", datetime.fromtimestamp(t, tz=timezone.utc))


async def _audit_ok(dsn: str) -> audit.Verdict:
    conn = await asyncpg.connect(dsn)
    try:
        return await audit.verify(conn)
    finally:
        await conn.close()


async def _start_normal(d: DaemonProcess, mosquitto, prefix: str, dsn: str) -> None:
    d.start()
    await d.wait_connected()
    now = time.time()
    await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings",
                          [encode_batch("edge1", 0, [{"sensor": f"G{i}", "time": now - 5, "value": 1.0}
                                                     for i in range(4)])])
    await until(lambda: d.stored() >= 4, 30, "the first readings stored")


async def _cross(mosquitto, prefix: str, seq: int) -> float:
    t = round(time.time(), 3)
    await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings",
                          [encode_batch("edge1", seq, [{"sensor": "G1", "time": t, "value": 7.0}])])
    return t


async def _within(changes: Changes, t: float, seconds: float) -> float:
    """Seconds from the crossing's publication to its alarm on MQTT; fails after ``seconds``."""
    sent = time.time()
    end = sent + seconds
    while time.time() < end:
        got = changes.raises(t)
        if got:
            return got[0][0] - sent
        await asyncio.sleep(0.05)
    raise AssertionError(f"no alarm on MQTT within {seconds} s of the crossing (database unavailable);"
                         f" changes seen: {[m for _, m in changes.got]}")


async def test_an_alarm_is_published_while_the_database_is_stopped(tmp_path, mosquitto, own_pg, own_db,
                                                                   topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, own_db, prefix)
    async with Changes(mosquitto.host, mosquitto.port, f"{prefix}/testsite/alarms/changes") as ch:
        try:
            await _start_normal(d, mosquitto, prefix, own_db)
            own_pg.halt()
            try:
                await asyncio.sleep(1.0)
                t = await _cross(mosquitto, prefix, 1)
                delay = await _within(ch, t, 2.0)
                await asyncio.sleep(max(0.0, 60.0 - 1.0 - delay))  # the database stays stopped 60 s
                assert not await asyncio.to_thread(lambda: own_pg.pid)  # (still stopped)
            finally:
                own_pg.start()
            rows = await until(lambda: _raised_in_db(own_db, t), 60, "the alarm change in the database")
            assert len(rows) == 1, rows  # once, with the reading's time
            assert len(ch.raises(t)) == 1  # published once: not again after the commit
            verdict = await _audit_ok(own_db)
            assert verdict.ok, verdict.problems
            assert d.proc.poll() is None, d.log()
        finally:
            d.kill()


async def test_an_alarm_is_published_while_the_database_is_frozen(tmp_path, mosquitto, own_pg, own_db,
                                                                  topic_prefix):
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, own_db, prefix)
    async with Changes(mosquitto.host, mosquitto.port, f"{prefix}/testsite/alarms/changes") as ch:
        try:
            await _start_normal(d, mosquitto, prefix, own_db)
            pid = own_pg.pid
            assert signal_tree(pid, signal.SIGSTOP) > 1
            try:
                await asyncio.sleep(1.0)
                t = await _cross(mosquitto, prefix, 1)
                delay = await _within(ch, t, 2.0)
                await asyncio.sleep(max(0.0, 30.0 - 1.0 - delay))  # frozen 30 s
            finally:
                signal_tree(pid, signal.SIGCONT)
            rows = await until(lambda: _raised_in_db(own_db, t), 60, "the alarm change in the database")
            assert len(rows) == 1, rows
            assert len(ch.raises(t)) == 1
            verdict = await _audit_ok(own_db)
            assert verdict.ok, verdict.problems
            assert d.proc.poll() is None, d.log()
        finally:
            d.kill()


async def test_a_daemon_killed_during_the_outage_replays_its_journal(tmp_path, mosquitto, own_pg, own_db,
                                                                     topic_prefix):
    """The alarm decided during the outage is in the journal; the daemon is killed before the
    database comes back; the next start writes the journaled change (once, original time), the
    redelivered readings do not raise it a second time, and the chain verifies."""
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, own_db, prefix)
    async with Changes(mosquitto.host, mosquitto.port, f"{prefix}/testsite/alarms/changes") as ch:
        try:
            await _start_normal(d, mosquitto, prefix, own_db)
            own_pg.halt()
            try:
                await asyncio.sleep(1.0)
                t = await _cross(mosquitto, prefix, 1)
                await _within(ch, t, 2.0)
                d.kill()
            finally:
                own_pg.start()
            d.start()
            await d.wait_connected()
            rows = await until(lambda: _raised_in_db(own_db, t), 60, "the journaled alarm change in the database")
            await asyncio.sleep(3.0)  # the redelivered crossing has been processed again by now
            rows = await _raised_in_db(own_db, t)
            assert len(rows) == 1, rows
            raised = await _fetch(own_db, "SELECT count(*) AS n FROM alarm_changes WHERE to_state = 'unack'")
            assert raised[0]["n"] == 1
            verdict = await _audit_ok(own_db)
            assert verdict.ok, verdict.problems
            assert "replayed 1 alarm journal entr" in d.log(), d.log()
        finally:
            d.kill()


async def test_two_daemons_on_one_journal_the_second_stops_in_one_line(tmp_path, mosquitto, own_db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    first = _daemon(tmp_path, mosquitto, own_db, prefix)
    second = _daemon(tmp_path, mosquitto, own_db, prefix)  # same site, database and state folder
    try:
        first.start()
        await first.wait_connected()
        second.start()
        rc = await asyncio.to_thread(second.proc.wait, 60)
        assert rc == 2, second.log()
        lines = [x for x in second.log().splitlines() if "alarms.journal_dir" in x]
        assert len(lines) == 1 and "in use by another process" in lines[0], second.log()
        assert "Traceback" not in second.log()
    finally:
        first.kill()
        second.kill()


async def test_detection_goes_on_under_load_while_the_database_is_stopped(tmp_path, mosquitto, own_pg, own_db,
                                                                          topic_prefix):
    """Units pile up while nothing commits: intake must not wait for the writers, so a crossing
    that arrives behind many units (but within the MQTT receive window) is still decided and
    published at once."""
    prefix = topic_prefix.rstrip("/")
    d = _daemon(tmp_path, mosquitto, own_db, prefix)
    async with Changes(mosquitto.host, mosquitto.port, f"{prefix}/testsite/alarms/changes") as ch:
        try:
            await _start_normal(d, mosquitto, prefix, own_db)
            own_pg.halt()
            try:
                seq = 1
                async with aiomqtt.Client(mosquitto.host, mosquitto.port, max_queued_outgoing_messages=0) as c:
                    for _ in range(100):  # 10 s at 10 messages/s: ~50 units (flush every 0.2 s)
                        t = time.time()
                        await c.publish(f"{prefix}/testsite/edge1/readings", encode_batch(
                            "edge1", seq, [{"sensor": s, "time": t, "value": 1.0} for s in ("G0", "G2", "G3")]), qos=1)
                        seq += 1
                        await asyncio.sleep(0.1)
                t = await _cross(mosquitto, prefix, seq)
                await _within(ch, t, 2.0)
            finally:
                own_pg.start()
            rows = await until(lambda: _raised_in_db(own_db, t), 60, "the alarm change in the database")
            assert len(rows) == 1, rows
            await until(lambda: d.stored() >= 4 + 300 + 1, 60, "every reading stored after the outage")
            verdict = await _audit_ok(own_db)
            assert verdict.ok, verdict.problems
        finally:
            d.kill()
