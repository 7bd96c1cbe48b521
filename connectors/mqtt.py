"""MQTT in and out, on aiomqtt.

Inbound (:class:`Subscriber`): a persistent session (fixed client id, ``clean_session=False``)
with QoS 1 subscriptions and **manual acknowledgement**: aiomqtt 2.x lets paho send PUBACK as soon
as a message arrives (aiomqtt issue #345), which would tell the broker a reading is safe while it
is still only in memory. We switch paho to manual acks and send each PUBACK only after the
reading has been committed to the database or dead-lettered (``ack``), in arrival order as MQTT
requires. If the daemon dies first, the broker redelivers on reconnect. After each connect
``session_present`` tells whether the broker still had the session (CONNACK): a persistent
session that is gone means the broker lost what it had queued for us.

Outbound (:class:`Publisher`): alarm state for control systems (retained) and alarm changes.

Every client plantwatch opens goes through :func:`client` and :func:`connect`: TLS from the
broker address (:class:`~plantwatch.connectors.tls.ClientTls`), and a failed connection raised
as :class:`BrokerError` with one sentence saying what is wrong (a certificate the broker refused,
a wrong CA or host name, plain text sent to a TLS port, a refused user) instead of paho's
"Connection reset by peer" or a bare timeout.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from .tls import ClientTls, client_cert_alert, explain, probe

log = logging.getLogger(__name__)


class _SocketErrors(logging.Filter):
    """paho logs the socket error behind a dropped connection; :func:`diagnose` reports it,
    explained, in one line, so the raw line is left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("failed to receive on socket")


#: the logger aiomqtt and paho log to for plantwatch's clients
CLIENT_LOG = logging.getLogger("plantwatch.mqtt.client")
CLIENT_LOG.addFilter(_SocketErrors())


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    #: None: plain TCP
    tls: ClientTls | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class BrokerError(aiomqtt.MqttError):
    """A connection the broker did not accept, with what is wrong in one sentence.

    ``reason`` is short and fixed (a metric label): ``tls_unknown_ca``, ``tls_hostname``,
    ``tls_client_expired``, ``not_tls``, ``refused``, ``unavailable``, ...; ``config`` is True
    when retrying cannot help until a certificate, a setting or the broker's config changes."""

    def __init__(self, reason: str, text: str, *, config: bool):
        super().__init__(text)
        self.reason = reason
        self.config = config


class _ErrorsSeen(logging.LoggerAdapter):
    """The logger handed to aiomqtt and paho: passes everything on to :data:`CLIENT_LOG` and
    keeps the last error (paho's socket error behind a dropped connection) for :func:`diagnose`.
    Messages below ERROR are not even formatted when their level is off."""

    def __init__(self) -> None:
        super().__init__(CLIENT_LOG, {})
        self.last_error: str | None = None

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.ERROR:
            self.last_error = str(msg) % args if args else str(msg)
        super().log(level, msg, *args, **kwargs)


class _Client(aiomqtt.Client):
    """aiomqtt's client, plus: the CONNACK's session-present flag, paho's last error (the TLS
    alert or socket error behind a dropped connection, which aiomqtt does not pass on), and a
    connection dropped before the CONNACK ends the connect at once instead of at its timeout.

    It extends aiomqtt's CONNACK and disconnect callbacks (``_on_connect``, ``_on_disconnect``,
    internal to aiomqtt 2.x, whose version is locked); tests/test_tls.py and
    tests/test_broker_session.py fail if they change behind it."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._errors = _ErrorsSeen()
        super().__init__(*args, logger=self._errors, **kwargs)
        self.session_present: bool | None = None

    @property
    def last_error(self) -> str | None:
        return self._errors.last_error

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:  # noqa: ANN001
        self.session_present = bool(getattr(flags, "session_present", False))
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:  # noqa: ANN001
        if not self._connected.done():  # dropped before the broker answered CONNECT
            self._connected.set_exception(aiomqtt.MqttError(self.last_error or f"connection closed ({reason_code})"))
            return
        super()._on_disconnect(client, userdata, flags, reason_code, properties)


def client(broker: BrokerAddress, **kwargs: Any) -> _Client:
    """An (unconnected) aiomqtt client for ``broker``: its credentials and TLS; ``kwargs`` go to
    ``aiomqtt.Client``. Connect it with :func:`connect` (or ``async with``)."""
    try:
        tls = broker.tls.context() if broker.tls is not None else None
    except (OSError, ssl.SSLError) as e:  # a file removed or half-written since the config was loaded
        raise BrokerError("tls_files", f"MQTT broker {broker.host}:{broker.port}: cannot load the TLS files"
                          f" ({broker.tls.ca_file}, {broker.tls.cert_file}, {broker.tls.key_file}): {e}",
                          config=True) from None
    return _Client(broker.host, broker.port, username=broker.username, password=broker.password,
                   tls_context=tls, **kwargs)


async def connect(c: _Client, broker: BrokerAddress) -> _Client:
    """``await c.__aenter__()``; a failure is raised as :class:`BrokerError` saying why."""
    try:
        return await c.__aenter__()
    except aiomqtt.MqttError as e:
        raise await diagnose(e, c.last_error, broker) from None


@contextlib.asynccontextmanager
async def connected(broker: BrokerAddress, **kwargs: Any) -> AsyncIterator[_Client]:
    """``async with connected(broker, identifier=...) as c``: :func:`client` + :func:`connect`,
    disconnected at the end."""
    c = await connect(client(broker, **kwargs), broker)
    exc: tuple = (None, None, None)
    try:
        yield c
    except BaseException as e:
        exc = (type(e), e, e.__traceback__)
        raise
    finally:
        await c.__aexit__(*exc)


async def diagnose(e: BaseException, last_error: str | None, broker: BrokerAddress) -> BrokerError:
    """Why connecting to ``broker`` failed with ``e`` (paho's ``last_error`` has the socket's
    own error when the broker dropped the connection)."""
    where = f"MQTT broker {broker.host}:{broker.port}"
    text = " ".join(x for x in (str(e), last_error or "") if x)
    ex = explain(text, host=broker.host, port=broker.port, tls=broker.tls)
    if ex is not None:
        return BrokerError(ex.reason, f"{where}: {ex.text}", config=True)
    if isinstance(e, MqttConnectError):
        who = f"user {broker.username!r}" if broker.username else "a client without a user name"
        if broker.tls is not None and broker.tls.cert_file:
            who += f" (client certificate {broker.tls.cert_file})"
        return BrokerError("refused", f"{where} refused the connection of {who}: {e}", config=True)
    if broker.tls is not None and broker.tls.cert_file:  # a refusal of our certificate may have been lost
        alert = await asyncio.to_thread(client_cert_alert, broker.host, broker.port, broker.tls)
        ex = explain(alert, host=broker.host, port=broker.port, tls=broker.tls) if alert else None
        if ex is not None:
            return BrokerError(ex.reason, f"{where}: {ex.text}", config=True)
    answer = await asyncio.to_thread(probe, broker.host, broker.port)
    if broker.tls is None and answer == "tls":
        return BrokerError("not_tls", f"{where} expects TLS but the connection is plain text: set tls (ca_file, and"
                           " cert_file/key_file if the broker requires client certificates)", config=True)
    if broker.tls is not None and answer == "plain":
        return BrokerError("not_tls", f"{where} does not speak TLS: is this the plain-text port? (a TLS listener is"
                           " usually 8883)", config=True)
    return BrokerError("unavailable", f"{where} unavailable: {text or type(e).__name__}", config=False)


class Subscriber:
    """``async with Subscriber(...) as sub: async for msg in sub.messages(): ...; sub.ack(msg)``"""

    def __init__(self, broker: BrokerAddress, *, client_id: str, topics: list[str], keepalive: int = 30,
                 receive_window: int = 1000, will: tuple[str, bytes] | None = None):
        """``will``: (topic, payload) the broker publishes retained at QoS 1 when this connection
        is lost (a Sparkplug host application's OFFLINE STATE)."""
        self.broker = broker
        self.client_id = client_id
        self.will = will
        self.topics = topics
        self.keepalive = keepalive
        self.receive_window = receive_window
        #: after connecting: whether the broker still had this client id's session (CONNACK)
        self.session_present: bool | None = None
        self._client: _Client | None = None

    async def __aenter__(self) -> "Subscriber":
        will = aiomqtt.Will(self.will[0], self.will[1], qos=1, retain=True) if self.will else None
        self._client = client(self.broker, identifier=self.client_id, clean_session=False, keepalive=self.keepalive,
                              max_inflight_messages=self.receive_window, timeout=10, will=will)
        # paho: do not PUBACK on receipt; we call ack() after the data is durable.
        self._client._client.manual_ack_set(True)  # noqa: SLF001 - the route of aiomqtt issue #345
        await connect(self._client, self.broker)
        self.session_present = self._client.session_present
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

    async def publish(self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Publish on the intake connection (Sparkplug B rebirth requests to edge nodes, the host's STATE)."""
        assert self._client is not None
        await self._client.publish(topic, payload, qos=qos, retain=retain)

    @property
    def pending_queue(self) -> int:
        return len(self._client.messages) if self._client is not None else 0


class Publisher:
    """A separate connection for outbound messages, so slow inbound processing never delays them."""

    def __init__(self, broker: BrokerAddress, *, client_id: str):
        self.broker = broker
        self.client_id = client_id
        self._client: _Client | None = None

    async def __aenter__(self) -> "Publisher":
        self._client = client(self.broker, identifier=self.client_id, timeout=10)
        await connect(self._client, self.broker)
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
        """Publish and wait for the broker's acknowledgement. A connection lost meanwhile (a broker
        restart) raises :class:`aiomqtt.MqttError` at once, so the caller reconnects and publishes
        again without waiting for the client's timeout (aiomqtt leaves a QoS 1 publish waiting for
        its PUBACK until then, although the connection that would carry it is gone)."""
        assert self._client is not None
        lost = self._client._disconnected  # noqa: SLF001 - aiomqtt's own "connection ended" future
        sending = asyncio.ensure_future(self._client.publish(topic, payload, qos=qos, retain=retain))
        try:
            await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sending.done():
                sending.cancel()
        if lost.done() and not lost.cancelled():
            lost.exception()  # seen here (else asyncio logs it as never retrieved)
        if sending.done() and not sending.cancelled():
            return sending.result()
        raise aiomqtt.MqttError(f"connection to the broker lost before it acknowledged a message on {topic}")
