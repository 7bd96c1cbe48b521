"""Decode and validate one MQTT message against the sensor registry.

Every reading either becomes a row (column arrays, ready for storage and detection) or a
:class:`~plantwatch.connectors.store.DeadLetter` with a stable reason code. A bad reading never
takes the good readings of its batch down with it.

Reason codes (the ``reason`` label of ``plantwatch_readings_rejected_total``):
``oversized``, ``invalid_utf8``, ``malformed_json``, ``bad_envelope``, ``bad_version``,
``bad_topic``, ``collector_mismatch``, ``wrong_type``, ``non_finite``, ``unknown_sensor``,
``wrong_kind``, ``wrong_collector``, ``missing_position``, ``bad_area``, ``duplicate_key``,
``bad_time``, ``future_time``, ``too_old``, ``out_of_range``, ``bad_transfer`` (``bad_text`` from
Sparkplug B, see ``daemon/ingest/sparkplug.py``); and, after validation, ``unstorable`` (a message the
database refused) and ``unstorable_alarm_op`` (an alarm operation it refused), see
``daemon/ingest/pipeline.py``.

A value above the top of its sensor's measuring range by at most :data:`OVER_RANGE_MARGIN` of the
span is accepted as over range (what a 4-20 mA loop at up to 22 mA gives when it is scaled without
clamping); the detectors judge it at or above full scale. Further out, or below the range, it is
``out_of_range``. A reading's optional ``flag`` (``over_range``, ``signal_failure``) is kept in
:attr:`Validated.flag` for the detectors; the stored row keeps its quality and value.

Every field that reaches a column is checked against what the column can hold (bigint, timestamptz
range, text without NUL and of bounded length), so that a message the database would refuse is
dead-lettered here with a clear reason rather than by the write path's split.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plantwatch.connectors import storable, wire
from plantwatch.connectors.store import DeadLetter, Transfer

from plantwatch.daemon.config.model import Config
from plantwatch.daemon.config.inventory import tank_scale, to_quantity

#: fraction of the span above the top of a measuring range still accepted, as over range: a loop
#: current of 22 mA (NAMUR NE43's highest signal) is 12.5 % of the span above 20 mA
OVER_RANGE_MARGIN = 0.125


@dataclass(slots=True)
class Registry:
    """Lookup tables built once from the config (and the database ids of the sensors)."""

    index: dict[str, int]  # sensor tag -> column (position in config.sensors)
    db_id: np.ndarray  # column -> database id (int32)
    range_min: np.ndarray
    range_max: np.ndarray
    accept_max: np.ndarray  # highest value accepted (over range above range_max)
    is_robot: np.ndarray  # bool per column
    collector: np.ndarray  # column -> index into collector_ids of the collector that publishes it
    collector_ids: dict[str, int]  # collector id -> index
    areas: list[tuple[str, float, float, float, float]]  # (id, x0, y0, x1, y1) with bounds
    #: message layouts seen (sensor tags in order) -> their columns: collectors send the same
    #: sensors in the same order every time, and one tuple lookup is ~4x cheaper than a dict
    #: lookup per reading into a registry of tens of thousands of tags (cache misses)
    layouts: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)

    def columns(self, tags: tuple[str, ...]) -> np.ndarray:
        col = self.layouts.get(tags)
        if col is None:
            get = self.index.get
            col = np.array([get(s, -1) for s in tags], dtype=np.int64)
            col.flags.writeable = False  # shared by every message of this layout
            if len(self.layouts) >= 16_384:
                self.layouts.clear()
            self.layouts[tags] = col
        return col

    @classmethod
    def build(cls, cfg: Config, ids: dict[str, int]) -> "Registry":
        s = cfg.sensors
        of = [cfg.collector_of(x) for x in s]
        collector_ids = {c: i for i, c in enumerate(dict.fromkeys(of))}
        return cls(
            index={x.id: i for i, x in enumerate(s)},
            db_id=np.array([ids[x.id] for x in s], dtype=np.int32),
            range_min=np.array([x.range[0] for x in s]),
            range_max=np.array([x.range[1] for x in s]),
            accept_max=np.array([x.range[1] + OVER_RANGE_MARGIN * (x.range[1] - x.range[0]) for x in s]),
            is_robot=np.array([x.kind == "robot" for x in s], dtype=bool),
            collector=np.array([collector_ids[c] for c in of], dtype=np.int32),
            collector_ids=collector_ids,
            areas=[(a.id, *a.bounds) for a in cfg.site.areas if a.bounds],
        )

    def area_at(self, x: float, y: float) -> str | None:
        for a, x0, y0, x1, y1 in self.areas:
            if x0 <= x <= x1 and y0 <= y <= y1:
                return a
        return None


@dataclass(slots=True)
class Validated:
    """The usable content of one message."""

    collector: str | None
    seq: int | None
    sent: float | None
    col: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sensor columns
    t: np.ndarray = field(default_factory=lambda: np.empty(0))
    value: np.ndarray = field(default_factory=lambda: np.empty(0))
    quality: np.ndarray = field(default_factory=lambda: np.empty(0, np.int16))
    flag: np.ndarray | None = None  # wire.FLAG_CODES per reading (int8); None: no reading is flagged
    x: np.ndarray | None = None  # robot readings only
    y: np.ndarray | None = None
    area: list[str | None] | None = None
    rejected: list[DeadLetter] = field(default_factory=list)
    transfer: Transfer | None = None
    transfer_tank: str | None = None
    #: readings detectors judge (bool per reading); None: all of them. Sparkplug B historical
    #: metrics (store-and-forward) are stored with their own times but not judged as live
    live: np.ndarray | None = None
    #: what a Sparkplug B message did to its node's session, stored in the same transaction
    session: Any = None

    @property
    def robot(self) -> bool:
        return self.x is not None


#: longest ``by`` and ``reference`` of a transfer declaration (characters)
TRANSFER_TEXT_MAX = 256


def _key(topic: str, payload: bytes, pos: str) -> str:
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=12).hexdigest() + ":" + pos


#: the idempotency key of a message's rows (a transfer's receipt carries it: ``plantwatch transfer``)
message_key = _key


def transfers_topic(cfg: Config) -> str:
    prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
    return f"{prefix}/{cfg.site.id}/transfers/declared"


def validate_transfer(topic: str, payload: bytes, cfg: Config, reg: Registry) -> Validated:
    out = Validated(None, None, None)
    key = _key(topic, payload, "transfer")
    try:
        d = wire.decode_transfer(payload[:cfg.ingest.max_payload_bytes])
        col = reg.index.get(d.tank)
        if col is None or cfg.sensors[col].kind != "level":
            raise ValueError(f"tank {d.tank!r} is not a level sensor of site {cfg.site.id!r}")
        start, end = wire.parse_time(d.start), wire.parse_time(d.end)
        if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(d.quantity)) or end < start:
            raise ValueError("start, end and quantity must be finite, with end not before start")
        for name, t in (("start", start), ("end", end)):
            if (why := storable.time_problem(t)) is not None:
                raise ValueError(f"{name} {t!r} {why}")
        for name, text in (("by", d.by), ("reference", d.reference), ("unit", d.unit)):
            if (why := storable.text_problem(text, TRANSFER_TEXT_MAX)) is not None:
                raise ValueError(f"{name} {why}")
        sensor = cfg.sensors[col]
        scale = tank_scale(cfg, sensor)  # the declared unit, converted to the tank's inventory unit
        quantity = to_quantity(scale, float(d.quantity), d.unit, start, end, top=sensor.range[1])
    except ValueError as e:
        out.rejected.append(DeadLetter(topic, None, None, "bad_transfer", str(e), payload[:cfg.ingest.max_payload_bytes], key))
        return out
    out.transfer = Transfer(int(reg.db_id[col]), start, end, quantity, d.by, d.reference, key,
                            scale.quantity_unit, float(d.quantity), d.unit)
    out.transfer_tank = d.tank
    return out


def validate(topic: str, payload: bytes, cfg: Config, reg: Registry, now: float) -> Validated:
    ing = cfg.ingest
    prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
    if topic == transfers_topic(cfg):
        return validate_transfer(topic, payload, cfg, reg)
    where = wire.parse_topic(topic, prefix, cfg.site.id)
    if where is None:
        return Validated(None, None, None, rejected=[DeadLetter(
            topic, None, None, "bad_topic", f"topic {topic!r} is not {prefix}/{cfg.site.id}/<collector>/readings|robot",
            payload[:ing.max_payload_bytes], _key(topic, payload, "topic"))])
    collector, kind = where
    dec = wire.decode(payload, max_bytes=ing.max_payload_bytes, max_readings=ing.max_readings_per_message)
    if dec.batch is None:
        r = dec.rejected[0]
        return Validated(collector, None, None, rejected=[DeadLetter(topic, collector, None, r.reason, r.detail, r.raw,
                                                                     _key(topic, payload, "batch"))])
    b = dec.batch
    if b.collector != collector:
        return Validated(collector, None, None, rejected=[DeadLetter(
            topic, collector, None, "collector_mismatch",
            f"payload collector {b.collector!r} does not match topic collector {collector!r}",
            payload, _key(topic, payload, "batch"))])
    out = Validated(b.collector, b.seq, b.sent)
    dead = out.rejected
    for i, r in enumerate(dec.rejected):
        dead.append(DeadLetter(topic, collector, b.seq, r.reason, r.detail, r.raw, _key(topic, payload, f"d{i}")))
    rs = dec.readings
    if not rs:
        return out
    robot = kind == "robot"

    n = len(rs)
    # list comprehensions + one array call per column: ~4x cheaper than np.fromiter(generator)
    col = reg.columns(tuple([r.sensor for r in rs]))
    times = [r.time for r in rs]
    try:
        t = np.array(times, dtype=np.float64)
    except (TypeError, ValueError):  # some are RFC 3339 strings
        t = np.array([wire.parse_time(v) for v in times], dtype=np.float64)
    value = np.array([r.value for r in rs], dtype=np.float64)
    quals = [r.quality for r in rs]
    if quals.count("good") == n:
        quality = np.zeros(n, dtype=np.int16)
    else:
        quality = np.array([wire.QUALITY_CODES[q] for q in quals], dtype=np.int16)

    flags = [r.flag for r in rs]
    flag = None if flags.count(None) == n else np.array([wire.FLAG_CODES.get(f, 0) for f in flags], dtype=np.int8)

    known = col >= 0
    c = np.where(known, col, 0)
    foreign = reg.collector[c] != reg.collector_ids.get(collector, -1)
    if not robot:
        # fast path: one combined test; the coded per-reason pass runs only when something is wrong
        wrong = (~known | reg.is_robot[c] | foreign | ~(t <= now + ing.max_future_skew) | (t < now - ing.max_age)
                 | ~((value >= reg.range_min[c]) & (value <= reg.accept_max[c])))
        if not wrong.any():
            out.col, out.t, out.value, out.quality, out.flag = col, t, value, quality, flag
            return out
    checks = [
        ("unknown_sensor", ~known),
        ("wrong_kind", known & (reg.is_robot[c] != robot)),
        ("wrong_collector", known & foreign),
    ]
    if robot:
        xs = np.array([math.nan if r.x is None else r.x for r in rs])
        ys = np.array([math.nan if r.y is None else r.y for r in rs])
        areas = [r.area for r in rs]
        bad_area = np.array([a is not None and not storable.is_id(a) for a in areas], dtype=bool)
        checks += [("missing_position", ~(np.isfinite(xs) & np.isfinite(ys))), ("bad_area", bad_area)]
    checks += value_checks(reg, ing, now, c, known, t, value)
    bad = first_failed(checks, n)
    ok = bad == 0
    for i in np.flatnonzero(~ok):
        reason = checks[bad[i] - 1][0]
        r = rs[i]
        dead.append(DeadLetter(topic, collector, b.seq, reason, _detail(reason, r, cfg, reg, c[i], now, collector),
                               wire.encode_reading(r), _key(topic, payload, f"r{i}")))
    if ok.all():
        out.col, out.t, out.value, out.quality, out.flag = col, t, value, quality, flag
    else:
        out.col, out.t, out.value, out.quality = col[ok], t[ok], value[ok], quality[ok]
        out.flag = None if flag is None else flag[ok]
    if robot:
        keep = np.flatnonzero(ok)
        out.x, out.y = xs[ok], ys[ok]
        out.area = [areas[i] or reg.area_at(xs[i], ys[i]) for i in keep]
    return out


def value_checks(reg: Registry, ing, now: float, c: np.ndarray, known: np.ndarray, t: np.ndarray,
                 value: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The checks of a reading's time and value, whatever its source (wire-format batch or
    Sparkplug B metric), in the order their reasons are given: (reason, failing mask) pairs.
    ``c``: sensor columns (any valid column where ``known`` is False)."""
    return [
        ("non_finite", ~np.isfinite(value)),
        ("bad_time", ~np.isfinite(t)),
        ("future_time", t > now + ing.max_future_skew),
        ("too_old", t < now - ing.max_age),
        ("out_of_range", known & ((value < reg.range_min[c]) | (value > reg.accept_max[c]))),
    ]


def flags_of(items: list[Validated]) -> np.ndarray | None:
    """The flags of the readings of ``items`` concatenated (None when none is flagged)."""
    if all(v.flag is None for v in items):
        return None
    return np.concatenate([np.zeros(len(v.col), np.int8) if v.flag is None else v.flag for v in items])


def first_failed(checks: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Per reading, 1 + the index of the first check it fails in ``checks``; 0 when it passes all."""
    bad = np.zeros(n, dtype=np.int8)
    for code, (_, mask) in enumerate(checks, start=1):
        np.copyto(bad, np.int8(code), where=mask & (bad == 0))
    return bad


def range_detail(s) -> str:
    """Why a value of sensor ``s`` is out of range (for dead letters)."""
    top = s.range[1] + OVER_RANGE_MARGIN * (s.range[1] - s.range[0])
    return (f"outside the measuring range [{s.range[0]:g}, {s.range[1]:g}] {s.unit} (over range is accepted up to"
            f" {top:g})")


def _detail(reason: str, r: wire.Reading, cfg: Config, reg: Registry, col: int, now: float, topic_collector: str) -> str:
    if reason == "unknown_sensor":
        return f"sensor {r.sensor!r} is not in the registry of site {cfg.site.id!r}"
    if reason == "wrong_kind":
        return f"sensor {r.sensor!r} is {cfg.sensors[col].kind!r}: sent on the wrong topic kind"
    if reason == "missing_position":
        return f"robot reading of {r.sensor!r} without finite x and y"
    if reason == "wrong_collector":
        return (f"sensor {r.sensor!r} is published by collector {cfg.collector_of(cfg.sensors[col])!r},"
                f" not by {topic_collector!r}")
    if reason == "bad_area":
        return f"area {r.area[:80]!r} of a robot reading of {r.sensor!r} is not an area id"
    if reason == "non_finite":
        return f"value {r.value!r} of {r.sensor!r} is not finite"
    if reason == "bad_time":
        return f"time {r.time!r} is not Unix seconds or RFC 3339 with an offset"
    if reason == "future_time":
        return f"time {r.time!r} is {wire.parse_time(r.time) - now:.0f} s in the future (max {cfg.ingest.max_future_skew:g})"
    if reason == "too_old":
        return f"time {r.time!r} is {now - wire.parse_time(r.time):.0f} s old (max {cfg.ingest.max_age:g})"
    if reason == "out_of_range":
        return f"value {r.value!r} {range_detail(cfg.sensors[col])} of {r.sensor!r}"
    return reason
