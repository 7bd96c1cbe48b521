"""Modbus TCP devices (pymodbus): poll holding / input registers at a fixed interval.

Channels are read in as few requests as possible: channels of one register table whose registers
touch or overlap are read in one request of at most 125 registers. Every poll stamps its readings
with the time the response arrived. A request answered with a Modbus exception (e.g. an illegal
address) costs that request's channels one poll, counted as an error; a connection that fails or
times out closes the client, and the device is reconnected with backoff. Meanwhile it yields no
readings, so the daemon's stale detector alarms on its sensors.

Data types: ``int16``, ``uint16``, ``int32``, ``uint32``, ``float32``; the 32-bit types span two
registers whose order is ``word_order`` (``big``: high word first, the Modbus convention;
``little``: low word first, common in PLCs). Bytes within a register are big-endian as Modbus
defines them.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from .sources import Channel, CollectMetrics, Emit, Reading, SourceConfig, now, reading, register, sleep_or_stop

log = logging.getLogger("plantwatch.collect.modbus")

DataType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
#: registers per read request (the Modbus limit for function codes 3 and 4)
MAX_REGISTERS = 125


class ModbusChannel(Channel):
    #: register table: holding (function 3) or input (function 4)
    table: Literal["holding", "input"] = "holding"
    #: first register, 0-based as on the wire
    address: int = Field(ge=0, le=65535)
    #: how the register(s) are decoded
    type: DataType = "uint16"
    #: word order of 32-bit types (default: the device's)
    word_order: WordOrder | None = None

    @model_validator(mode="after")
    def _fits(self):
        if self.address + WIDTH[self.type] > 65536:
            raise ValueError(f"address: {self.type} at {self.address} runs past register 65535")
        return self


class ModbusDevice(SourceConfig):
    type: Literal["modbus"]
    #: host name or IP of the device or gateway
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    #: Modbus unit id (device id / slave id) behind the address
    unit: int = Field(1, ge=0, le=255)
    #: seconds between polls
    interval: float = Field(1.0, gt=0, le=3600)
    #: seconds to wait for a connection or a response
    timeout: float = Field(2.0, gt=0, le=60)
    #: word order of this device's 32-bit values (channels may override)
    word_order: WordOrder = "big"
    channels: list[ModbusChannel] = Field(min_length=1, max_length=10_000)


def decode(registers: list[int], type_: DataType, word_order: WordOrder) -> float:
    """One value from its registers (pymodbus does the byte work)."""
    from pymodbus.client import ModbusTcpClient

    dt = ModbusTcpClient.DATATYPE[type_.upper()]
    return float(ModbusTcpClient.convert_from_registers(registers, dt, word_order=word_order))


@dataclass(frozen=True, slots=True)
class Span:
    """One read request: ``count`` registers of ``table`` from ``address``, and its channels."""

    table: str
    address: int
    count: int
    channels: tuple[ModbusChannel, ...]


def plan(channels: list[ModbusChannel]) -> list[Span]:
    spans: list[Span] = []
    for table in ("holding", "input"):
        chs = sorted((c for c in channels if c.table == table), key=lambda c: c.address)
        cur: list[ModbusChannel] = []
        start = end = 0
        for c in chs:
            c_end = c.address + WIDTH[c.type]
            if cur and c.address <= end and max(end, c_end) - start <= MAX_REGISTERS:
                cur.append(c)
                end = max(end, c_end)
                continue
            if cur:
                spans.append(Span(table, start, end - start, tuple(cur)))
            cur, start, end = [c], c.address, c_end
        if cur:
            spans.append(Span(table, start, end - start, tuple(cur)))
    return spans


class DeviceDown(Exception):
    pass


@register
class ModbusSource:
    Config = ModbusDevice

    def __init__(self, config: ModbusDevice, metrics: CollectMetrics):
        self.cfg = config
        self.m = metrics
        self.spans = plan(config.channels)
        self.refused: set[tuple[str, int]] = set()  # (table, address) of spans the device refuses (logged once)

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        from pymodbus.client import AsyncModbusTcpClient
        from pymodbus.exceptions import ModbusException

        cfg, loop = self.cfg, asyncio.get_running_loop()
        backoff, healthy = 0.5, True
        while not stop.is_set():
            # reconnect_delay=0: pymodbus does not reconnect by itself; this loop does, with backoff
            client = AsyncModbusTcpClient(cfg.host, port=cfg.port, timeout=cfg.timeout, retries=0, reconnect_delay=0)
            try:
                if not await client.connect():
                    raise DeviceDown(f"cannot connect to {cfg.host}:{cfg.port}")
                self.m.up.labels(cfg.id).set(1)
                if not healthy:
                    log.info("modbus %s: %s:%s is back", cfg.id, cfg.host, cfg.port)
                healthy, backoff = True, 0.5
                due = loop.time()
                while not stop.is_set():
                    rs = await self.poll(client)
                    if rs:
                        emit(rs)
                    due = max(due + cfg.interval, loop.time())
                    if await sleep_or_stop(stop, due - loop.time()):
                        break
            except (ModbusException, DeviceDown, OSError, TimeoutError) as e:
                self.m.errors.labels(cfg.id).inc()
                self.m.up.labels(cfg.id).set(0)
                if healthy:
                    log.error("modbus %s: %s:%s unit %d unavailable (%s); no readings until it is back, retrying",
                              cfg.id, cfg.host, cfg.port, cfg.unit, e)
                healthy = False
            finally:
                client.close()
            if await sleep_or_stop(stop, backoff):
                break
            backoff = min(backoff * 2, cfg.backoff_max)
        self.m.up.labels(cfg.id).set(0)

    async def poll(self, client) -> list[Reading]:
        """Read every span once; a span the device refuses is skipped (and counted)."""
        out: list[Reading] = []
        for span in self.spans:
            read = client.read_holding_registers if span.table == "holding" else client.read_input_registers
            resp = await read(span.address, count=span.count, device_id=self.cfg.unit)
            t = now()
            key = (span.table, span.address)
            where = f"{span.table} registers {span.address}..{span.address + span.count - 1}"
            if resp.isError():
                self.m.errors.labels(self.cfg.id).inc()
                if key not in self.refused:
                    self.refused.add(key)
                    log.warning("modbus %s: %s refused: %s; retried every poll", self.cfg.id, where, resp)
                continue
            if key in self.refused:
                self.refused.discard(key)
                log.info("modbus %s: %s readable again", self.cfg.id, where)
            regs = resp.registers
            for ch in span.channels:
                off = ch.address - span.address
                value = decode(regs[off:off + WIDTH[ch.type]], ch.type, ch.word_order or self.cfg.word_order)
                r = reading(self.cfg.id, ch, value, t, self.m)
                if r is not None:
                    out.append(r)
        return out
