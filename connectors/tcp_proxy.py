"""A small TCP proxy for fault tests: put it between a client and a server to cut or stall their
connections on demand.

* :meth:`TcpProxy.cut_all` resets every open connection (RST, as a crashed peer or a firewall does);
* :meth:`TcpProxy.arm_cut` resets the next connection whose client stream reaches a point a
  *watch* recognises: with :class:`PgCopyWatch`, a PostgreSQL client in the middle of a COPY;
* :meth:`TcpProxy.stall` stops forwarding in both directions while the connections stay open (a
  network stall: nothing arrives, nothing fails), :meth:`TcpProxy.resume` lets everything
  through again. New connections made during a stall are held, unconnected upstream, until then.

Loopback only by default; one asyncio task per direction per connection. It moves a few MB/s on
one core, enough for a broker's or a database's traffic at tens of thousands of readings per second.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


class Watch(Protocol):
    """Follows one connection's client → server bytes; ``feed`` answers whether the connection is
    now at the point where an armed cut must happen."""

    def feed(self, data: bytes) -> bool: ...


class PgCopyWatch:
    """Follows the PostgreSQL frontend protocol of one connection (startup, then typed messages:
    one type byte and a 4-byte length) and says when the client sends COPY data (``d``)."""

    SSL_REQUEST = 80877103
    GSSENC_REQUEST = 80877104

    def __init__(self) -> None:
        self._startup = True
        self._head = bytearray()
        self._skip = 0
        self.copy_messages = 0

    def feed(self, data: bytes) -> bool:
        seen = False
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            need = 8 if self._startup else 5
            take = min(need - len(self._head), n - i)
            self._head += data[i:i + take]
            i += take
            if len(self._head) < need:
                break
            if self._startup:
                length, code = struct.unpack("!ii", self._head)
                if code not in (self.SSL_REQUEST, self.GSSENC_REQUEST):
                    self._startup = False  # the startup message itself: typed messages follow
                self._skip = max(0, length - 8)
            else:
                kind, length = self._head[0], struct.unpack("!i", self._head[1:5])[0]
                if kind == ord("d"):
                    self.copy_messages += 1
                    seen = True
                self._skip = max(0, length - 4)
            self._head.clear()
        return seen


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    watch: Watch | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)


@dataclass
class ProxyStats:
    accepted: int = 0
    bytes_up: int = 0  # client → server
    bytes_down: int = 0
    cuts: int = 0
    connect_errors: int = 0


def _reset(w: asyncio.StreamWriter | None) -> None:
    """Close with RST (SO_LINGER 0), not a FIN: the peer sees the connection fail, not end."""
    if w is None:
        return
    sock = w.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


class TcpProxy:
    """Forward ``host:port`` (a free port by default) to ``upstream``. An async context manager."""

    def __init__(self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0,
                 watch: Callable[[], Watch] | None = None):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self._watch = watch
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._armed: asyncio.Future[int] | None = None
        self.stats = ProxyStats()

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.cut_all(count=False)
        self._flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "TcpProxy":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    # --- faults ---------------------------------------------------------------------------------
    def cut_all(self, *, count: bool = True) -> int:
        """Reset every open connection; returns how many were cut."""
        conns = list(self._conns)
        for c in conns:
            self._cut(c, count=count)
        return len(conns)

    def arm_cut(self) -> "asyncio.Future[int]":
        """Cut the next connection whose watch fires (any connection's next client data when the
        proxy has no watch). The future resolves to the bytes of the chunk it was cut after."""
        if self._armed is None or self._armed.done():
            self._armed = asyncio.get_running_loop().create_future()
        return self._armed

    def disarm(self) -> None:
        if self._armed is not None and not self._armed.done():
            self._armed.cancel()
        self._armed = None

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    # --- forwarding -----------------------------------------------------------------------------
    def _cut(self, c: _Conn, *, count: bool = True) -> None:
        if c not in self._conns:
            return
        self._conns.discard(c)
        if count:
            self.stats.cuts += 1
        _reset(c.client)
        _reset(c.server)
        for t in c.tasks:
            if t is not asyncio.current_task():
                t.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        c = _Conn(writer, watch=self._watch() if self._watch else None)
        self._conns.add(c)
        try:
            await self._flowing.wait()  # a stalled network does not connect anyone either
            try:
                up_reader, c.server = await asyncio.open_connection(*self.upstream)
            except OSError as e:
                self.stats.connect_errors += 1
                log.debug("proxy: upstream %s:%d refused: %s", *self.upstream, e)
                self._cut(c, count=False)
                return
            if c not in self._conns:  # cut while connecting
                _reset(c.server)
                return
            c.tasks = [asyncio.create_task(self._pump(c, reader, c.server, up=True)),
                       asyncio.create_task(self._pump(c, up_reader, writer, up=False))]
            await asyncio.gather(*c.tasks, return_exceptions=True)
        finally:
            self._conns.discard(c)
            for w in (c.client, c.server):
                if w is not None and not w.transport.is_closing():
                    w.transport.abort()

    async def _pump(self, c: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    with contextlib.suppress(OSError):
                        if dst.can_write_eof():
                            dst.write_eof()
                    return
                await self._flowing.wait()
                if c not in self._conns:
                    return
                dst.write(data)
                if up:
                    self.stats.bytes_up += len(data)
                    armed = self._armed
                    hit = c.watch.feed(data) if c.watch is not None else True
                    if armed is not None and not armed.done() and hit:
                        armed.set_result(len(data))
                        self._cut(c)  # after part of it went through: mid-stream
                        return
                else:
                    self.stats.bytes_down += len(data)
                await dst.drain()
        except (ConnectionError, OSError):
            self._cut(c, count=False)
