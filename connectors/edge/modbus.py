"""Modbus devices (pymodbus): poll registers, coils and discrete inputs at a fixed interval.

One source is one line: a TCP connection to a device or gateway (Modbus TCP framing, or RTU over
TCP), or a serial port (RTU). Every unit id behind it is polled over that one line, one request at
a time. Channels are read in as few requests as possible: channels of one unit and table whose
registers (or bits) touch or overlap go in one request of at most 125 registers (2000 bits). Every
poll stamps its readings with the time the response arrived.

A request answered with a Modbus exception (an illegal address, a gateway whose target does not
answer) or not answered at all costs that request's channels one poll, counted as an error and
logged once; the other units on the line keep being read. A line that fails (connection refused,
closed, serial port gone) is reopened with backoff; meanwhile it yields no readings, so the daemon's
stale detector alarms on its sensors.

Config and data types: :mod:`.modbus_config`; decoding and request planning: :mod:`.modbus_decode`.
"""
from __future__ import annotations

import asyncio
import logging

from .modbus_config import BIT_TABLES, ModbusChannel, ModbusDevice
from .modbus_decode import Span, decode, plan, values
from .sources import CollectMetrics, Emit, Reading, now, reading, register, sleep_or_stop

log = logging.getLogger("plantwatch.collect.modbus")

__all__ = ["ModbusChannel", "ModbusDevice", "ModbusSource", "decode", "plan"]


class DeviceDown(Exception):
    pass


def open_client(cfg: ModbusDevice):
    """A pymodbus client for the source's line (not connected yet)."""
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    framer = FramerType.RTU if cfg.line_framing == "rtu" else FramerType.SOCKET
    # reconnect_delay=0: pymodbus does not reconnect by itself; ModbusSource.run does, with backoff
    if cfg.serial is not None:
        s = cfg.serial
        return AsyncModbusSerialClient(s.port, framer=framer, baudrate=s.baudrate, parity=s.parity,
                                       stopbits=s.stopbits, bytesize=s.bytesize, timeout=cfg.timeout, retries=0,
                                       reconnect_delay=0)
    return AsyncModbusTcpClient(cfg.host, port=cfg.port, framer=framer, timeout=cfg.timeout, retries=0,
                                reconnect_delay=0)


@register
class ModbusSource:
    Config = ModbusDevice

    def __init__(self, config: ModbusDevice, metrics: CollectMetrics):
        self.cfg = config
        self.m = metrics
        self.spans = plan(config)
        self.refused: set[tuple[int, str, int]] = set()  # spans that failed (logged once until readable again)

    async def run(self, emit: Emit, stop: asyncio.Event) -> None:
        from pymodbus.exceptions import ModbusException

        cfg, loop = self.cfg, asyncio.get_running_loop()
        line = cfg.describe_line()
        backoff, healthy = 0.5, True
        while not stop.is_set():
            client = open_client(cfg)
            try:
                if not await client.connect():
                    raise DeviceDown(f"cannot open {line}")
                self.m.up.labels(cfg.id).set(1)
                if not healthy:
                    log.info("modbus %s: %s is back", cfg.id, line)
                healthy, backoff = True, 0.5
                due = loop.time()
                while not stop.is_set():
                    rs = await self.poll(client)
                    if rs:
                        emit(rs)
                    if not client.connected:
                        raise DeviceDown(f"{line} closed")
                    due = max(due + cfg.interval, loop.time())
                    if await sleep_or_stop(stop, due - loop.time()):
                        break
            except (ModbusException, DeviceDown, OSError, TimeoutError) as e:
                self.m.errors.labels(cfg.id).inc()
                self.m.up.labels(cfg.id).set(0)
                if healthy:
                    units = sorted({cfg.unit_of(c) for c in cfg.channels})
                    log.error("modbus %s: %s unit %s unavailable (%s); no readings until it is back, retrying",
                              cfg.id, line, ",".join(map(str, units)), e)
                healthy = False
            finally:
                client.close()
            if await sleep_or_stop(stop, backoff):
                break
            backoff = min(backoff * 2, cfg.backoff_max)
        self.m.up.labels(cfg.id).set(0)

    async def _read(self, client, span: Span):
        """The span's registers or bits as ints, or the reason it has none (exception, no answer)."""
        from pymodbus.exceptions import ModbusIOException

        fn = {"holding": client.read_holding_registers, "input": client.read_input_registers,
              "coil": client.read_coils, "discrete_input": client.read_discrete_inputs}[span.table]
        try:
            resp = await fn(span.address, count=span.count, device_id=span.unit)
        except ModbusIOException as e:  # no answer in time: this unit, not the line (checked by the caller)
            return None, f"no answer ({e})"
        if resp.isError():
            return None, str(resp)
        if span.table in BIT_TABLES:
            return [int(b) for b in resp.bits[:span.count]], ""
        return list(resp.registers), ""

    async def poll(self, client) -> list[Reading]:
        """Read every span once; a span the device refuses or does not answer is skipped (and counted)."""
        out: list[Reading] = []
        for span in self.spans:
            words, why = await self._read(client, span)
            t = now()
            key = (span.unit, span.table, span.address)
            if words is None:
                self.m.errors.labels(self.cfg.id).inc()
                if not client.connected:
                    return out
                if key not in self.refused:
                    self.refused.add(key)
                    log.warning("modbus %s: %s refused: %s; retried every poll", self.cfg.id, span.where(), why)
                continue
            if key in self.refused:
                self.refused.discard(key)
                log.info("modbus %s: %s readable again", self.cfg.id, span.where())
            for ch, value in values(span, words, self.cfg):
                r = reading(self.cfg.id, ch, value, t, self.m)
                if r is not None:
                    out.append(r)
        return out
