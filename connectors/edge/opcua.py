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

Security: ``mode: None`` (no security), ``Sign`` or ``SignAndEncrypt`` with ``policy``. The
client's ``certificate`` and ``private_key`` (PEM or DER) default to the PKI folder's own ones
(``plantwatch collect certs`` makes them). The server's certificate must be pinned
(``server_certificate``) or be in the PKI folder's ``trusted/``: :mod:`.opcua_trust`. Node ids
with a namespace URI and browse paths are resolved at every connect: :mod:`.opcua_address`.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .opcua_address import AddressError, check_syntax, resolve
from .opcua_trust import Pki, TrustError, check_server, der_bytes
from .scaling import Flag, Quality, linear
from .sources import Channel, CollectMetrics, Emit, SourceConfig, now, reading, register, sleep_or_stop

log = logging.getLogger("plantwatch.collect.opcua")


class OpcuaChannel(Channel):
    #: node id (``ns=2;s=GasPanel.H2S_01``, ``ns=3;i=1001``), node id with the namespace URI
    #: (``nsu=urn:vendor:gas;s=GD-101.Value``) or browse path (``/Objects/Plant/GD-101/Value``)
    node: str = Field(min_length=3)

    @field_validator("node")
    @classmethod
    def _node_id(cls, v: str) -> str:
        return check_syntax(v)


class OpcuaSecurity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: None, Sign or SignAndEncrypt
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    #: security policy when signing
    policy: Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"] = "Basic256Sha256"
    #: the client's certificate (default: ``own/cert.der`` of the PKI folder)
    certificate: Path | None = None
    #: the client's private key (default: ``own/key.pem`` of the PKI folder)
    private_key: Path | None = None
    #: the server's certificate, to pin it (else the server's certificate must be in the PKI folder's trusted/)
    server_certificate: Path | None = None
    #: the PKI folder: own/ (the client's certificate and key), trusted/ and rejected/ server
    #: certificates (relative: to the config file's folder)
    pki: Path = Path("pki")
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
                continue  # the PKI folder's, checked once its folder is known (parse_collect_config)
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
        if self.application_uri or not self.client_certificate.is_file():
            return self.application_uri
        return certificate_uri(self.client_certificate)

    @property
    def store(self) -> Pki:
        return Pki(self.pki)

    @property
    def client_certificate(self) -> Path:
        return self.certificate or self.store.own_certificate

    @property
    def client_key(self) -> Path:
        return self.private_key or self.store.own_key

    def security_string(self) -> str | None:
        if self.mode == "None":
            return None
        parts = [self.policy, self.mode, str(self.client_certificate), str(self.client_key)]
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

    def libraries(self) -> tuple[str, ...]:
        return ("asyncua",)

    def resolve_paths(self, base: Path) -> "OpcuaServer":
        sec = self.security
        if sec.pki.is_absolute():
            return self
        return self.model_copy(update={"security": sec.model_copy(update={"pki": base / sec.pki})})

    def path_problems(self) -> list[tuple[tuple, str]]:
        sec = self.security
        if sec.mode == "None":
            return []
        return [(("security",), f"{what}: no such file: {p} (plantwatch collect certs makes the client's "
                                f"certificate and key in the PKI folder {sec.pki})")
                for what, p, given in (("certificate", sec.client_certificate, sec.certificate),
                                       ("private_key", sec.client_key, sec.private_key))
                if given is None and not p.is_file()]


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

    async def secure(self, client) -> None:
        """Set the session's security, once the server's certificate is the one to trust."""
        from asyncua import ua
        from asyncua.crypto import security_policies

        sec = self.cfg.security
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        policy = getattr(security_policies, f"SecurityPolicy{sec.policy}")
        endpoints = await client.connect_and_get_server_endpoints()
        offered = [e for e in endpoints if e.SecurityMode == mode and e.SecurityPolicyUri == policy.URI]
        if not offered:
            raise TrustError(f"{self.cfg.url} offers no endpoint with {sec.mode} {sec.policy} (it offers: "
                             + ", ".join(sorted({f"{e.SecurityMode.name} {e.SecurityPolicyUri.rsplit('#', 1)[-1]}"
                                                 for e in endpoints})) + ")")
        der = bytes(offered[0].ServerCertificate)
        if not der:
            raise TrustError(f"{self.cfg.url} presents no certificate on its {sec.mode} endpoint")
        trusted = check_server(der_bytes(_first_certificate(der)), self.cfg.url, sec.server_certificate, sec.store)
        uri = sec.client_uri()
        if uri:
            client.application_uri = uri
        await client.set_security(policy, str(sec.client_certificate), str(sec.client_key),
                                  server_certificate=str(trusted), mode=mode)

    async def subscribe(self, client, emit: Emit) -> None:
        """Resolve every channel's node on this server and subscribe to the ones found."""
        from asyncua import ua

        cfg = self.cfg
        namespaces = await client.get_namespace_array()
        found: list[tuple[OpcuaChannel, Any]] = []
        for ch in cfg.channels:
            try:
                found.append((ch, await resolve(client, ch.node, namespaces)))
            except AddressError as e:
                self.m.errors.labels(cfg.id).inc()
                log.error("opcua %s: sensor %s: %s; its other channels are read, this one again at the next "
                          "connect", cfg.id, ch.sensor, e)
        if not found:
            return
        by_node = {nid.to_string(): ch for ch, nid in found}
        sub = await client.create_subscription(cfg.publishing_interval * 1000, self._handler(emit, by_node))
        handles = await sub.subscribe_data_change([client.get_node(nid) for _, nid in found],
                                                  sampling_interval=cfg.sampling_interval * 1000)
        for (ch, _), h in zip(found, handles):
            if isinstance(h, ua.StatusCode):
                self.m.errors.labels(cfg.id).inc()
                log.error("opcua %s: cannot subscribe to %s (%s): %s", cfg.id, ch.node, ch.sensor, h.name)

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        from asyncua import Client, ua

        cfg = self.cfg
        backoff, healthy, said = 0.5, True, ""
        while not stop.is_set():
            client = Client(cfg.url, timeout=cfg.timeout)
            if cfg.username:
                client.set_user(cfg.username)
            if cfg.password:
                client.set_password(cfg.password)
            connected = False
            try:
                if cfg.security.mode != "None":
                    await self.secure(client)
                await client.connect()
                connected = True
                self.last.clear()  # values from before a reconnect are not repeated as current
                await self.subscribe(client, emit)
                self.m.up.labels(cfg.id).set(1)
                if not healthy:
                    log.info("opcua %s: %s is back", cfg.id, cfg.url)
                healthy, backoff, said = True, 0.5, ""
                check = min(cfg.timeout, cfg.repeat_after or cfg.timeout) / 2
                while not await sleep_or_stop(stop, check):
                    await client.check_connection()
                    self.repeat_unchanged(emit)
            except TrustError as e:
                self.m.errors.labels(cfg.id).inc()
                self.m.up.labels(cfg.id).set(0)
                if str(e) != said:
                    log.error("opcua %s: %s", cfg.id, e)
                healthy, said = False, str(e)
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


def _first_certificate(chain: bytes) -> bytes:
    """The first certificate of a DER chain (a server may send its chain)."""
    if len(chain) < 4 or chain[0] != 0x30:
        return chain
    n = chain[1]
    if n < 0x80:
        return chain[:2 + n]
    k = n & 0x7F
    return chain[:2 + k + int.from_bytes(chain[2:2 + k], "big")]
