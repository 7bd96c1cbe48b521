"""Sparkplug B messages → plantwatch readings, dead letters, staleness and rebirth requests.

The mapping is pure: :meth:`SparkplugIngest.handle` turns one message into a
:class:`~plantwatch.daemon.ingest.validate.Validated` (the same form a wire-format batch takes, so it goes
through the same pipeline unit, write transaction and ordered PUBACK), plus the sensor columns
that a DEATH made stale at once and, when the node must publish its births again, the NCMD to
send. Readings pass the same checks as wire-format ones (time window, measuring range).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from plantwatch.connectors.sparkplug import payload as sp
from plantwatch.connectors.sparkplug import topic as sptopic
from plantwatch.connectors.sparkplug.session import Sessions
from plantwatch.connectors.store import DeadLetter
from plantwatch.connectors.wire import oversized_detail

from plantwatch.daemon.config.model import Config
from plantwatch.daemon.ingest.pipeline import Ack, Pipeline
from plantwatch.daemon.ingest.validate import Registry, Validated, first_failed, range_detail, value_checks

log = logging.getLogger(__name__)


def topics(cfg: Config) -> list[str]:
    return [sptopic.subscription(g) for g in cfg.sparkplug.groups] if cfg.sparkplug else []


def is_sparkplug(topic: str) -> bool:
    return topic.startswith(sptopic.NAMESPACE + "/")


@dataclass(slots=True)
class Handled:
    validated: Validated
    #: sensor columns whose source died (NDEATH / DDEATH): stale now, not after the timeout
    stale: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    #: (topic, payload) of an NCMD Node Control/Rebirth to publish, if the node must rebirth
    rebirth: tuple[str, bytes] | None = None


class SparkplugMetrics:
    def __init__(self, registry: CollectorRegistry):
        p = "plantwatch_sparkplug_"
        self.messages = Counter(p + "messages", "Sparkplug B messages received, by message type", ["type"], registry=registry)
        self.rebirths = Counter(p + "rebirth_requests", "NCMD Node Control/Rebirth requests published, by reason",
                                ["reason"], registry=registry)
        self.seq_gaps = Counter(p + "sequence_gaps", "Sparkplug messages whose seq was not the expected one",
                                registry=registry)
        self.deaths = Counter(p + "deaths", "NDEATH/DDEATH that made sensors stale", ["type"], registry=registry)
        self.deaths_ignored = Counter(p + "deaths_ignored", "NDEATH whose bdSeq is not the current session's",
                                      registry=registry)
        self.unmapped = Counter(p + "unmapped_metrics", "Metric values with no sensor mapped to them", registry=registry)
        self.historical = Counter(p + "historical_readings", "Readings of is_historical metrics (store and forward):"
                                  " stored with their own times, not judged by detectors", registry=registry)
        self.restored = Counter(p + "sessions_restored", "Node sessions restored from the database (start, takeover)",
                                registry=registry)


class SparkplugIngest:
    def __init__(self, cfg: Config, reg: Registry, registry: CollectorRegistry):
        assert cfg.sparkplug is not None
        self.cfg = cfg
        self.reg = reg
        self.m = SparkplugMetrics(registry)
        self.sessions = Sessions()
        self.by_name = cfg.sparkplug.by_name
        #: (source, metric name) -> sensor column
        self.columns: dict[tuple[str, str], int] = {
            (x.source, x.metric): reg.index[x.sensor] for x in cfg.sparkplug.metrics}
        self._source_cols: dict[str, list[int]] = {}
        for (source, _), col in self.columns.items():
            self._source_cols.setdefault(source, []).append(col)

    async def submit(self, pipeline: Pipeline, publish: Callable[[str, bytes], Awaitable[None]], topic: str,
                     payload: bytes, ack: Ack, now: float | None = None) -> None:
        """Handle one message on the ordered pipeline path. A DEATH gets a unit of its own, so
        readings that arrived before it are judged before their sensors go stale, and readings
        after it (a rebirth) clear the staleness."""
        now = time.time() if now is None else now
        try:
            h = self.handle(topic, payload, now)
        except Exception as e:  # noqa: BLE001 - one odd message must not stop the intake
            log.exception("Sparkplug message on %s could not be handled", topic)
            h = Handled(Validated(None, None, None, rejected=[DeadLetter(
                topic, None, None, "sp_malformed", f"{type(e).__name__}: {e}", payload,
                _key(topic, payload, "batch"))]))
        if len(h.stale):
            await pipeline.flush()
        pipeline.submit_validated(topic, payload, h.validated, ack, now, h.stale)
        if len(h.stale):
            await pipeline.flush()
        if h.rebirth is not None:
            await publish(*h.rebirth)

    def restore(self, stored) -> None:  # noqa: ANN001 - connectors.sparkplug.session.StoredNode list
        """Node sessions as stored with their messages (at start, or when a partition is taken over)."""
        n = self.sessions.restore(stored)
        self.m.restored.inc(n)
        if n:
            log.info("Sparkplug: %d node session(s) restored: %s", n,
                     ", ".join(f"{x.group}/{x.node} (seq {x.seq})" for x in stored[:10]) + (" …" if n > 10 else ""))

    def _column(self, source: str, name: str) -> int:
        col = self.columns.get((source, name))
        if col is None and self.by_name:
            col = self.reg.index.get(name)
            if col is not None and self.reg.is_robot[col]:
                col = None
        return -1 if col is None else col

    def _died(self, source: str, node_wide: bool) -> np.ndarray:
        cols = [c for s, cs in self._source_cols.items()
                if s == source or (node_wide and s.startswith(source + "/")) for c in cs]
        return np.array(sorted(set(cols)), dtype=np.int64)

    def handle(self, topic: str, payload: bytes, now: float) -> Handled:
        t = sptopic.parse(topic)
        if t is None:
            return Handled(Validated(None, None, None, rejected=[DeadLetter(
                topic, None, None, "bad_topic", f"topic {topic!r} is not spBv1.0/<group>/<type>/<edge node>[/<device>]",
                payload[:self.cfg.ingest.max_payload_bytes], _key(topic, payload, "topic"))]))
        self.m.messages.labels(t.type).inc()
        if len(payload) > self.cfg.ingest.max_payload_bytes:
            return Handled(Validated(None, None, None, rejected=[DeadLetter(
                topic, t.source, None, "oversized", oversized_detail(payload, self.cfg.ingest.max_payload_bytes),
                payload[:self.cfg.ingest.max_payload_bytes], _key(topic, payload, "batch"))]))
        o = self.sessions.handle(t, payload, now)
        out = Validated(None, None, None, session=o.change)
        h = Handled(out)
        if o.gap:
            self.m.seq_gaps.inc()
        if o.rebirth:
            self.m.rebirths.labels(o.why).inc()
            h.rebirth = (sptopic.node_command(t.group, t.node), sp.rebirth_command(now))
        if o.ignored_death:
            self.m.deaths_ignored.inc()
        if o.died:
            self.m.deaths.labels(t.type).inc()
            h.stale = self._died(t.source, o.died == "node")
        if o.refused:
            reason, detail = o.refused
            out.rejected.append(DeadLetter(topic, t.source, None, reason, detail, payload[:self.cfg.ingest.max_payload_bytes],
                                           _key(topic, payload, "batch")))
            return h
        ing = self.cfg.ingest
        take: list[tuple[int, Any]] = []  # (position in the payload, metric) of the mapped values
        cols: list[int] = []
        for i, mv in enumerate(o.metrics):
            col = self._column(t.source, mv.name)
            if mv.error is not None:
                if col >= 0 or mv.error.reason in ("sp_unknown_alias", "bad_text"):
                    out.rejected.append(DeadLetter(topic, t.source, None, mv.error.reason, f"{mv.name}: {mv.error.detail}",
                                                   mv.raw[:4096], _key(topic, payload, f"m{i}")))
                continue
            if col < 0:
                if mv.value is not None:
                    self.m.unmapped.inc()
                continue
            if mv.value is None:  # is_null: no reading
                continue
            take.append((i, mv))
            cols.append(col)
        if not take:
            return h
        col = np.array(cols, dtype=np.int64)
        ts = np.array([mv.t for _, mv in take], dtype=np.float64)
        vals = np.array([mv.value for _, mv in take], dtype=np.float64)
        checks = value_checks(self.reg, ing, now, col, np.ones(len(col), dtype=bool), ts, vals)
        bad = first_failed(checks, len(col))
        for j in np.flatnonzero(bad):
            i, mv = take[j]
            reason = checks[bad[j] - 1][0]
            s = self.cfg.sensors[col[j]]
            out.rejected.append(DeadLetter(topic, t.source, None, reason,
                                           f"{mv.name} -> {s.id}: {_detail(reason, mv.t, mv.value, s, now, ing)}",
                                           _metric_json(mv.name, mv.t, mv.value), _key(topic, payload, f"m{i}")))
        ok = bad == 0
        out.col, out.t, out.value = col[ok], ts[ok], vals[ok]
        out.quality = np.array([mv.quality for _, mv in take], dtype=np.int16)[ok]
        if any(mv.flag for _, mv in take):
            out.flag = np.array([mv.flag for _, mv in take], dtype=np.int8)[ok]
        if any(mv.historical for _, mv in take):
            historical = np.array([mv.historical for _, mv in take], dtype=bool)[ok]
            self.m.historical.inc(int(historical.sum()))
            out.live = ~historical
        return h


def _detail(reason: str, t: float, v: float, s, now: float, ing) -> str:
    if reason == "non_finite":
        return f"value {v!r} is not finite"
    if reason == "bad_time":
        return "timestamp is not a finite number of milliseconds"
    if reason == "future_time":
        return f"time {t:.3f} is {t - now:.0f} s in the future (max {ing.max_future_skew:g})"
    if reason == "too_old":
        return f"time {t:.3f} is {now - t:.0f} s old (max {ing.max_age:g})"
    return f"value {v!r} {range_detail(s)}"


def _metric_json(name: str, t: float, v: float) -> bytes:
    return json.dumps({"metric": name, "time": t, "value": v}).encode()


def _key(topic: str, payload: bytes, pos: str) -> str:
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=12).hexdigest() + ":" + pos
