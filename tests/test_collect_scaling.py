"""Raw device values to engineering units and quality (pure), and Modbus register decoding."""
from __future__ import annotations

import math
import struct

import pytest
from pydantic import ValidationError

from plantwatch.connectors.edge.modbus import ModbusChannel, ModbusDevice, decode, plan
from plantwatch.connectors.edge.modbus_decode import encode
from plantwatch.connectors.edge.scaling import Conversion, Loop, SignalBand, convert_loop

LOOP = Loop(range=(0, 100))
GAS = Loop(range=(0, 50), bands=[SignalBand(low=1.5, high=2.5, state="fault"),
                                 SignalBand(low=2.8, high=3.2, state="inhibit"),
                                 SignalBand(low=3.3, high=3.7, state="calibration", quality="uncertain")])


@pytest.mark.parametrize("ma, value, quality, state, flag", [
    (4.0, 0.0, "good", "measuring", None),
    (12.0, 50.0, "good", "measuring", None),
    (20.0, 100.0, "good", "measuring", None),
    (3.9, 0.0, "good", "measuring", None),  # slightly under 4 mA is still measurement (NE43), clamped to the range
    (20.4, 100.0, "good", "measuring", None),
    (3.7, 0.0, "uncertain", "under_range", None),
    # gas above full scale is the most dangerous reading: flagged, so the daemon judges it at full scale
    (20.7, 100.0, "uncertain", "over_range", "over_range"),
    (21.5, 100.0, "bad", "failure", "over_range"),
    (22.0, 100.0, "bad", "failure", "over_range"),
    # no measurement at all: a signal failure, alarmed at once by the daemon
    (3.5, 0.0, "bad", "failure", "signal_failure"),
    (2.0, 0.0, "bad", "failure", "signal_failure"),
    (0.0, 0.0, "bad", "failure", "signal_failure"),
    (math.nan, 0.0, "bad", "failure", "signal_failure"),
])
def test_ne43_bands(ma, value, quality, state, flag):
    c = convert_loop(ma, LOOP)
    assert (round(c.value, 9), c.quality, c.state, c.flag) == (value, quality, state, flag)


@pytest.mark.parametrize("ma, quality, state", [
    (2.0, "bad", "fault"), (3.0, "bad", "inhibit"), (3.5, "uncertain", "calibration"),
    (3.75, "uncertain", "under_range"),  # outside the vendor bands the NE43 ones apply
    (1.0, "bad", "failure"), (8.0, "good", "measuring"),
])
def test_gas_detector_signalling_bands(ma, quality, state):
    c = convert_loop(ma, GAS)
    assert (c.quality, c.state) == (quality, state)
    assert c.value == (12.5 if state == "measuring" else 0.0)


def test_vendor_fault_band_can_be_a_signal_failure():
    gas = Loop(range=(0, 50), bands=[SignalBand(low=1.5, high=2.5, state="fault", signal_failure=True),
                                     SignalBand(low=2.8, high=3.2, state="inhibit")])
    assert convert_loop(2.0, gas).flag == "signal_failure"
    assert convert_loop(3.0, gas).flag is None  # inhibit: out of service on purpose, goes stale if it lasts


def test_channel_range_without_a_loop_clamps_and_flags():
    conv = Conversion(scale=0.1, range=(0, 100))
    c = conv.convert(1200)
    assert (c.value, c.quality, c.flag) == (100.0, "uncertain", "over_range")
    c = conv.convert(-20)
    assert (c.value, c.quality, c.flag) == (0.0, "uncertain", None)
    assert conv.convert(500).flag is None and conv.convert(500).value == 50.0
    assert conv.convert(math.nan).flag == "signal_failure" and conv.convert(math.nan).value == 0.0
    # what the device says: the worse quality wins, a signal failure wins over over range
    assert conv.convert(500, "uncertain", "over_range").flag == "over_range"
    assert Conversion(loop=Loop(range=(0, 100))).convert(21.0, "bad", "signal_failure").flag == "signal_failure"
    assert Conversion(loop=Loop(range=(0, 100))).measuring_range == (0, 100)
    with pytest.raises(ValidationError, match="differs from loop.range"):
        Conversion(range=(0, 50), loop=Loop(range=(0, 100)))


def test_scale_offset_then_loop():
    # a register holding the loop current in microamps
    conv = Conversion(scale=0.001, loop=Loop(range=(0, 100)))
    assert conv.convert(8000).value == pytest.approx(25.0)
    assert conv.convert(3000).quality == "bad"
    plain = Conversion(scale=0.1, offset=-40)
    assert plain.convert(650).value == pytest.approx(25.0)
    # what the device says about the value can only make the quality worse
    assert plain.convert(650, "uncertain").quality == "uncertain"
    assert conv.convert(3700, "good").quality == "uncertain"
    assert conv.convert(12000, "bad").quality == "bad"


def test_bad_loop_and_band_configs_are_refused():
    with pytest.raises(ValidationError, match="low < high"):
        Loop(range=(10, 0))
    with pytest.raises(ValidationError, match="overlap"):
        Loop(range=(0, 1), bands=[SignalBand(low=1, high=3, state="fault"), SignalBand(low=2.5, high=3.5, state="inhibit")])
    with pytest.raises(ValidationError, match="must be below"):
        SignalBand(low=3, high=2, state="fault")


#: where each byte of a big-endian value goes, per byte order (the position of byte k in the registers)
_PERMUTE = {"ABCD": lambda n: list(range(n)),
            "CDAB": lambda n: [j for w in reversed(range(0, n, 2)) for j in (w, w + 1)],
            "BADC": lambda n: [j for w in range(0, n, 2) for j in (w + 1, w)],
            "DCBA": lambda n: list(reversed(range(n)))}


def _regs(fmt: str, value, order: str) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    raw = bytes(raw[j] for j in _PERMUTE[order](len(raw)))
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


@pytest.mark.parametrize("type_, fmt, value", [
    ("int16", "h", -1234), ("uint16", "H", 54321), ("int32", "i", -7_654_321), ("uint32", "I", 3_000_000_123),
    ("float32", "f", 12.5), ("int64", "q", -1_234_567_890_123_456), ("uint64", "Q", 18_000_000_000_000_000_000),
    ("float64", "d", -2.718281828459045),
])
@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_register_decoding(type_, fmt, value, order):
    regs = _regs(fmt, value, order)
    assert decode(regs, type_, order) == pytest.approx(value, rel=1e-15)
    assert encode(value, type_, order) == regs


def test_byte_orders_of_a_vendor_manual_example():
    """123.456 as float32 is 0x42F6E979: the four orders as gateway manuals print them."""
    for order, regs in {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6], "BADC": [0xF642, 0x79E9],
                        "DCBA": [0x79E9, 0xF642]}.items():
        assert decode(regs, "float32", order) == pytest.approx(123.456, rel=1e-6), order
    # the older word_order spelling still decodes as before, as pymodbus does it
    from pymodbus.client import ModbusTcpClient

    dt = ModbusTcpClient.DATATYPE.FLOAT32
    assert decode([0xE979, 0x42F6], "float32", "CDAB") == ModbusTcpClient.convert_from_registers(
        [0xE979, 0x42F6], dt, word_order="little")
    assert ModbusChannel(sensor="A", address=0, type="float32", word_order="little").order == "CDAB"


def test_bits_of_registers_coils_and_discrete_inputs():
    assert [decode([0b1000_0000_0000_1010], "bool", bit=b) for b in (0, 1, 3, 15)] == [0.0, 1.0, 1.0, 1.0]
    assert decode([1], "bool") == 1.0 and decode([0], "bool") == 0.0
    assert ModbusChannel(sensor="A", address=0, table="coil").type == "bool"
    assert ModbusChannel(sensor="A", address=0, bit=4).type == "bool"
    with pytest.raises(ValueError, match="bool in a register needs bit"):
        ModbusChannel(sensor="A", address=0, type="bool")
    with pytest.raises(ValueError, match="a coil is a bit"):
        ModbusChannel(sensor="A", address=0, table="coil", type="int16")


def test_reads_are_grouped_into_contiguous_spans_per_unit_and_table():
    chs = [dict(sensor="A", address=0, type="float32"), dict(sensor="B", address=2),
           dict(sensor="C", address=10), dict(sensor="D", address=0, table="input"),
           dict(sensor="E", address=124, type="int32"), dict(sensor="F", address=11),
           dict(sensor="G", address=1, unit_id=7), dict(sensor="H", address=0, table="coil", unit_id=7),
           dict(sensor="I", address=1999, table="coil", unit_id=7), dict(sensor="J", address=2, bit=3),
           dict(sensor="K", address=0, type="float64", unit_id=7)]
    dev = ModbusDevice(type="modbus", id="gw", host="h", channels=chs)
    spans = [(s.unit, s.table, s.address, s.count, [c.sensor for c in s.channels]) for s in plan(dev)]
    assert spans == [(1, "holding", 0, 3, ["A", "B", "J"]), (1, "holding", 10, 2, ["C", "F"]),
                     (1, "holding", 124, 2, ["E"]), (1, "input", 0, 1, ["D"]),
                     (7, "holding", 0, 4, ["K", "G"]), (7, "coil", 0, 1, ["H"]), (7, "coil", 1999, 1, ["I"])]


def test_opcua_status_codes_map_to_the_wire_flag():
    from asyncua import ua

    from plantwatch.connectors.edge.opcua import OpcuaChannel, _flag

    S = ua.StatusCodes
    ch = OpcuaChannel(sensor="G", node="ns=2;s=G", range=(0, 100))
    plain = OpcuaChannel(sensor="G", node="ns=2;s=G")

    def flag(code, raw, c=ch):
        return _flag(ua.StatusCode(code), c, raw)

    assert flag(S.Good, 50.0) is None
    assert flag(S.UncertainEngineeringUnitsExceeded, 100.0) == "over_range"
    assert flag(S.UncertainEngineeringUnitsExceeded | 0x100, 0.0) is None  # exceeded at the low end
    assert flag(S.Good | 0x200, 100.0) == "over_range"  # limit bits: High
    assert flag(S.BadSensorFailure, None) == "signal_failure"
    assert flag(S.BadNotConnected, 3.0) == "signal_failure"
    assert flag(S.BadOutOfService, 3.0) is None
    assert flag(S.Bad, 100.0) == "over_range"  # Bad with a value at the top of the range
    assert flag(S.Bad, 100.0, plain) is None  # ... only when the channel knows its range
    assert flag(S.Bad, 50.0) is None
