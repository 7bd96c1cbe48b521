"""Sparkplug B payloads: decode with the protobuf runtime, turn metric values into numbers,
and build the one command plantwatch sends (NCMD ``Node Control/Rebirth``).

Numeric datatypes only: Int8..Int64, UInt8..UInt64, Float, Double and Boolean (as 0/1).
Signed integers arrive in the unsigned ``int_value`` / ``long_value`` fields as two's
complement; implementations differ in the width they use for Int8/Int16 (Eclipse Tahu
sign-extends to 32 bits, others use the type's own width), so both are accepted.
"""
from __future__ import annotations

import math
import time

from google.protobuf.message import DecodeError

from . import sparkplug_b_pb2 as pb

Payload = pb.Payload
Metric = pb.Payload.Metric

#: datatype code -> (name, value field, bits, signed); bits 0 for floating point and Boolean
NUMERIC: dict[int, tuple[str, str, int, bool]] = {
    1: ("Int8", "int_value", 8, True), 2: ("Int16", "int_value", 16, True),
    3: ("Int32", "int_value", 32, True), 4: ("Int64", "long_value", 64, True),
    5: ("UInt8", "int_value", 8, False), 6: ("UInt16", "int_value", 16, False),
    7: ("UInt32", "int_value", 32, False), 8: ("UInt64", "long_value", 64, False),
    9: ("Float", "float_value", 0, False), 10: ("Double", "double_value", 0, False),
    11: ("Boolean", "boolean_value", 0, False),
}
BOOLEAN = 11
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
QUALITY_PROPERTY = "Quality"


class PayloadError(ValueError):
    """A payload that is not a Sparkplug B protobuf message."""


class MetricError(ValueError):
    """One metric that cannot become a reading; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def datatype_name(code: int) -> str:
    try:
        return pb.DataType.Name(code)
    except ValueError:
        return f"datatype {code}"


def decode(raw: bytes) -> Payload:
    p = Payload()
    try:
        p.ParseFromString(raw)
    except DecodeError as e:
        raise PayloadError(f"not a Sparkplug B payload: {e}") from None
    if any(isinstance(m.name, bytes) for m in p.metrics):  # proto2 keeps a string that is not UTF-8 as bytes
        raise PayloadError("not a Sparkplug B payload: a metric name is not UTF-8")
    return p


def numeric_value(m: Metric, datatype: int) -> float:
    """The metric's value as a float, or :class:`MetricError` (``sp_unsupported_type``,
    ``wrong_type``, ``non_finite``)."""
    spec = NUMERIC.get(datatype)
    if spec is None:
        raise MetricError("sp_unsupported_type", f"{datatype_name(datatype)} is not numeric "
                          f"(supported: {', '.join(s[0] for s in NUMERIC.values())})")
    name, field, bits, signed = spec
    present = m.WhichOneof("value")
    if present != field:
        raise MetricError("wrong_type", f"{name} metric carries {present or 'no value'}, expected {field}")
    v = getattr(m, field)
    if datatype == BOOLEAN:
        return 1.0 if v else 0.0
    if bits == 0:
        if not math.isfinite(v):
            raise MetricError("non_finite", f"{name} value {v!r} is not finite")
        return float(v)
    width = 64 if field == "long_value" else 32
    if signed:
        if v >= 1 << (width - 1):  # sign-extended to the field's width (Eclipse Tahu)
            v -= 1 << width
        elif v >= 1 << (bits - 1):  # two's complement in the type's own width
            v -= 1 << bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    if not lo <= v <= hi:
        raise MetricError("wrong_type", f"{name} value {v} outside [{lo}, {hi}]")
    return float(v)


#: OPC DA quality word: limit bits (0-1) and the sub-status (bits 2-7, with the quality bits)
_LIMIT_HIGH = 0x02
_LIMIT_LOW = 0x01
_EGU_EXCEEDED = 0x54  # Uncertain, engineering units exceeded
_NO_SIGNAL = (0x08, 0x0C, 0x10)  # Bad: not connected, device failure, sensor failure


def quality_code(m: Metric) -> int:
    """plantwatch quality (0 good, 1 uncertain, 2 bad) from an OPC-style ``Quality`` property
    (the Ignition convention: 192 good); good when the metric has none."""
    return quality_and_flag(m)[0]


def quality_and_flag(m: Metric) -> tuple[int, int]:
    """Quality (0 good, 1 uncertain, 2 bad) and flag (0 none, 1 over range, 2 signal failure) from
    an OPC DA ``Quality`` property: high-limited or "engineering units exceeded" (not low-limited)
    is over range; Bad "not connected", "device failure" or "sensor failure" is a signal failure."""
    props = m.properties
    for k, val in zip(props.keys, props.values):
        if k != QUALITY_PROPERTY:
            continue
        which = val.WhichOneof("value")
        if which not in ("int_value", "long_value"):
            return 2, 0
        q = getattr(val, which)
        quality = 0 if 192 <= q <= 255 else 1 if 64 <= q <= 127 else 2
        if not 0 <= q <= 255:
            return quality, 0
        limit, sub = q & 0x03, q & 0xFC
        if limit == _LIMIT_HIGH or (sub == _EGU_EXCEEDED and limit != _LIMIT_LOW):
            return quality, 1
        if quality == 2 and sub in _NO_SIGNAL:
            return quality, 2
        return quality, 0
    return 0, 0


def bd_seq(p: Payload) -> int | None:
    for m in p.metrics:
        if m.name == BDSEQ_METRIC:
            which = m.WhichOneof("value")
            return int(getattr(m, which)) if which in ("int_value", "long_value") else None
    return None


def rebirth_command(now: float | None = None) -> bytes:
    """NCMD payload asking an edge node to publish its NBIRTH and DBIRTHs again."""
    p = Payload(timestamp=int((time.time() if now is None else now) * 1000))
    p.metrics.add(name=REBIRTH_METRIC, timestamp=p.timestamp, datatype=BOOLEAN, boolean_value=True)
    return p.SerializeToString()

