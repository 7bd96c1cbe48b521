"""The alarm publisher through a broker outage (a real Mosquitto of this test's own, stopped for a
few seconds): the outage is logged as one episode (a warning when it starts, one every minute
while it lasts, one when it ends saying what was published from the outbox); the change decided during the outage is published once the broker is back."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import aiomqtt
import pytest

from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.services import MosquittoInstance
from plantwatch.connectors.store import AlarmWrite
from plantwatch.daemon.alarms.publisher import AlarmPublisher
from plantwatch.daemon.metrics import Metrics

from .helpers import until


async def _listen(host: str, port: int, topic: str, got: list, ready: asyncio.Event) -> None:
    while True:
        try:
            async with aiomqtt.Client(host, port, identifier="outage-listener", clean_session=False) as c:
                await c.subscribe(topic, qos=1)
                ready.set()
                async for m in c.messages:
                    got.append(json.loads(m.payload))
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


async def test_a_broker_outage_is_logged_as_one_episode(caplog):
    broker = MosquittoInstance()
    broker.start()
    caplog.set_level(logging.INFO)
    got: list[dict] = []
    ready = asyncio.Event()

    async def active() -> list:
        return []

    pub = AlarmPublisher(BrokerAddress(broker.host, broker.port), client_id="pub-outage", base="pw/site/alarms",
                         site="site", active=active, metrics=Metrics(), outage_remind=3.0)
    listener = asyncio.create_task(_listen(broker.host, broker.port, "pw/site/alarms/changes", got, ready))
    runner = asyncio.create_task(pub.run())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(1.0)
        broker.halt()
        caplog.clear()
        await asyncio.sleep(1.0)
        pub.offer([AlarmWrite("limit", 1, "normal", "unack", True, "high", "high", time.time(), {})])
        await asyncio.sleep(6.0)  # six reconnect attempts
        broker.start()
        await until(lambda: any(m["to"] == "unack" for m in got), 30, "the change published after the outage")
        await asyncio.sleep(0.5)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("plantwatch")]
        print("\n".join(warnings))
        # one when it started, a reminder every 3 s (outage_remind) while it lasted, one when it ended
        assert "broker unreachable" in warnings[0], warnings
        assert "reachable again" in warnings[-1] and "1 alarm message(s) published from the outbox" in warnings[-1]
        assert 1 <= len(warnings[1:-1]) <= 2, warnings
        assert all("still unreachable" in w for w in warnings[1:-1]), warnings
    finally:
        pub.finish()
        with contextlib.suppress(asyncio.TimeoutError, aiomqtt.MqttError):
            await asyncio.wait_for(runner, 10)
        runner.cancel()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
        broker.stop()
