"""The daemon's persistent broker session: with the shipped broker config (deploy/site/mosquitto,
run by SiteBroker as it is) a collector cannot take it over, and the readings queued in it while
the daemon is away all arrive; and a session the broker did lose (here: wiped by a clean-session
connect with the daemon's client id on a broker without that protection) is counted, logged and
raised as a system alarm, after a daemon restart and after a reconnect within a run."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from pathlib import Path

import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiomqtt
import asyncpg
import pytest
import yaml

from plantwatch.connectors.tls_services import SITE_MOSQUITTO, SiteBroker
from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.config.model import load_config, load_config_text
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.runtime import DaemonHandle

from .helpers import until

pytestmark = pytest.mark.slow

SITE_DIR = Path(__file__).resolve().parents[1] / "deploy" / "site"


def _sensors(collector: str) -> str:
    return (f"  areas: [{{id: a1, collector: {collector}}}]\n"
            "sensors:\n  - {id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a1}\n")


def _batches(collector: str, seq0: int, n: int, t0: float) -> list[bytes]:
    return [encode_batch(collector, seq0 + k, [{"sensor": "G0", "time": t0 + seq0 + k, "value": 1.0}])
            for k in range(n)]


@dataclass(frozen=True)
class Peer:
    """How a test client reaches the broker (aiomqtt directly: the clients under test are the
    daemon's, the test's own are plain library clients)."""
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    cert: tuple[str, str] | None = None


@asynccontextmanager
async def connected(peer: Peer, **kwargs):
    ctx = None
    if peer.ca:
        ctx = ssl.create_default_context(cafile=peer.ca)
        if peer.cert:
            ctx.load_cert_chain(*peer.cert)
    async with aiomqtt.Client(peer.host, peer.port, username=peer.username, password=peer.password,
                              tls_context=ctx, **kwargs) as c:
        yield c


async def _publish(broker: Peer, topic: str, batches: list[bytes], client_id: str) -> None:
    async with connected(broker, identifier=client_id, timeout=10) as c:
        for b in batches:
            await c.publish(topic, b, qos=1)


async def _stored(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM readings")
    finally:
        await conn.close()


async def _run(text: str, metrics: Metrics) -> tuple[DaemonHandle, asyncio.Task]:
    handle = DaemonHandle(load_config_text(text), metrics=metrics)
    task = asyncio.create_task(handle.run())
    await until(lambda: task.done() or (handle.daemon is not None and handle.daemon.ready.is_set()), 30,
                "the daemon subscribed")
    if task.done():
        task.result()
    return handle, task


async def _stop(handle: DaemonHandle, task: asyncio.Task) -> None:
    handle.request_stop()
    await asyncio.wait_for(task, 60)


def _lost(m: Metrics, client_id: str) -> float:
    return m.registry.get_sample_value("plantwatch_mqtt_sessions_lost_total", {"client_id": client_id}) or 0.0


async def test_a_collector_cannot_take_over_the_daemons_session_with_the_shipped_broker_config(site_ca, db):
    """As on a site: the daemon on the port and with the TLS its shipped site.yaml names, a
    collector on the port the compose file publishes, with the credentials the shipped broker
    config asks of collectors (its certificate; a password where the config takes passwords)."""
    conf = (SITE_MOSQUITTO / "mosquitto.conf").read_text()
    site = load_config(SITE_DIR / "plantwatch" / "site.yaml", check_files=False)
    compose = yaml.safe_load((SITE_DIR / "compose.yaml").read_text())
    edge_port = int(compose["services"]["mosquitto"]["ports"][0].split(":")[-1])
    # the broker's password file holds the users compose's mosquitto-passwd service writes
    users = re.findall(r"mosquitto_passwd -b \S+ (\S+) ", compose["services"]["mosquitto-passwd"]["command"][0])
    pw = {u: "pw-" + uuid.uuid4().hex for u in users + ["edge-01"]}
    broker = SiteBroker(site_ca, {u: pw[u] for u in users})
    await asyncio.to_thread(broker.start)
    try:
        tls = f", tls: {{ca_file: {site_ca.ca_file}}}" if site.mqtt.tls is not None else ""
        daemon_id = site.mqtt.client_id
        text = (f"site:\n  id: demo\n{_sensors('edge-01')}"
                f"mqtt: {{host: 127.0.0.1, port: {broker.local(site.mqtt.port)}, username: {site.mqtt.username},"
                f" password: {pw['plantwatch']}, topic_prefix: {site.mqtt.topic_prefix}{tls}}}\n"
                f'database: {{dsn: "{db}"}}\nmetrics: {{port: 0}}\n')
        ca = cert = None
        if "certfile" in conf:  # TLS listeners: the collector's certificate when they log in with one
            ca = site_ca.ca_file
            if "use_identity_as_username true" in conf:
                cert = site_ca.client("edge-01")
        edge = Peer("127.0.0.1", broker.local(edge_port), "edge-01", pw["edge-01"], ca, cert)
        topic = f"{site.mqtt.topic_prefix}/demo/edge-01/readings"
        t0 = time.time() - 600

        m = Metrics()
        handle, task = await _run(text, m)
        await _publish(edge, topic, _batches("edge-01", 0, 50, t0), "plantwatch-collect-edge-01")
        await until(lambda: _stored_is(db, 50), 30, "the first 50 readings stored")
        await _stop(handle, task)  # the session stays at the broker, and queues what comes next
        await _publish(edge, topic, _batches("edge-01", 50, 50, t0), "plantwatch-collect-edge-01")

        # the takeover: the collector's credentials, the daemon's client id, a clean session
        outcomes = []
        for port in sorted({broker.local(edge_port), broker.local(site.mqtt.port)}):
            attacker = Peer("127.0.0.1", port, edge.username, edge.password, edge.ca, edge.cert)
            try:
                async with connected(attacker, identifier=daemon_id, clean_session=True, timeout=10):
                    outcomes.append((port, "connected"))
            except aiomqtt.MqttError as e:
                outcomes.append((port, f"refused: {e}"))
        m2 = Metrics()
        handle, task = await _run(text, m2)
        try:
            await until(lambda: _stored_is(db, 100), 20, "all 100 readings stored (50 of them queued in the"
                        f" daemon's session while it was away); takeover attempts: {outcomes}; the daemon found"
                        f" its session lost {_lost(m2, daemon_id):.0f} time(s)")
            assert _lost(m2, daemon_id) == 0
        finally:
            await _stop(handle, task)
        log = broker.log_path.read_text()
        assert f"as {daemon_id} (p2, c1" not in log, f"the broker let a collector use the daemon's client id:\n{log}"
        # what the shipped config does with such a connection: refused on the daemon listener,
        # filed under the collector's own name on the edge listener
        if "use_username_as_clientid true" in conf:
            outcome = dict(outcomes)
            assert outcome[broker.local(site.mqtt.port)].startswith("refused"), outcomes
            assert outcome[broker.local(edge_port)] == "connected", outcomes  # as edge-01 (the log above)
            assert re.search(r"New client connected from \S+ as edge-01 \(p2, c1", log), log
    finally:
        await asyncio.to_thread(broker.stop)


async def _stored_is(dsn: str, n: int) -> bool:
    return await _stored(dsn) == n


async def test_a_lost_session_is_counted_logged_and_alarmed(mosquitto, db, topic_prefix, caplog):
    prefix = topic_prefix.rstrip("/")
    client_id = f"pw-{uuid.uuid4().hex[:8]}"
    text = (f"site:\n  id: lossy\n{_sensors('edge1')}"
            f"mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, topic_prefix: {prefix}, client_id: {client_id}}}\n"
            f'database: {{dsn: "{db}"}}\nmetrics: {{port: 0}}\n')
    plain = Peer(mosquitto.host, mosquitto.port)
    topic = f"{prefix}/lossy/edge1/readings"
    t0 = time.time() - 600
    caplog.set_level(logging.INFO)

    # first run: no session before, none expected: nothing to say
    m = Metrics()
    handle, task = await _run(text, m)
    await _stop(handle, task)
    assert _lost(m, client_id) == 0 and "data may have been lost" not in caplog.text

    # while the daemon is away, readings are queued in its session ... which is then wiped
    await _publish(plain, topic, _batches("edge1", 0, 20, t0), "edge1")
    async with connected(plain, identifier=client_id, clean_session=True, timeout=10):
        pass

    alarms: list[dict] = []
    async with connected(plain, identifier=f"watch-{uuid.uuid4().hex[:6]}", timeout=10) as watcher:
        await watcher.subscribe(f"{prefix}/lossy/alarms/system", qos=1)

        async def watch() -> None:
            async for msg in watcher.messages:
                alarms.append(json.loads(bytes(msg.payload)))

        watching = asyncio.create_task(watch())
        m = Metrics()
        handle, task = await _run(text, m)  # a restart: the session established in the first run is gone
        try:
            assert _lost(m, client_id) == 1
            await until(lambda: len(alarms) == 1, 10, "the system alarm on alarms/system")
            assert alarms[0]["alarm"] == "broker_session_lost" and alarms[0]["client_id"] == client_id
            assert "an earlier run" in alarms[0]["text"]
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.name == "plantwatch.broker"]
            assert len(errors) == 1 and "data may have been lost at the broker" in errors[0], errors

            # within the run: another clean-session connect with the daemon's client id throws it
            # off and wipes its session; the daemon reconnects and finds it gone
            async with connected(plain, identifier=client_id, clean_session=True, timeout=10):
                pass
            await until(lambda: _lost(m, client_id) == 2, 20, "the second loss counted")
            await until(lambda: len(alarms) == 2, 10, "the second system alarm")
            assert "this run" in alarms[1]["text"]
        finally:
            await _stop(handle, task)
            watching.cancel()
    conn = await asyncpg.connect(db)
    try:
        assert await conn.fetchval("SELECT lost FROM mqtt_sessions WHERE client_id = $1", client_id) == 2
    finally:
        await conn.close()
    # the readings queued in the wiped session are gone: this is what the alarm is about
    assert await _stored(db) == 0
