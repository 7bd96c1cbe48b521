"""The collector → plantwatch wire format, version 1 (spec: ``schema/batch-v1.json``).

Topics: ``{prefix}/{site}/{collector}/{kind}`` where kind is ``readings`` (fixed instruments)
or ``robot`` (mobile inspection robots; each reading carries the robot's position).
Alarms go the other way on ``{prefix}/{site}/alarms/...`` ("alarms" is not a valid collector id).

One MQTT message carries one batch::

    {"v": 1, "collector": "edge-01", "seq": 1234, "sent": 1732371234.5,
     "readings": [{"sensor": "TF-H2S-01", "time": 1732371234.0, "value": 0.3, "quality": "good"},
                  ...]}

``time`` is Unix seconds (number) or an RFC 3339 string with an offset; ``quality`` is optional
(``good`` by default). ``flag`` (optional, absent on ordinary readings) says why a value is not an
ordinary measurement: ``over_range`` (the instrument reads at or above its full scale: the true
value may be higher) or ``signal_failure`` (no measurement: a 4-20 mA loop below 3.6 mA, a wire
break). Robot readings add ``"x"``, ``"y"`` (site coordinates, metres) and optionally ``"area"``. ``seq`` increases by one per batch and per collector, so the daemon can
count batches lost between the collector and the broker.

Decoding is two-speed: the whole batch is decoded strictly in one call (the common case); only if
that fails are the readings decoded one by one, so that one bad reading is rejected with its own
reason and the good readings around it are kept. A payload that is not JSON only because of the
bare ``NaN``, ``Infinity`` and ``-Infinity`` tokens Python's ``json.dumps`` writes is read with the
standard library's parser, and only the readings carrying them are rejected (``non_finite``).
Envelope values the database cannot hold (``seq`` outside 0..2^63-1, a ``sent`` outside the years
1 to 9999, a collector id that is not an id) make the envelope unusable (``bad_envelope``).
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import msgspec

from .storable import BIGINT_MAX, is_id, time_problem

WIRE_VERSION = 1
KINDS = ("readings", "robot")
QUALITY_CODES = {"good": 0, "uncertain": 1, "bad": 2}
#: the optional ``flag`` of a reading, as codes (0: none)
FLAG_CODES = {"over_range": 1, "signal_failure": 2}
Flag = Literal["over_range", "signal_failure"]
RESERVED_COLLECTORS = frozenset({"alarms", "transfers", "status"})


#: the default quality: equal to "good", but its own object, so that a reading that left quality
#: out can be told by identity from one that wrote "good" (duplicate-key check, below)
_DEFAULT_GOOD = "".join(["go", "od"])


class Reading(msgspec.Struct, forbid_unknown_fields=True):
    sensor: str
    time: float | str
    value: float
    quality: Literal["good", "uncertain", "bad"] = _DEFAULT_GOOD
    flag: Flag | None = None
    x: float | None = None
    y: float | None = None
    area: str | None = None


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    collector: str
    seq: int
    readings: list[Reading]
    sent: float | None = None


class _LooseBatch(msgspec.Struct):
    """Envelope with undecoded readings: the fallback when the strict decode fails."""

    v: int
    collector: str
    seq: int
    readings: list[msgspec.Raw]
    sent: float | None = None


class _LenientBatch(msgspec.Struct):
    """Envelope of a document read by the standard library's JSON parser (see ``_lenient``)."""

    v: int
    collector: str
    seq: int
    readings: list[Any]
    sent: float | None = None


# msgspec.ValidationError subclasses DecodeError; invalid UTF-8 inside a string raises
# UnicodeDecodeError in some msgspec versions, DecodeError in others; arrays nested thousands
# deep raise RecursionError. None of them may escape, and the reason given to a failure never
# depends on which was raised (nor on an error's message), only on our own checks.
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
#: the numeric fields of a reading: a non-finite number in any of them is ``non_finite``
_NUMERIC_FIELDS = ("time", "value", "x", "y")


class TransferDeclaration(msgspec.Struct, forbid_unknown_fields=True):
    """A declared material transfer, on ``{prefix}/{site}/transfers/declared`` (QoS 1); spec:
    ``schema/transfer-v1.json``."""

    tank: str  # sensor id of the tank's level/inventory sensor
    start: float | str
    end: float | str
    quantity: float  # in ``unit``; > 0 leaves the tank, < 0 enters it
    #: ``%`` (of the tank's capacity) or the tank's capacity unit (t, kg, m3 ...); required: a
    #: declaration without its unit is refused (``bad_transfer``)
    unit: str
    by: str = ""
    reference: str = ""


_batch_decoder = msgspec.json.Decoder(Batch)
_transfer_decoder = msgspec.json.Decoder(TransferDeclaration)
_loose_decoder = msgspec.json.Decoder(_LooseBatch)
_reading_decoder = msgspec.json.Decoder(Reading)


@dataclass(slots=True)
class Rejected:
    reason: str  # short, stable code: metrics label and dead-letter reason
    detail: str  # human explanation
    raw: bytes  # the offending reading (or the whole payload)


@dataclass(slots=True)
class Decoded:
    batch: Batch | None  # None when the envelope itself is unusable
    readings: list[Reading] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def decode(payload: bytes, *, max_bytes: int, max_readings: int) -> Decoded:
    """Decode one MQTT payload. Never raises on bad input: problems become ``Rejected``.

    Whole-payload rejections keep the whole payload (at most ``max_bytes`` of it)."""
    if len(payload) > max_bytes:
        return Decoded(None, rejected=[Rejected("oversized", oversized_detail(payload, max_bytes), payload[:max_bytes])])
    try:
        batch = _batch_decoder.decode(payload)
        readings = batch.readings
        rejected: list[Rejected] = []
        if not _surely_unique_keys(payload, batch):
            dup = _duplicate_keys(payload)
            if dup is not None:
                if dup.envelope is not None:
                    return Decoded(None, rejected=[Rejected("duplicate_key", f"batch envelope: {dup.envelope}", payload)])
                if dup.readings:
                    raws = [bytes(r) for r in _loose_decoder.decode(payload).readings]
                    rejected = [Rejected("duplicate_key", f"reading: {why}", raws[i]) for i, why in dup.readings.items()]
                    readings = [r for i, r in enumerate(readings) if i not in dup.readings]
    except _DECODE_ERRORS:
        dup = _duplicate_keys(payload)  # the slow path anyway: find them before the readings are split
        if dup is not None and dup.envelope is not None:
            return Decoded(None, rejected=[Rejected("duplicate_key", f"batch envelope: {dup.envelope}", payload)])
        try:
            loose = _loose_decoder.decode(payload)
            raws: list[bytes | Any] = [bytes(r) for r in loose.readings]
        except msgspec.ValidationError as e:
            return Decoded(None, rejected=[Rejected(_envelope_reason(payload), f"batch envelope: {e}", payload)])
        except _DECODE_ERRORS as e:
            if not _is_utf8(payload):
                return Decoded(None, rejected=[Rejected("invalid_utf8", f"batch envelope: {e}", payload)])
            doc = _lenient(payload)
            if doc is None:
                return Decoded(None, rejected=[Rejected("malformed_json", f"batch envelope: {e}", payload)])
            try:  # JSON with NaN / Infinity tokens, as Python's json.dumps writes them
                loose = msgspec.convert(doc, _LenientBatch)
            except msgspec.ValidationError as e2:
                return Decoded(None, rejected=[Rejected("bad_envelope", f"batch envelope: {e2}", payload)])
            raws = loose.readings
        batch = Batch(loose.v, loose.collector, loose.seq, [], loose.sent)
        readings, rejected = [], []
        dup_at = dup.readings if dup is not None else {}
        for i, raw in enumerate(raws):
            if i in dup_at:
                text = raw if isinstance(raw, bytes) else dup.texts[i]
                rejected.append(Rejected("duplicate_key", f"reading: {dup_at[i]}", text))
                continue
            r = _decode_reading(raw)
            if isinstance(r, Rejected):
                rejected.append(r)
            else:
                readings.append(r)
    if batch.v != WIRE_VERSION:
        return Decoded(None, rejected=[Rejected("bad_version", f"wire version {batch.v} not supported (expected {WIRE_VERSION})", payload)])
    problem = _envelope_problem(batch)
    if problem is not None:
        return Decoded(None, rejected=[Rejected("bad_envelope", f"batch envelope: {problem}", payload)])
    if len(readings) + len(rejected) > max_readings:
        return Decoded(None, rejected=[Rejected("oversized", f"{len(readings) + len(rejected)} readings exceed {max_readings} per message", payload)])
    return Decoded(batch, readings, rejected)


def oversized_detail(payload: bytes, max_bytes: int) -> str:
    """The dead letter of a payload over ``max_bytes`` keeps its first ``max_bytes`` bytes; the
    detail says so, with the whole payload's size and SHA-256 (to match it with the sender's copy)."""
    return (f"payload of {len(payload)} bytes exceeds {max_bytes}: its first {max_bytes} bytes are kept"
            f" (SHA-256 of the whole: {hashlib.sha256(payload).hexdigest()})")


def _surely_unique_keys(payload: bytes, b: Batch) -> bool:
    """True when the strictly decoded ``payload`` cannot hold a duplicate key (msgspec keeps the
    last of duplicates silently). The only containers are the envelope, the readings list and
    its objects, so the members of a document number its commas + 2 (+ 1 without readings),
    unless a string holds a comma; every duplicate member adds one comma. Without optional
    reading keys that is ``envelope keys + 3 * readings``: one count of the commas settles it.
    With optional keys (quality, flag, x, y, area) the distinct members are counted from a schemaless
    decode; a disagreement (a duplicate, or a comma in text) goes to :func:`_duplicate_keys`."""
    rs = b.readings
    n = len(rs)
    commas = payload.count(b",")
    members = commas + (2 if n else 1)
    envelope = 4 + (b.sent is not None)
    if members == envelope + 3 * n:
        return True
    # optional keys: each present one is a member (an explicit null counts as absent here, and
    # then the schemaless count below decides)
    d = _DEFAULT_GOOD
    present = sum([(r.quality is not d) + (r.x is not None) + (r.y is not None) + (r.area is not None)
                   + (r.flag is not None) for r in rs])
    if members == envelope + 3 * n + present:
        return True
    doc = _schemaless.decode(payload)
    return members == len(doc) + sum(map(len, doc["readings"]))




_schemaless = msgspec.json.Decoder(dict[str, Any])


@dataclass(slots=True)
class _Duplicates:
    envelope: str | None = None  # why, when the envelope has a duplicate key
    readings: dict[int, str] = field(default_factory=dict)  # reading index -> why
    texts: dict[int, bytes] = field(default_factory=dict)  # reading index -> its members, all of them, as JSON


class _Members(dict):
    dup: str | None = None
    pairs: list[tuple[str, Any]] | None = None  # every member, kept when a key repeats


def _pairs(pairs: list[tuple[str, Any]]) -> _Members:
    out = _Members()
    for k, v in pairs:
        if k in out and out.dup is None:
            out.dup = f"duplicate key {k[:40]!r}"
            out.pairs = pairs
        out[k] = v
    return out


def _duplicate_keys(payload: bytes) -> _Duplicates | None:
    """Where ``payload`` repeats a key within one object, read by the standard library's parser
    (it sees every member); None when it repeats none (or is not JSON: other checks say why)."""
    try:
        doc = json.loads(payload.decode("utf-8"), object_pairs_hook=_pairs)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if not isinstance(doc, _Members):
        return None
    out = _Duplicates(envelope=doc.dup)
    rs = doc.get("readings")
    for i, r in enumerate(rs if isinstance(rs, list) else []):
        if isinstance(r, _Members) and r.dup is not None:  # values nested deeper are wrong_type anyway
            out.readings[i] = r.dup
            out.texts[i] = ("{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in r.pairs or ()) + "}").encode()
    return out if out.envelope is not None or out.readings else None


def _envelope_problem(b: Batch) -> str | None:
    """What makes a decoded envelope unusable (values the schema or the database refuse)."""
    if not 0 <= b.seq <= BIGINT_MAX:
        return f"seq {b.seq} is not between 0 and {BIGINT_MAX}"
    if b.sent is not None:
        why = time_problem(b.sent)
        if why is not None:
            return f"sent {b.sent!r} {why}"
    if not is_id(b.collector):
        return f"collector {b.collector[:80]!r} is not 1 to 64 of A-Z a-z 0-9 _ . : - (starting with a letter or digit)"
    return None


def _decode_reading(raw: bytes | Any) -> Reading | Rejected:
    """One reading: ``raw`` is its JSON text, or an object already parsed by ``_lenient``."""
    if not isinstance(raw, bytes):
        try:
            text = json.dumps(raw).encode()  # ASCII: lone surrogates escaped, NaN kept as NaN
        except RecursionError:
            return Rejected("malformed_json", "reading: nested too deeply", b"")
        if _has_non_finite(raw):
            return Rejected("non_finite", "reading: a number is NaN or infinite", text)
        try:
            raw = msgspec.json.encode(raw)
        except (ValueError, OverflowError, TypeError, RecursionError) as e:  # a lone surrogate, an integer too big
            return Rejected("wrong_type", f"reading: {type(e).__name__}: {e}", text)
    try:
        return _reading_decoder.decode(raw)
    except _DECODE_ERRORS as e:
        return Rejected(_reading_reason(raw, e), f"reading: {e}", raw)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _lenient(b: bytes) -> Any | None:
    """The document parsed by the standard library, which also accepts the ``NaN``,
    ``Infinity`` and ``-Infinity`` tokens Python's ``json.dumps`` writes; None when it is not JSON."""
    try:
        return json.loads(b.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _non_finite(x: Any) -> bool:
    if isinstance(x, float):
        return not math.isfinite(x)
    return isinstance(x, int) and not isinstance(x, bool) and abs(x) > sys.float_info.max


def _has_non_finite(reading: Any) -> bool:
    return isinstance(reading, dict) and any(_non_finite(reading.get(k)) for k in _NUMERIC_FIELDS)


def _envelope_reason(payload: bytes) -> str:
    return "bad_envelope" if _is_utf8(payload) else "invalid_utf8"


def _reading_reason(raw: bytes, e: Exception) -> str:
    if not _is_utf8(raw):
        return "invalid_utf8"
    if not isinstance(e, msgspec.ValidationError):
        return "malformed_json"
    return "non_finite" if _has_non_finite(_lenient(raw)) else "wrong_type"


def parse_time(value: float | str) -> float:
    """Unix seconds from a number or an RFC 3339 string with offset; NaN if unusable."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            return math.nan
        if dt.tzinfo is None:
            return math.nan  # a timestamp without an offset is ambiguous: reject it
        return dt.timestamp()
    return float(value)


def encode_batch(collector: str, seq: int, readings: list[dict], sent: float | None = None) -> bytes:
    """What a collector sends (used by the simulator, tests and benchmarks)."""
    body = {"v": WIRE_VERSION, "collector": collector, "seq": seq, "readings": readings}
    if sent is not None:
        body["sent"] = sent
    return msgspec.json.encode(body)


def topic(prefix: str, site: str, collector: str, kind: str) -> str:
    return f"{prefix}/{site}/{collector}/{kind}"


def parse_topic(t: str, prefix: str, site: str) -> tuple[str, str] | None:
    """(collector, kind) of an inbound topic, or None when it is not one."""
    head = f"{prefix}/{site}/"
    if not t.startswith(head):
        return None
    rest = t[len(head):].split("/")
    if len(rest) != 2 or rest[1] not in KINDS or rest[0] in RESERVED_COLLECTORS:
        return None
    return rest[0], rest[1]


_reading_encoder = msgspec.json.Encoder()


def encode_reading(r: Reading) -> bytes:
    return _reading_encoder.encode(r)


def decode_transfer(payload: bytes) -> TransferDeclaration:
    """Raises ValueError with the reason when the declaration is not usable."""
    try:
        return _transfer_decoder.decode(payload)
    except _DECODE_ERRORS as e:
        raise ValueError(f"transfer declaration: {e}") from None
