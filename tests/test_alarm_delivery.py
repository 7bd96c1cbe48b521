"""Alarm delivery end to end: a real daemon process, a real Mosquitto, TimescaleDB, and real
webhook receivers (aiohttp servers started here). Floods never hide priority 1 and 2 alarms,
start-up does not flood the operator with stale sensors, alarm changes survive a broker
restart, webhook secrets stay out of metrics and logs, robot alarms are placed where the
reading was taken, and an unacknowledged alarm keeps the highest priority it reached."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request
import uuid
from typing import Any

import aiomqtt
import asyncpg
import pytest
from aiohttp import web

from plantwatch.connectors.services import MosquittoInstance, free_port
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.api import hash_token

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, until

pytestmark = pytest.mark.slow


class Hook:
    """A webhook endpoint on a free port that records what it is sent."""

    def __init__(self, status: int = 204):
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.path_qs)
        self.received.append(await request.json())
        return web.Response(status=self.status)

    async def __aenter__(self) -> "Hook":
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Listener:
    """A Mosquitto subscriber collecting the JSON payloads of one topic in the background."""

    def __init__(self, host: str, port: int, topic: str):
        self.host, self.port, self.topic = host, port, topic
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    async def _run(self) -> None:
        async with aiomqtt.Client(self.host, self.port) as c:
            await c.subscribe(self.topic, qos=1)
            self._ready.set()
            async for m in c.messages:
                self.messages.append(json.loads(m.payload))

    async def __aenter__(self) -> "Listener":
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await self._task



def _daemon(tmp_path, host: str, port: int, db: str, prefix: str, detectors: str, **kw) -> DaemonProcess:
    mport = new_metrics_port()
    cfg = tmp_path / f"site-{uuid.uuid4().hex[:6]}.yaml"
    cfg.write_text(site_config(mqtt=(host, port), prefix=prefix, dsn=db, client_id=f"pw-{uuid.uuid4().hex[:8]}",
                               metrics_port=mport, detectors=detectors, **kw))
    return DaemonProcess(cfg, mport)


async def _fetch(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


_CHANGES = ("SELECT s.tag, a.detector_id, c.to_state, c.condition, c.severity, c.cause"
            " FROM alarm_changes c JOIN alarms a ON a.id = c.alarm_id JOIN sensors s ON s.id = a.sensor_id")


def _stop(d: DaemonProcess) -> None:
    if d.proc and d.proc.poll() is None:
        d.kill()


async def test_critical_alarms_are_notified_individually_during_a_flood(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    async with Hook() as hook, Listener(mosquitto.host, mosquitto.port, f"{prefix}/testsite/alarms/changes") as mq:
        det = ("detectors:\n"
               "  - {id: h2s-warn, type: limit, select: {sensors: [G0, G1, G2, G3, G4, G5]}, params: {high: 5},"
               " severity: {high: low}}\n"
               "  - {id: h2s-leak, type: limit, select: {sensors: [G6, G7, G8, G9]},"
               " params: {low_low: 0.5, high: 5, high_high: 10, deadband: 0.2}}\n"
               "alarms:\n  flood: {window: 600, start: 3, end: 1}\n"
               f"notify:\n  backoff: 0.1\n  webhooks:\n    - {{url: '{hook.url('/hook')}', min_severity: high}}\n")
        d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, det, n_gas=10)
        now = time.time()
        leak = ["G6", "G7", "G8"]
        d.start()
        try:
            await d.wait_connected()
            await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings", [
                encode_batch("edge1", 0, [{"sensor": f"G{i}", "time": now - 60, "value": 1.0} for i in range(10)]),
                # six low-priority alarms in one area: a flood at the operator position
                encode_batch("edge1", 1, [{"sensor": f"G{i}", "time": now - 50, "value": 7.0} for i in range(6)]),
                # the leak: three high-high and one low-low, all critical, all in the flooded area
                encode_batch("edge1", 2, [{"sensor": s, "time": now - 40, "value": 12.0} for s in leak]
                             + [{"sensor": "G9", "time": now - 40, "value": 0.2}]),
            ])
            crit = await until(lambda: (lambda r: r if len(r) == 4 else None)(
                [m for m in mq.messages if m["severity"] == "critical" and m["to"] == "unack"]),
                what="four critical alarm changes on MQTT")
            # the first critical alarm becomes the incident's cause (highest priority), the others consequences
            assert sorted(m["cause"].get("incident_role") for m in crit) == ["cause"] + ["consequence"] * 3, crit
            assert all(m["cause"]["flood"] for m in crit)
            await until(lambda: d.metrics().get("plantwatch_notifications_grouped_total", 0) >= 1,
                         what="low-priority consequences grouped")
            sent = await until(lambda: (lambda r: r if len(r) >= 4 else None)(
                [m for m in hook.received if m["type"] == "alarm" and m["severity"] == "critical"]), timeout=20,
                what=f"four critical alarms at the webhook, got {hook.received}")
            assert sorted((m["sensor"], m["condition"]) for m in sent) == [
                ("G6", "high_high"), ("G7", "high_high"), ("G8", "high_high"), ("G9", "low_low")], hook.received
            assert any(m["type"] == "flood" for m in hook.received)
            assert d.terminate() == 0, d.log()
        finally:
            _stop(d)


async def test_restart_does_not_flood_stale_alarms(tmp_path, mosquitto, db, topic_prefix):
    """Readings stopped while the daemon was down: after its restart only the sensor that stays
    silent for the stale timeout is stale, not every sensor whose last reading is old."""
    prefix = topic_prefix.rstrip("/")
    det = "detectors:\n  - {id: stale, type: stale, select: {kind: gas}, params: {timeout: 4}}\n"
    d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, det, n_gas=10)
    topic = f"{prefix}/testsite/edge1/readings"
    seq = iter(range(10**6))

    async def feed(sensors: list[str], stop: asyncio.Event) -> None:
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            while not stop.is_set():
                await c.publish(topic, encode_batch("edge1", next(seq), [
                    {"sensor": s, "time": time.time(), "value": 1.0} for s in sensors]), qos=1)
                await asyncio.sleep(0.5)

    d.start()
    try:
        await d.wait_connected()
        stop = asyncio.Event()
        task = asyncio.create_task(feed([f"G{i}" for i in range(10)], stop))
        await until(lambda: d.stored() >= 30, what="readings stored")
        assert d.terminate() == 0, d.log()
        stop.set()
        await task
        await asyncio.sleep(6.0)  # down for longer than the stale timeout
        d.start()
        await d.wait_connected()
        stop = asyncio.Event()
        task = asyncio.create_task(feed([f"G{i}" for i in range(1, 10)], stop))  # G0 stays silent
        try:
            await until(lambda: _fetch(db, _CHANGES + " WHERE c.condition = 'stale'"), what="a stale alarm")
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await task
        rows = await _fetch(db, _CHANGES + " WHERE c.condition = 'stale'")
        assert sorted(r["tag"] for r in rows) == ["G0"]
        assert d.terminate() == 0, d.log()
    finally:
        _stop(d)


async def test_process_alarm_is_never_a_consequence_of_a_sensor_health_alarm(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    det = ("detectors:\n"
           "  - {id: stale, type: stale, select: {sensors: [G0]}, params: {timeout: 1}}\n"
           "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}\n")
    d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, det, n_gas=2)
    topic = f"{prefix}/testsite/edge1/readings"
    d.start()
    try:
        await d.wait_connected()
        now = time.time()
        await publish_batches(mosquitto.host, mosquitto.port, topic, [
            encode_batch("edge1", 0, [{"sensor": s, "time": now, "value": 1.0} for s in ("G0", "G1")])])
        await until(lambda: _fetch(db, _CHANGES + " WHERE c.condition = 'stale'"), what="G0 stale")
        await publish_batches(mosquitto.host, mosquitto.port, topic, [
            encode_batch("edge1", 1, [{"sensor": "G1", "time": time.time(), "value": 12.0}])])
        rows = await until(lambda: _fetch(db, _CHANGES + " WHERE c.condition = 'high_high'"), what="G1 high-high")
        cause = json.loads(rows[0]["cause"]) if isinstance(rows[0]["cause"], str) else rows[0]["cause"]
        assert cause["incident_role"] == "cause", cause
        roles = await _fetch(db, "SELECT s.tag, ia.role, ia.incident_id FROM incident_alarms ia"
                                 " JOIN alarms a ON a.id = ia.alarm_id JOIN sensors s ON s.id = a.sensor_id ORDER BY s.tag")
        assert [(r["tag"], r["role"]) for r in roles] == [("G0", "cause"), ("G1", "cause")]
        assert roles[0]["incident_id"] != roles[1]["incident_id"]
        assert d.terminate() == 0, d.log()
    finally:
        _stop(d)


async def test_alarm_changes_survive_a_broker_restart(tmp_path, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    broker = MosquittoInstance()
    await asyncio.to_thread(broker.start)
    det = "detectors:\n  - {id: stale, type: stale, select: {kind: gas}, params: {timeout: 2}}\n"
    d = _daemon(tmp_path, broker.host, broker.port, db, prefix, det, n_gas=1)
    changes_topic, active_topic = f"{prefix}/testsite/alarms/changes", f"{prefix}/testsite/alarms/active"
    watcher = f"watch-{uuid.uuid4().hex[:8]}"
    feeder: asyncio.Task | None = None
    try:
        # a persistent subscriber: the broker keeps what is published for it while it is away
        async with aiomqtt.Client(broker.host, broker.port, identifier=watcher, clean_session=False) as c:
            await c.subscribe(changes_topic, qos=1)
        d.start()
        await d.wait_connected()
        await publish_batches(broker.host, broker.port, f"{prefix}/testsite/edge1/readings", [
            encode_batch("edge1", 0, [{"sensor": "G0", "time": time.time(), "value": 1.0}])])
        await until(lambda: d.stored() >= 1, what="the reading stored")
        await asyncio.to_thread(broker.halt)
        # G0 falls silent while the broker is away: the stale alarm is raised and committed then
        await until(lambda: _fetch(db, _CHANGES + " WHERE c.condition = 'stale'"), what="G0 stale")
        await asyncio.to_thread(broker.start)
        await d.wait_connected()

        async def feed() -> None:  # G0 reports again, and keeps reporting: it returns to normal and stays
            async with aiomqtt.Client(broker.host, broker.port) as c:
                for k in range(1, 10**6):
                    await c.publish(f"{prefix}/testsite/edge1/readings", encode_batch(
                        "edge1", k, [{"sensor": "G0", "time": time.time(), "value": 1.0}]), qos=1)
                    await asyncio.sleep(0.5)

        feeder = asyncio.create_task(feed())
        got: list[dict] = []
        async with aiomqtt.Client(broker.host, broker.port, identifier=watcher, clean_session=False) as c:
            await c.subscribe(changes_topic, qos=1)
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(30):
                    async for m in c.messages:
                        got.append(json.loads(m.payload))
                        if [x["to"] for x in got][-1:] == ["rtn_unack"]:
                            break
        assert [(x["detector"], x["to"], x["condition"]) for x in got] == [
            ("stale", "unack", "stale"), ("stale", "rtn_unack", "normal")], got
        # the retained list of active alarms was refreshed after the reconnect (it is the committed
        # state: published again once the change just received is committed, right after it)
        active: dict = {}
        async with aiomqtt.Client(broker.host, broker.port) as c:
            await c.subscribe(active_topic, qos=1)
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(10):
                    async for m in c.messages:
                        active = json.loads(m.payload)
                        if [(a["detector_id"], a["state"]) for a in active["alarms"]] == [("stale", "rtn_unack")]:
                            break
        assert [(a["detector_id"], a["state"]) for a in active["alarms"]] == [("stale", "rtn_unack")], active
        assert d.terminate() == 0, d.log()
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await feeder
        _stop(d)
        await asyncio.to_thread(broker.stop)


async def test_webhook_secrets_stay_out_of_metrics_and_logs(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    async with Hook(status=404) as hook:
        named = hook.url("/services/T01/B02/s3cr3t-path?token=s3cr3t-query")
        unnamed = hook.url("/hooks/s3cr3t-two")
        det = ("detectors:\n"
               "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5}}\n"
               f"notify:\n  backoff: 0.1\n  webhooks:\n    - {{name: ops-chat, url: '{named}', attempts: 1}}\n"
               f"    - {{url: '{unnamed}', attempts: 1}}\n")
        d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, det, n_gas=1)
        d.start()
        try:
            await d.wait_connected()
            await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings", [
                encode_batch("edge1", 0, [{"sensor": "G0", "time": time.time(), "value": 9.0}])])
            await until(lambda: len(hook.received) >= 2, what="both webhooks called")
            host_label = f"http://127.0.0.1:{hook.port}"
            failed = {("ops-chat",): 'plantwatch_webhook_notifications_total{outcome="failed",webhook="ops-chat"}',
                      (host_label,): 'plantwatch_webhook_notifications_total{outcome="failed",webhook="%s"}' % host_label}
            await until(lambda: all(d.metrics().get(k, 0) >= 1 for k in failed.values()), timeout=30,
                         what=f"failed counts by webhook name in {d.metrics()}")
            body = urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=5).read().decode()
            assert d.terminate() == 0, d.log()
            log = d.log_path.read_text()
            assert "s3cr3t" not in body
            assert "s3cr3t" not in log and "refused a notification" in log and "ops-chat" in log, log
        finally:
            _stop(d)
    assert set(hook.paths) == {"/services/T01/B02/s3cr3t-path?token=s3cr3t-query", "/hooks/s3cr3t-two"}


async def test_robot_alarm_is_placed_where_the_reading_was_taken(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    det = "detectors:\n  - {id: robot-h2s, type: limit, select: {kind: robot}, params: {high: 5}}\n"
    d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, det, n_gas=1, n_robot=1)  # R0 lives in area1
    d.start()
    try:
        await d.wait_connected()
        now = time.time()
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/robot1/robot", [encode_batch(
            "robot1", 0, [{"sensor": "R0", "time": now - 10, "value": 1.0, "x": 40.0, "y": 50.0},
                          {"sensor": "R0", "time": now - 5, "value": 9.0, "x": 150.0, "y": 50.0}])])  # in area2
        rows = await until(lambda: _fetch(db, _CHANGES + " WHERE c.to_state = 'unack'"), what="the robot alarm")
        inc = await _fetch(db, "SELECT areas, title FROM incidents")
        assert [list(r["areas"]) for r in inc] == [["area2"]] and inc[0]["title"].endswith("in area2"), inc
        cause = json.loads(rows[0]["cause"]) if isinstance(rows[0]["cause"], str) else rows[0]["cause"]
        assert cause["area"] == "area2" and cause["position"] == [150.0, 50.0], cause
        # the retained list of active alarms (and the API, from the same query) shows it in area2
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as c:
            await c.subscribe(f"{prefix}/testsite/alarms/active", qos=1)
            async with asyncio.timeout(10):
                async for m in c.messages:
                    active = json.loads(m.payload)["alarms"]
                    if active:
                        break
        assert [(a["sensor"], a["area"]) for a in active] == [("R0", "area2")], active
        assert d.terminate() == 0, d.log()
    finally:
        _stop(d)


async def test_unacknowledged_alarm_keeps_its_highest_priority_until_acknowledged(tmp_path, mosquitto, db,
                                                                                  topic_prefix):
    prefix = topic_prefix.rstrip("/")
    token, api_port = "tok-" + uuid.uuid4().hex, free_port()
    det = ("detectors:\n  - {id: p-limit, type: limit, select: {kind: pressure}, params: {low: 5, low_low: 2}}\n"
           f"api:\n  port: {api_port}\n  tokens:\n    - {{name: ann, role: operator, sha256: {hash_token(token)}}}\n")
    d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, det, n_gas=1, n_pressure=1)
    topic = f"{prefix}/testsite/edge1/readings"
    sql = "SELECT a.id, a.state, a.condition, a.severity, a.priority FROM alarms a WHERE a.detector_id = 'p-limit'"
    d.start()
    try:
        await d.wait_connected()
        now = time.time()
        await publish_batches(mosquitto.host, mosquitto.port, topic, [
            encode_batch("edge1", k, [{"sensor": "P0", "time": now - 60 + 10 * k, "value": v}])
            for k, v in enumerate([10.0, 4.0, 1.0, 4.0])])  # normal, LO, LOLO, back to LO
        row = (await until(lambda: _fetch(db, sql + " AND a.condition = 'low' AND EXISTS (SELECT 1 FROM alarm_changes c"
                                                     " WHERE c.alarm_id = a.id AND c.condition = 'low_low')"),
                            what="LO after LOLO"))[0]
        assert (row["state"], row["severity"], row["priority"]) == ("unack", "critical", 1), dict(row)
        req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/alarms/{row['id']}/ack", method="POST",
                                     data=b"{}", headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "application/json"})
        assert (await asyncio.to_thread(urllib.request.urlopen, req, None, 30)).status == 200
        row = (await _fetch(db, sql))[0]
        assert (row["state"], row["severity"], row["priority"]) == ("ack", "high", 2), dict(row)
        assert d.terminate() == 0, d.log()
    finally:
        _stop(d)
