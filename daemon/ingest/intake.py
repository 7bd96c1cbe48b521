"""One MQTT intake session, the same for one instance and for each partition of several:
connect (persistent session), subscribe, read until told to stop, then commit and acknowledge
what was received on the same connection before disconnecting; reconnect after 0.25 s doubling
to 3 s, jittered (``reconnect.py``), while not stopped.

With Sparkplug B a host id makes the session a Sparkplug 3.0 host application: its CONNECT
carries the retained OFFLINE STATE as its Will, it publishes the retained ONLINE STATE once
subscribed, and the OFFLINE STATE before a disconnect of its own (``connectors/sparkplug/host.py``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import aiomqtt

from plantwatch.connectors.leases import DB_UNAVAILABLE
from plantwatch.connectors.mqtt import BrokerAddress, Subscriber
from plantwatch.connectors.sparkplug.host import STATE_QOS, HostState, is_state

from plantwatch.daemon.broker_session import BrokerSessions, ConnectProblems
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.ingest.mqtt_read import raise_if_cancelling, read_until
from plantwatch.daemon.ingest.pipeline import Pipeline
from plantwatch.daemon.ingest.reconnect import Backoff
from plantwatch.daemon.ingest.sparkplug import SparkplugIngest, is_sparkplug
from plantwatch.daemon.metrics import Metrics

log = logging.getLogger("plantwatch")


@dataclass(frozen=True)
class IntakeDeps:
    """What every intake session of a process shares."""

    cfg: Config
    broker: BrokerAddress
    pipeline: Pipeline
    metrics: Metrics
    problems: ConnectProblems  # a refused connect is logged once, by any connection
    sessions: BrokerSessions  # a lost persistent session -> system alarm
    ready: asyncio.Event  # set at the first subscription (the site announcer waits for it)
    sparkplug: SparkplugIngest | None = None


class Intake:
    """One session: ``client_id`` subscribes to ``topics``; ``mine(topic)`` says whether a message
    is this session's to store (a wildcard also brings other partitions' messages, which are only
    acknowledged, in order); ``host`` (Sparkplug host id) adds the STATE duties."""

    def __init__(self, deps: IntakeDeps, *, client_id: str, topics: list[str], what: str = "intake",
                 mine: Callable[[str], bool] | None = None, host: HostState | None = None,
                 on_session: Callable[[bool], None] | None = None):
        self.d = deps
        self.client_id = client_id
        self.topics = topics + ([host.topic] if host is not None else [])
        self.what = what
        self.mine = mine
        self.host = host
        self.on_session = on_session  # called with True once subscribed, False when the session ends
        self.gen = 0  # a message of an earlier connection (or of a stopped intake) is not acknowledged

    def invalidate(self) -> None:
        """Nothing received so far may be acknowledged any more (the partition went to another holder)."""
        self.gen += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop``; then stop reading, wait until everything received is committed and
        acknowledged on this same connection, and only then disconnect (an acknowledgement sent
        after the disconnect is lost, and the broker would redeliver readings already stored)."""
        d, mq = self.d, self.d.cfg.mqtt
        backoff = Backoff()
        while not stop.is_set():
            self.gen += 1
            gen = self.gen
            will = self.host.next_connection() if self.host is not None else None
            try:
                async with Subscriber(d.broker, client_id=self.client_id, topics=self.topics,
                                      keepalive=mq.keepalive if mq else 30,
                                      receive_window=mq.receive_window if mq else 1000, will=will) as sub:
                    raise_if_cancelling()  # the MQTT client's connect can swallow a cancellation
                    d.metrics.connected.set(1)
                    d.problems.ok(self.what)
                    try:
                        await d.sessions.connected(self.client_id, sub.session_present)
                    except DB_UNAVAILABLE as e:  # only the record of the session: intake goes on
                        log.warning("%s: session not recorded (%s: %s)", self.what, type(e).__name__, e)
                    if self.host is not None:
                        await sub.publish(self.host.topic, self.host.online(), qos=STATE_QOS, retain=True)
                    d.ready.set()
                    d.pipeline.detectors.restart_clocks(time.time())  # readings may have been missed until now
                    backoff.reset()
                    log.info("%s: subscribed to %s on %s", self.what, ", ".join(self.topics[:6])
                             + (" …" if len(self.topics) > 6 else ""), d.broker)
                    if self.on_session is not None:
                        self.on_session(True)
                    try:
                        await read_until(self._read(sub, gen), stop, name=f"mqtt-read-{self.what}")
                    finally:
                        if self.on_session is not None:
                            self.on_session(False)
                    await d.pipeline.drain()
                    if self.host is not None:  # a Will is not sent on a clean disconnect
                        await sub.publish(self.host.topic, self.host.offline(), qos=STATE_QOS, retain=True)
                    log.info("%s: drained: every message received is committed and acknowledged; disconnecting",
                             self.what)
                    return
            except aiomqtt.MqttError as e:
                d.metrics.connected.set(0)
                if stop.is_set():
                    return
                delay = backoff.next()
                d.problems.failed(e, delay, what=self.what)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _read(self, sub: Subscriber, gen: int) -> None:
        p, sp = self.d.pipeline, self.d.sparkplug
        async for msg in sub.messages():
            if self.gen != gen:
                return
            topic, ack = str(msg.topic), partial(self._ack, sub, msg, gen)
            payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else str(msg.payload).encode()
            if is_state(topic):
                if self.host is not None and topic == self.host.topic and not msg.retain:
                    # (a retained one is what was there before this connection's ONLINE)
                    again = self.host.answer(bytes(payload))
                    if again is not None:  # an OFFLINE of our host id while we are here: say ONLINE again
                        await sub.publish(self.host.topic, again, qos=STATE_QOS, retain=True)
                p.defer_ack(ack)  # another host id's STATE (kept by the session from an earlier config): no data
                continue
            if self.mine is not None and not self.mine(topic):
                p.defer_ack(ack)  # another partition's: its holder stores it
                continue
            if sp is not None and is_sparkplug(topic):
                await sp.submit(p, sub.publish, topic, bytes(payload), ack)
            else:
                p.submit(topic, bytes(payload), ack)
            if p.due():
                await p.flush()

    def _ack(self, sub: Subscriber, msg: aiomqtt.Message, gen: int) -> None:
        # A message from an earlier connection cannot be acknowledged on this one: the broker
        # redelivers it, and the idempotent write makes the second copy harmless.
        if gen == self.gen:
            sub.ack(msg)
