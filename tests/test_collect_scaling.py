"""Raw device values to engineering units and quality (pure), and Modbus register decoding."""
from __future__ import annotations

import math
import struct

import pytest
from pydantic import ValidationError

from plantwatch.connectors.edge.modbus import ModbusChannel, decode, plan
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


def _regs(fmt: str, value, word_order: str) -> list[int]:
    raw = struct.pack(">" + fmt, value)
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return words if word_order == "big" else words[::-1]


@pytest.mark.parametrize("type_, fmt, value", [
    ("int16", "h", -1234), ("uint16", "H", 54321), ("int32", "i", -7_654_321), ("uint32", "I", 3_000_000_123),
    ("float32", "f", 12.5),
])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_register_decoding(type_, fmt, value, word_order):
    assert decode(_regs(fmt, value, word_order), type_, word_order) == pytest.approx(value)


def test_reads_are_grouped_into_contiguous_spans():
    chs = [ModbusChannel(sensor="A", address=0, type="float32"), ModbusChannel(sensor="B", address=2),
           ModbusChannel(sensor="C", address=10), ModbusChannel(sensor="D", address=0, table="input"),
           ModbusChannel(sensor="E", address=124, type="int32"), ModbusChannel(sensor="F", address=11)]
    spans = [(s.table, s.address, s.count, [c.sensor for c in s.channels]) for s in plan(chs)]
    assert spans == [("holding", 0, 3, ["A", "B"]), ("holding", 10, 2, ["C", "F"]), ("holding", 124, 2, ["E"]),
                     ("input", 0, 1, ["D"])]


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
