"""Modbus registers and bits to values, and the read requests a poll makes (pure computation).

Registers travel big-endian (byte A first). A 32-bit value ``ABCD`` is registers ``AB CD``; the
other orders devices use: ``CDAB`` (low word first), ``BADC`` (bytes swapped in each register),
``DCBA`` (both). A 64-bit value follows the same rule over four registers (``CDAB``: the last
register first, bytes in each kept).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .modbus_config import BIT_TABLES, WIDTH, ModbusChannel, ModbusDevice

_FORMAT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "int64": "q", "uint64": "Q",
           "float64": "d"}
#: per request: registers (function codes 3, 4) and bits (1, 2), the Modbus limits
MAX_REGISTERS, MAX_BITS = 125, 2000


def decode(registers: list[int], type_: str, byte_order: str = "ABCD", bit: int | None = None) -> float:
    """One value from its registers; ``bit``: that bit of the first register as 0.0 / 1.0."""
    if type_ == "bool":
        return float((registers[0] >> bit) & 1) if bit is not None else float(bool(registers[0]))
    words = [int(r) & 0xFFFF for r in registers[:WIDTH[type_]]]
    if byte_order in ("CDAB", "DCBA"):
        words = words[::-1]
    raw = b"".join(w.to_bytes(2, "big") for w in words)
    if byte_order in ("BADC", "DCBA"):
        raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    return float(struct.unpack(">" + _FORMAT[type_], raw)[0])


def encode(value: float | int, type_: str, byte_order: str = "ABCD") -> list[int]:
    """The registers a device holds for ``value`` (the inverse of :func:`decode`; used by tests and tools)."""
    fmt = _FORMAT[type_]
    raw = struct.pack(">" + fmt, float(value) if fmt in "fd" else int(value))
    if byte_order in ("BADC", "DCBA"):
        raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return words[::-1] if byte_order in ("CDAB", "DCBA") else words


@dataclass(frozen=True, slots=True)
class Span:
    """One read request: ``count`` registers (or bits) of ``table`` of unit ``unit`` from ``address``."""

    unit: int
    table: str
    address: int
    count: int
    channels: tuple[ModbusChannel, ...]

    def where(self) -> str:
        what = {"coil": "coils", "discrete_input": "discrete inputs"}.get(self.table, f"{self.table} registers")
        return f"unit {self.unit} {what} {self.address}..{self.address + self.count - 1}"


def plan(device: ModbusDevice) -> list[Span]:
    """Channels of one unit and table whose registers touch or overlap, read in one request."""
    spans: list[Span] = []
    units = sorted({device.unit_of(c) for c in device.channels})
    for unit in units:
        for table in ("holding", "input", "coil", "discrete_input"):
            limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
            chs = sorted((c for c in device.channels if c.table == table and device.unit_of(c) == unit),
                         key=lambda c: c.address)
            cur: list[ModbusChannel] = []
            start = end = 0
            for c in chs:
                c_end = c.address + WIDTH[c.type]
                if cur and c.address <= end and max(end, c_end) - start <= limit:
                    cur.append(c)
                    end = max(end, c_end)
                    continue
                if cur:
                    spans.append(Span(unit, table, start, end - start, tuple(cur)))
                cur, start, end = [c], c.address, c_end
            if cur:
                spans.append(Span(unit, table, start, end - start, tuple(cur)))
    return spans


def values(span: Span, words: list[int], device: ModbusDevice) -> list[tuple[ModbusChannel, float]]:
    """Each channel of a span and its value, from the span's registers or bits (as ints)."""
    out = []
    for ch in span.channels:
        off = ch.address - span.address
        out.append((ch, decode(words[off:off + WIDTH[ch.type]], ch.type, ch.order or device.order, ch.bit)))
    return out
