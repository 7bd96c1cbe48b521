"""Helpers for the edge collector tests: real Modbus and OPC UA servers, ``plantwatch collect``
as a process, a daemon with a site config whose sensors match, and database look-ups."""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import asyncpg

from plantwatch.connectors.services import free_port
from plantwatch.daemon.lab.bench.env import CliProcess

from .helpers import DaemonProcess, new_metrics_port

T = TypeVar("T")

#: every edge test's sensors are in area1; the stale detector watches them all
STALE_TIMEOUT = 3.0


def edge_site_yaml(sensors: list[str], *, mqtt: tuple[str, int], prefix: str, dsn: str, metrics_port: int,
                   detectors: str = "") -> str:
    """A one-area site published by collector ``edge-test``; ``sensors`` are flow-style YAML
    mappings without ``area``."""
    lines = ["site:", "  id: testsite", "  areas:", "    - {id: area1, bounds: [0, 0, 100, 100], collector: edge-test}",
             f"mqtt: {{host: {mqtt[0]}, port: {mqtt[1]}, topic_prefix: {prefix}, client_id: pw-{uuid.uuid4().hex[:8]}}}",
             f'database: {{dsn: "{dsn}"}}', f"metrics: {{port: {metrics_port}}}", "sensors:"]
    lines += [f"  - {{{s}, area: area1}}" for s in sensors]
    lines += ["detectors:", f"  - {{id: silent, type: stale, select: {{areas: [area1]}}, params: {{timeout: {STALE_TIMEOUT}}}}}"]
    return "\n".join(lines) + "\n" + detectors


def start_daemon(tmp_path: Path, sensors: list[str], mosquitto, db: str, prefix: str,
                 detectors: str = "") -> DaemonProcess:
    """``detectors``: more entries of the ``detectors:`` list (YAML lines, two-space indented)."""
    port = new_metrics_port()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(edge_site_yaml(sensors, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                                  metrics_port=port, detectors=detectors))
    d = DaemonProcess(cfg, port)
    d.start()
    return d


class CollectProcess(CliProcess):
    """``plantwatch collect --config FILE`` as a subprocess, its log in a file; SIGTERM flushes."""

    command = "collect"
    stop_timeout = 60.0

    def __init__(self, workdir: Path, yaml_text: str, name: str = "collect"):
        super().__init__(workdir, yaml_text, name)


async def logged(c: CollectProcess, text: str) -> bool:
    return text in c.log()


async def teardown(c: CollectProcess, d: DaemonProcess | None, *servers) -> None:
    """Kill what a test started (a no-op for what already stopped), then stop its servers."""
    c.kill()
    if d is not None:
        d.kill()
    for s in servers:
        await s.stop()


def collect_yaml(sources: str, *, mosquitto, prefix: str, buffer: Path, metrics_port: int | None = None,
                 collector: str = "edge-test", interval: float = 0.5) -> str:
    metrics = f"metrics: {{port: {metrics_port}}}\n" if metrics_port else ""
    return (f"collector: {collector}\nsite: testsite\n"
            f"mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}, topic_prefix: {prefix}}}\n"
            f"buffer: {{path: {buffer}, flush_grace: 10}}\nbatch: {{interval: {interval}}}\n{metrics}sources:\n{sources}")


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0,
                     on_fail: Callable[[], str] = lambda: "") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` and the last result."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not reached in {timeout:g} s (last: {last!r})\n{on_fail()}")


async def latest(dsn: str) -> dict[str, tuple[float, int, float]]:
    """sensor -> (value, quality, unix time) of its newest stored reading."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT DISTINCT ON (s.tag) s.tag, r.value, r.quality, extract(epoch FROM r.time)::float8 AS t"
                                " FROM readings r JOIN sensors s ON s.id = r.sensor_id ORDER BY s.tag, r.time DESC")
        return {r["tag"]: (r["value"], r["quality"], r["t"]) for r in rows}
    finally:
        await conn.close()


async def stale_sensors(dsn: str) -> set[str]:
    """Sensors whose stale alarm is active now."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT s.tag FROM alarms a JOIN sensors s ON s.id = a.sensor_id"
                                " WHERE a.detector_id = 'silent' AND a.active AND a.condition = 'stale'")
        return {r["tag"] for r in rows}
    finally:
        await conn.close()


def free_tcp_port() -> int:
    return free_port()


class ModbusServer:
    """pymodbus's own TCP server with 200 holding and 200 input registers, on a free port."""

    HOLDING, INPUT = 16, 4  # function codes that address each table when setting values

    def __init__(self, port: int | None = None, unit: int = 1):
        self.port = port or free_port()
        self.unit = unit
        self.values: dict[tuple[int, int], list[int]] = {}  # kept, so a restarted server has them again
        self._server = None

    async def start(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        def block(values) -> list:
            return [SimData(0, count=200, values=0, datatype=DataType.REGISTERS)]

        bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
        dev = SimDevice(id=self.unit, simdata=(bits, bits, block(0), block(0)))
        self._server = ModbusTcpServer(dev, address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)
        for (fc, address), regs in self.values.items():
            await self._server.async_setValues(self.unit, fc, address, regs)

    async def set(self, table: str, address: int, registers: list[int]) -> None:
        fc = self.HOLDING if table == "holding" else self.INPUT
        self.values[(fc, address)] = registers
        await self._server.async_setValues(self.unit, fc, address, registers)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None


class OpcuaServer:
    """asyncua's own server with one Double variable per name (node id ``ns=2;s=<name>``), on a free port."""

    def __init__(self, names: list[str], port: int | None = None, *, certificate: Path | None = None,
                 private_key: Path | None = None, trusted_clients: Path | None = None):
        """With ``certificate`` and ``private_key`` the server offers only Basic256Sha256 SignAndEncrypt;
        with ``trusted_clients`` it accepts only the client certificates in that folder."""
        self.names = names
        self.certificate, self.private_key = certificate, private_key
        self.trusted_clients = trusted_clients
        self.port = port or free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/plantwatch/"
        self.nodes: dict = {}
        self._server = None

    def node_id(self, name: str) -> str:
        return f"ns={self.ns};s={name}"

    async def start(self, initial: dict[str, float] | None = None) -> None:
        from asyncua import Server, ua

        srv = Server()
        await srv.init()
        srv.set_endpoint(self.url)
        if self.certificate is not None:
            await srv.set_application_uri(SERVER_URI)
            srv.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            await srv.load_certificate(str(self.certificate))
            await srv.load_private_key(str(self.private_key))
            if self.trusted_clients is not None:
                from asyncua.crypto.truststore import TrustStore
                from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

                store = TrustStore([self.trusted_clients], [])
                await store.load()
                opts = CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT
                srv.set_certificate_validator(CertificateValidator(opts, store))
        else:
            srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await srv.register_namespace("urn:plantwatch:test")
        obj = await srv.nodes.objects.add_object(self.ns, "Plant")
        for n in self.names:
            self.nodes[n] = await obj.add_variable(ua.NodeId(n, self.ns), n, float((initial or {}).get(n, 0.0)),
                                                   varianttype=ua.VariantType.Double)
        await srv.start()
        self._server = srv

    async def write(self, name: str, value: float | None, *, status: str = "Good", source_time: float | None = None) -> None:
        from datetime import datetime, timezone

        from asyncua import ua

        dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double) if value is not None else None,
                          StatusCode=ua.StatusCode(getattr(ua.StatusCodes, status)),
                          SourceTimestamp=datetime.fromtimestamp(source_time, timezone.utc) if source_time else None)
        await self.nodes[name].write_value(dv)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None


SERVER_URI = "urn:plantwatch:test:opcua-server"


async def make_certificate(folder: Path, name: str, uri: str, *, server: bool) -> tuple[Path, Path]:
    """A self-signed application certificate (DER) and its key (PEM), made by asyncua's own helper."""
    import socket

    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert, key = folder / f"{name}-cert.der", folder / f"{name}-key.pem"
    use = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    await setup_self_signed_certificate(key, cert, uri, socket.gethostname(), use, {"commonName": name})
    return cert, key


class ModbusGateway:
    """pymodbus's own server with several unit ids behind one address (a Modbus TCP gateway, an
    RS-485 line): each unit has 64 coils, 64 discrete inputs, 200 holding and 200 input registers.
    ``serial``: an RTU server on that serial port instead of TCP; ``framing="rtu"``: RTU over TCP.
    ``connections`` counts the TCP connections it accepted."""

    TABLES = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}

    def __init__(self, units: list[int], *, framing: str = "socket", serial: str | None = None,
                 silent: tuple[int, ...] = ()):
        """``silent``: units whose responses are never sent (Modbus TCP framing only): a dead device
        behind a gateway that forwards requests to it."""
        self.units, self.framing, self.serial, self.silent = units, framing, serial, silent
        self.port = free_port()
        self.connections = 0
        self._server = None

    async def start(self) -> None:
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusSerialServer, ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        bits = lambda: [SimData(0, count=64, values=False, datatype=DataType.BITS)]  # noqa: E731
        regs = lambda: [SimData(0, count=200, values=0, datatype=DataType.REGISTERS)]  # noqa: E731
        devices = [SimDevice(id=u, simdata=(bits(), bits(), regs(), regs())) for u in self.units]

        def counted(up: bool) -> None:
            self.connections += 1 if up else 0

        if self.serial is not None:
            self._server = ModbusSerialServer(devices, port=self.serial, baudrate=19200, parity="N")  # a pty has no parity
        else:
            framer = FramerType.RTU if self.framing == "rtu" else FramerType.SOCKET
            def drop(sending: bool, data: bytes) -> bytes:
                return b"" if sending and len(data) > 6 and data[6] in self.silent else data

            self._server = ModbusTcpServer(devices, address=("127.0.0.1", self.port), framer=framer,
                                           trace_connect=counted, trace_packet=drop if self.silent else None)
        await self._server.serve_forever(background=True)

    async def set(self, unit: int, table: str, address: int, values: list) -> None:
        await self._server.async_setValues(unit, self.TABLES[table], address, values)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None


class NullModem:
    """Two pseudo-terminals wired back to back (python's pty module, as socat would): what is
    written to ``a`` is read from ``b`` and the other way round. Runs in the test's event loop."""

    def __init__(self):
        import os
        import pty
        import tty

        self._os = os
        self.m1, s1 = pty.openpty()
        self.m2, s2 = pty.openpty()
        for fd in (s1, s2, self.m1, self.m2):
            tty.setraw(fd)
        self.a, self.b = os.ttyname(s1), os.ttyname(s2)
        self._slaves = (s1, s2)  # kept open: a pty whose slave side is closed reports EIO
        loop = asyncio.get_running_loop()
        for m in (self.m1, self.m2):
            os.set_blocking(m, False)
        loop.add_reader(self.m1, self._pump, self.m1, self.m2)
        loop.add_reader(self.m2, self._pump, self.m2, self.m1)

    def _pump(self, src: int, dst: int) -> None:
        try:
            data = self._os.read(src, 4096)
        except OSError:  # the other end is between opens
            return
        self._os.write(dst, data)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in (self.m1, self.m2):
            loop.remove_reader(fd)
        for fd in (self.m1, self.m2, *self._slaves):
            self._os.close(fd)
