"""MQTT in and out, on aiomqtt.

Inbound (:class:`Subscriber`): a persistent session (fixed client id, ``clean_session=False``)
with QoS 1 subscriptions and **manual acknowledgement**: aiomqtt 2.x lets paho send PUBACK as soon
as a message arrives (aiomqtt issue #345), which would tell the broker a reading is safe while it
is still only in memory. We switch paho to manual acks and send each PUBACK only after the
reading has been committed to the database or dead-lettered (``ack``), in arrival order as MQTT
requires. If the daemon dies first, the broker redelivers on reconnect.

Outbound (:class:`Publisher`): alarm state for control systems (retained) and alarm changes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import AsyncIterator

import aiomqtt

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


class Subscriber:
    """``async with Subscriber(...) as sub: async for msg in sub.messages(): ...; sub.ack(msg)``"""

    def __init__(self, broker: BrokerAddress, *, client_id: str, topics: list[str], keepalive: int = 30,
                 receive_window: int = 1000):
        self.broker = broker
        self.client_id = client_id
        self.topics = topics
        self.keepalive = keepalive
        self.receive_window = receive_window
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> "Subscriber":
        self._client = aiomqtt.Client(
            self.broker.host, self.broker.port, username=self.broker.username, password=self.broker.password,
            identifier=self.client_id, clean_session=False, keepalive=self.keepalive,
            max_inflight_messages=self.receive_window, timeout=10)
        # paho: do not PUBACK on receipt; we call ack() after the data is durable.
        self._client._client.manual_ack_set(True)  # noqa: SLF001 - the route of aiomqtt issue #345
        await self._client.__aenter__()
        for t in self.topics:
            await self._client.subscribe(t, qos=1)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            if exc[0] is None:
                await self._settle()
            await self._client.__aexit__(*exc)
            self._client = None

    async def _settle(self) -> None:
        """Wait until the broker has processed every PUBACK sent so far, before disconnecting.

        A PUBACK handed to the socket is not yet processed: the broker keeps sending messages we
        no longer read, and closing a socket with unread input resets the connection, which can
        discard acknowledgements still in the broker's receive buffer (those readings would come
        back as duplicates). The broker answers packets in order, so the answer to an UNSUBSCRIBE
        sent after the PUBACKs (of a filter never subscribed: it changes nothing) proves they
        were processed."""
        try:
            await self._client.unsubscribe(f"plantwatch-ack-barrier/{self.client_id}")
        except aiomqtt.MqttError as e:  # connection already gone: the broker redelivers, writes are idempotent
            log.debug("no acknowledgement barrier before disconnecting: %s", e)

    async def messages(self) -> AsyncIterator[aiomqtt.Message]:
        assert self._client is not None
        async for m in self._client.messages:
            yield m

    def ack(self, msg: aiomqtt.Message) -> None:
        """Send PUBACK for a QoS 1 message (no-op for QoS 0). Must be called in arrival order."""
        if msg.qos > 0 and self._client is not None:
            self._client._client.ack(msg.mid, msg.qos)  # noqa: SLF001

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0) -> None:
        """Publish on the intake connection (Sparkplug B rebirth requests to edge nodes)."""
        assert self._client is not None
        await self._client.publish(topic, payload, qos=qos)

    @property
    def pending_queue(self) -> int:
        return len(self._client.messages) if self._client is not None else 0


class Publisher:
    """A separate connection for outbound messages, so slow inbound processing never delays them."""

    def __init__(self, broker: BrokerAddress, *, client_id: str):
        self.broker = broker
        self.client_id = client_id
        self._client: aiomqtt.Client | None = None

    async def __aenter__(self) -> "Publisher":
        self._client = aiomqtt.Client(self.broker.host, self.broker.port, username=self.broker.username,
                                      password=self.broker.password, identifier=self.client_id, timeout=10)
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.__aexit__(*exc)
            self._client = None

    @property
    def connected(self) -> bool:
        """False once the connection is lost (paho notices a closed socket or missed pings)."""
        return self._client is not None and self._client._client.is_connected()  # noqa: SLF001

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=qos, retain=retain)
