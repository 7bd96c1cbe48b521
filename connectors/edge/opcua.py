"""OPC UA servers (asyncua): subscribe to node ids and publish every data change.

One subscription per server (``publishing_interval``), one monitored item per channel
(``sampling_interval``). A data change becomes a reading stamped with its source timestamp (the
server timestamp, then the arrival time, when the server gives none). Its status code sets the
quality: Good → good, Uncertain → uncertain, Bad → bad. A Bad value usually arrives without a
value; the reading then repeats the channel's last value, marked bad, so the fault is stored; a
channel with no value yet skips it (counted).

The status code also sets the wire format's flag: limit bits High, ``Uncertain_EngineeringUnits
Exceeded`` (unless limited Low), or Bad with a value at or above the top of the channel's range
(``range`` or ``loop.range``) is ``over_range``; ``Bad_SensorFailure``, ``Bad_DeviceFailure`` and
``Bad_NotConnected`` are ``signal_failure``.

OPC UA reports by exception: a value that does not change sends nothing, which the daemon could
not tell from a lost server. So while the connection is healthy, a channel silent for
``repeat_after`` seconds is published again with its last value and quality, stamped now.

The connection is checked every ``timeout``/2 seconds; when the server goes away the client is
dropped and a new one connects with backoff, subscribing again. In between, no readings: the
daemon's stale detector alarms on the server's sensors.

Security: ``mode: None`` (no security), ``Sign`` or ``SignAndEncrypt`` with ``policy`` and the
client's ``certificate`` and ``private_key`` (PEM or DER); ``server_certificate`` pins the
server's certificate.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .scaling import Flag, Quality, linear
from .sources import Channel, CollectMetrics, Emit, SourceConfig, now, reading, register, sleep_or_stop

log = logging.getLogger("plantwatch.collect.opcua")


class OpcuaChannel(Channel):
    #: node id, e.g. ``ns=2;s=GasPanel.H2S_01`` or ``ns=3;i=1001``
    node: str = Field(min_length=3)

    @field_validator("node")
    @classmethod
    def _node_id(cls, v: str) -> str:
        from asyncua import ua

        try:
            ua.NodeId.from_string(v)
        except Exception:  # asyncua raises plain ValueError/UaStringParsingError variants
            raise ValueError(f"not an OPC UA node id: {v!r} (e.g. ns=2;s=Name or ns=2;i=1001)") from None
        return v


class OpcuaSecurity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: None, Sign or SignAndEncrypt
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    #: security policy when signing
    policy: Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "Basic256Sha256"
    #: the client's certificate (required unless mode is None)
    certificate: Path | None = None
    #: the client's private key (required unless mode is None)
    private_key: Path | None = None
    #: the server's certificate, to pin it (optional)
    server_certificate: Path | None = None
    #: the client's application URI (default: the URI in the certificate, as servers require them to match)
    application_uri: str | None = None

    @model_validator(mode="after")
    def _files(self):
        if self.mode == "None":
            return self
        problems = []
        for name in ("certificate", "private_key"):
            p = getattr(self, name)
            if p is None:
                problems.append(f"{name}: required with mode {self.mode}")
            elif not p.is_file():
                problems.append(f"{name}: no such file: {p}")
            elif name == "certificate":
                try:
                    certificate_uri(p)
                except ValueError:
                    problems.append(f"certificate: {p} is not a PEM or DER X.509 certificate")
        if self.server_certificate is not None and not self.server_certificate.is_file():
            problems.append(f"server_certificate: no such file: {self.server_certificate}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def client_uri(self) -> str | None:
        """The application URI the client must announce: configured, or the certificate's."""
        if self.application_uri or self.certificate is None:
            return self.application_uri
        return certificate_uri(self.certificate)

    def security_string(self) -> str | None:
        if self.mode == "None":
            return None
        parts = [self.policy, self.mode, str(self.certificate), str(self.private_key)]
        return ",".join(parts + ([str(self.server_certificate)] if self.server_certificate else []))


class OpcuaServer(SourceConfig):
    type: Literal["opcua"]
    #: endpoint, ``opc.tcp://host:port/path``
    url: str = Field(pattern=r"^opc\.tcp://[^/\s]+")
    #: seconds between samples of each node on the server
    sampling_interval: float = Field(1.0, ge=0, le=3600)
    #: seconds between the server's notifications
    publishing_interval: float = Field(1.0, gt=0, le=3600)
    #: seconds for requests; the connection is checked every timeout/2
    timeout: float = Field(4.0, gt=0, le=60)
    #: seconds after which an unchanged value is published again (while connected); none: never
    repeat_after: float | None = Field(10.0, gt=0, le=86400)
    username: str | None = None
    password: str | None = None
    security: OpcuaSecurity = OpcuaSecurity()
    channels: list[OpcuaChannel] = Field(min_length=1, max_length=10_000)


def certificate_uri(path: Path) -> str | None:
    """The URI subject-alternative-name of a PEM or DER certificate (None if it has none)."""
    from cryptography import x509

    data = path.read_bytes()
    cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _timestamp(dv: Any) -> float:
    ts: datetime | None = dv.SourceTimestamp or dv.ServerTimestamp
    return ts.timestamp() if ts is not None else now()


def _quality(status: Any) -> Literal["good", "uncertain", "bad"]:
    if status.is_good():
        return "good"
    return "uncertain" if status.is_uncertain() else "bad"


#: status codes (without the info bits) that mean there is no measurement at all
_NO_SIGNAL = (0x808C0000, 0x808B0000, 0x808A0000)  # Bad_SensorFailure, Bad_DeviceFailure, Bad_NotConnected
_EU_EXCEEDED = 0x40940000  # Uncertain_EngineeringUnitsExceeded
_LIMIT_LOW, _LIMIT_HIGH = 1, 2  # LimitBits (bits 8-9 of the status code)


def _flag(status: Any, ch: OpcuaChannel, raw: float | None) -> Flag | None:
    """The wire flag an OPC UA status code (and the value) implies, from the OPC UA spec (Part 4,
    StatusCode: the code's upper 16 bits, LimitBits in bits 8-9)."""
    code = int(status.value)
    base, limit = code & 0xFFFF0000, (code >> 8) & 0x3
    if base in _NO_SIGNAL:
        return "signal_failure"
    if limit == _LIMIT_HIGH or (base == _EU_EXCEEDED and limit != _LIMIT_LOW):
        return "over_range"
    rng = ch.measuring_range
    if status.is_bad() and rng is not None and raw is not None and ch.loop is None \
            and linear(raw, ch.scale, ch.offset) >= rng[1]:
        return "over_range"
    return None


@register
class OpcuaSource:
    Config = OpcuaServer

    def __init__(self, config: OpcuaServer, metrics: CollectMetrics):
        self.cfg = config
        self.m = metrics
        #: sensor -> (last raw value, its device quality, loop.time() it was last published, device flag)
        self.last: dict[str, tuple[float, Quality, float, Flag | None]] = {}

    def _handler(self, emit: Emit, by_node: dict[str, OpcuaChannel]):
        source = self

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                ch = by_node.get(node.nodeid.to_string())
                if ch is None:
                    return
                dv = data.monitored_item.Value
                quality = _quality(dv.StatusCode)
                fresh = isinstance(val, (int, float))  # bool is an int: a digital signal as 0 / 1
                if not fresh:
                    if quality == "good" or ch.sensor not in source.last:
                        source.m.skipped.labels(source.cfg.id, "no_number").inc()
                        return
                    raw = source.last[ch.sensor][0]
                else:
                    raw = float(val)
                flag = _flag(dv.StatusCode, ch, raw if fresh else None)
                source.publish(emit, ch, raw, _timestamp(dv), quality, flag)

            def status_change_notification(self, status: Any) -> None:
                log.warning("opcua %s: subscription status %s", source.cfg.id,
                            getattr(getattr(status, "Status", None), "name", status))

        return Handler()

    def publish(self, emit: Emit, ch: OpcuaChannel, raw: float, t: float, quality: Quality,
                flag: Flag | None = None) -> None:
        self.last[ch.sensor] = (raw, quality, asyncio.get_running_loop().time(), flag)
        r = reading(self.cfg.id, ch, raw, t, self.m, quality, flag)
        if r is not None:
            emit([r])

    def repeat_unchanged(self, emit: Emit) -> None:
        if self.cfg.repeat_after is None:
            return
        due = asyncio.get_running_loop().time() - self.cfg.repeat_after
        t = now()
        for ch in self.cfg.channels:
            last = self.last.get(ch.sensor)
            if last is not None and last[2] <= due:
                self.publish(emit, ch, last[0], t, last[1], last[3])

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        from asyncua import Client, ua

        cfg = self.cfg
        by_node = {ua.NodeId.from_string(c.node).to_string(): c for c in cfg.channels}
        backoff, healthy = 0.5, True
        while not stop.is_set():
            client = Client(cfg.url, timeout=cfg.timeout)
            if cfg.username:
                client.set_user(cfg.username)
            if cfg.password:
                client.set_password(cfg.password)
            connected = False
            try:
                sec = cfg.security.security_string()
                if sec:
                    uri = cfg.security.client_uri()
                    if uri:
                        client.application_uri = uri
                    await client.set_security_string(sec)
                await client.connect()
                connected = True
                self.last.clear()  # values from before a reconnect are not repeated as current
                sub = await client.create_subscription(cfg.publishing_interval * 1000, self._handler(emit, by_node))
                handles = await sub.subscribe_data_change([client.get_node(c.node) for c in cfg.channels],
                                                          sampling_interval=cfg.sampling_interval * 1000)
                for ch, h in zip(cfg.channels, handles):
                    if isinstance(h, ua.StatusCode):
                        self.m.errors.labels(cfg.id).inc()
                        log.error("opcua %s: cannot subscribe to %s (%s): %s", cfg.id, ch.node, ch.sensor, h.name)
                self.m.up.labels(cfg.id).set(1)
                if not healthy:
                    log.info("opcua %s: %s is back", cfg.id, cfg.url)
                healthy, backoff = True, 0.5
                check = min(cfg.timeout, cfg.repeat_after or cfg.timeout) / 2
                while not await sleep_or_stop(stop, check):
                    await client.check_connection()
                    self.repeat_unchanged(emit)
            except (OSError, TimeoutError, ConnectionError, ua.UaError) as e:
                self.m.errors.labels(cfg.id).inc()
                self.m.up.labels(cfg.id).set(0)
                if healthy:
                    log.error("opcua %s: %s unavailable (%s: %s); no readings until it is back, retrying",
                              cfg.id, cfg.url, type(e).__name__, e)
                healthy = False
            finally:
                if connected:
                    try:
                        await asyncio.wait_for(client.disconnect(), cfg.timeout)
                    except Exception:  # the connection is already gone; nothing to close cleanly
                        pass
            if await sleep_or_stop(stop, backoff):
                break
            backoff = min(backoff * 2, cfg.backoff_max)
        self.m.up.labels(cfg.id).set(0)
