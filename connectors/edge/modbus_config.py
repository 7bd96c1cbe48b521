"""Config of a Modbus source: the line (TCP, RTU over TCP, RTU over a serial port) and its channels.

A source is one connection: one TCP connection to a device or gateway, or one serial line. Every
unit id behind it (``unit`` of the source, ``unit_id`` of a channel) is read over that connection.
Two sources on the same gateway or serial port are refused (``plantwatch collect`` config check):
gateways limit their connections and a serial port opens once.

Channel types:

* registers (``holding``, ``input``): ``int16``, ``uint16``, ``int32``, ``uint32``, ``float32``,
  ``int64``, ``uint64``, ``float64``; the byte order of 32/64-bit values is ``byte_order``
  (``ABCD`` the Modbus convention, high word first; ``CDAB`` low word first; ``BADC`` bytes swapped
  in each register; ``DCBA`` both). ``word_order: big | little`` is the older spelling of ABCD / CDAB.
* bits (``coil``, ``discrete_input``, or ``bit: n`` of a holding / input register, 0 = least
  significant): type ``bool``, published as 1.0 (on, closed, true) or 0.0.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .sources import Channel, SourceConfig

DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64", "bool"]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
WordOrder = Literal["big", "little"]
Table = Literal["holding", "input", "coil", "discrete_input"]
Framing = Literal["socket", "rtu"]

#: registers a value takes (a bit takes one register, or one coil / discrete input)
WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4,
         "bool": 1}
BIT_TABLES = ("coil", "discrete_input")
WORD_ORDER = {"big": "ABCD", "little": "CDAB"}


def _byte_order(byte_order: str | None, word_order: str | None) -> str | None:
    if byte_order is not None and word_order is not None and WORD_ORDER[word_order] != byte_order:
        raise ValueError(f"byte_order {byte_order} and word_order {word_order} disagree: give byte_order only")
    return byte_order or (WORD_ORDER[word_order] if word_order else None)


class ModbusChannel(Channel):
    #: table: holding (function 3), input (4), coil (1), discrete_input (2)
    table: Table = "holding"
    #: first register (or coil / discrete input), 0-based as on the wire
    address: int = Field(ge=0, le=65535)
    #: how the register(s) are decoded (default: bool for coils, discrete inputs and bits, else uint16)
    type: DataType = "uint16"
    #: bit of a holding / input register (0 = least significant): the channel is that bit, a bool
    bit: int | None = Field(None, ge=0, le=15)
    #: byte order of 32/64-bit types: ABCD, CDAB, BADC, DCBA (default: the source's)
    byte_order: ByteOrder | None = None
    #: older spelling of the byte order: big = ABCD, little = CDAB
    word_order: WordOrder | None = None
    #: the unit id (slave id) of the device behind a gateway (default: the source's ``unit``)
    unit_id: int | None = Field(None, ge=0, le=255)

    @model_validator(mode="before")
    @classmethod
    def _bool_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data and (data.get("table") in BIT_TABLES or data.get("bit") is not None):
            return {**data, "type": "bool"}
        return data

    @model_validator(mode="after")
    def _fits(self):
        if self.table in BIT_TABLES and self.type != "bool":
            raise ValueError(f"type: a {self.table} is a bit: type bool (got {self.type})")
        if self.bit is not None and self.table in BIT_TABLES:
            raise ValueError(f"bit: a {self.table} is already one bit; bit is for holding / input registers")
        if self.type == "bool" and self.table not in BIT_TABLES and self.bit is None:
            raise ValueError("type: bool in a register needs bit: n (0 = least significant)")
        if self.type == "bool" and self.loop is not None:
            raise ValueError("loop: a bool channel has no loop current")
        if self.address + WIDTH[self.type] > 65536:
            raise ValueError(f"address: {self.type} at {self.address} runs past register 65535")
        _byte_order(self.byte_order, self.word_order)
        return self

    @property
    def order(self) -> str | None:
        """The channel's own byte order (None: the source's)."""
        return _byte_order(self.byte_order, self.word_order)


class SerialLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the serial device, e.g. /dev/ttyUSB0 or /dev/ttyS1
    port: str = Field(min_length=1)
    baudrate: int = Field(19200, ge=300, le=4_000_000)
    #: N (none), E (even), O (odd); Modbus RTU's default is E
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusDevice(SourceConfig):
    type: Literal["modbus"]
    #: host name or IP of the device or gateway (or give ``serial``)
    host: str | None = Field(None, min_length=1)
    port: int = Field(502, ge=1, le=65535)
    #: a serial line instead of TCP (RTU framing)
    serial: SerialLine | None = None
    #: framing on TCP: socket (Modbus TCP, MBAP header) or rtu (RTU over TCP, serial gateways in
    #: transparent mode); a serial line is always rtu
    framing: Framing | None = None
    #: Modbus unit id (device id / slave id); a channel's unit_id overrides it
    unit: int = Field(1, ge=0, le=255)
    #: seconds between polls
    interval: float = Field(1.0, gt=0, le=3600)
    #: seconds to wait for a connection or a response
    timeout: float = Field(2.0, gt=0, le=60)
    #: byte order of this source's 32/64-bit values (channels may override): ABCD, CDAB, BADC, DCBA
    byte_order: ByteOrder | None = None
    #: older spelling: big = ABCD, little = CDAB
    word_order: WordOrder | None = None
    channels: list[ModbusChannel] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _line(self):
        if (self.host is None) == (self.serial is None):
            raise ValueError("give host (Modbus TCP, RTU over TCP) or serial (RTU on a serial port), one of them")
        if self.serial is not None and self.framing == "socket":
            raise ValueError("framing: a serial line carries rtu framing, not socket")
        _byte_order(self.byte_order, self.word_order)
        return self

    @property
    def order(self) -> str:
        return _byte_order(self.byte_order, self.word_order) or "ABCD"

    @property
    def line_framing(self) -> str:
        return self.framing or ("rtu" if self.serial is not None else "socket")

    def libraries(self) -> tuple[str, ...]:
        return ("pymodbus", "serial") if self.serial is not None else ("pymodbus",)

    def shared_endpoint(self) -> str | None:
        if self.serial is not None:
            return f"serial port {self.serial.port}"
        return f"gateway {self.host}:{self.port}"

    def describe_line(self) -> str:
        if self.serial is not None:
            return f"{self.serial.port} ({self.serial.baudrate} {self.serial.bytesize}{self.serial.parity}{self.serial.stopbits})"
        return f"{self.host}:{self.port}" + (" (RTU over TCP)" if self.line_framing == "rtu" else "")

    def unit_of(self, ch: ModbusChannel) -> int:
        return self.unit if ch.unit_id is None else ch.unit_id
