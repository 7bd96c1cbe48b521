"""Per-edge-node Sparkplug B session state, as a host application keeps it.

An NBIRTH opens a node's session: its ``bdSeq``, its sequence number (0..255, wrapping) and the
names, aliases and datatypes of its metrics; a DBIRTH does the same for one device of the node.
NDATA/DDATA may then name metrics by alias only. Every message of a session after the NBIRTH
carries the next sequence number; a gap means a message was lost, and the node is asked to
publish its births again. An NDEATH ends the session only when its ``bdSeq`` is the NBIRTH's
(a late Last Will of an older session must not kill the new one).

Pure state, no I/O: :meth:`Sessions.handle` says what a message means and whether a rebirth
must be requested; the caller publishes the request and maps the metrics. Each message that
changes a session also says how (:class:`SessionChange`): the caller writes that in the same
transaction as the message's readings (``connectors/sparkplug/births.py``), and a restarted host
gives the stored sessions to :meth:`Sessions.restore`, so data redelivered after a restart is
understood without asking the node for its births again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from ..storable import unstorable_char
from . import payload as sp
from .topic import SpTopic

#: ask a node again for its births at most this often (seconds) while it keeps misbehaving
REBIRTH_EVERY = 5.0


@dataclass(slots=True)
class MetricTable:
    by_alias: dict[int, str] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"aliases": {str(a): n for a, n in self.by_alias.items()}, "types": dict(self.types)}

    @classmethod
    def from_json(cls, d: dict) -> "MetricTable":
        return cls({int(a): str(n) for a, n in d.get("aliases", {}).items()},
                   {str(n): int(t) for n, t in d.get("types", {}).items()})


@dataclass(frozen=True, slots=True)
class SessionChange:
    """What one message did to its node's session, to be stored with it. ``order`` is the
    message's arrival order (increasing, also across restarts: microseconds of the wall clock)."""

    kind: Literal["nbirth", "dbirth", "ddeath", "ndeath", "seq"]
    group: str
    node: str
    order: int
    seq: int | None = None
    bd_seq: int | None = None
    device: str | None = None
    table: MetricTable | None = None


@dataclass(frozen=True, slots=True)
class StoredNode:
    """A node's session as stored: its birth's ``bdSeq`` and metric tables, its last ``seq``."""

    group: str
    node: str
    bd_seq: int | None
    seq: int | None
    table: MetricTable
    devices: dict[str, MetricTable] = field(default_factory=dict)


@dataclass(slots=True)
class NodeSession:
    bd_seq: int | None = None
    seq: int | None = None  # last sequence number seen
    node: MetricTable | None = None  # None until the NBIRTH
    devices: dict[str, MetricTable] = field(default_factory=dict)
    rebirth_asked: float = float("-inf")


@dataclass(slots=True)
class MetricValue:
    name: str
    t: float  # Unix seconds
    value: float | None  # None: is_null, or refused (see error)
    quality: int = 0
    error: sp.MetricError | None = None
    flag: int = 0  # 0 none, 1 over range, 2 signal failure (wire.FLAG_CODES)
    raw: bytes = b""
    historical: bool = False  # is_historical: store-and-forward history, not a live value


@dataclass(slots=True)
class Outcome:
    metrics: list[MetricValue] = field(default_factory=list)
    #: reason and detail when the whole message is refused (its metrics are not used)
    refused: tuple[str, str] | None = None
    rebirth: bool = False  # publish NCMD Node Control/Rebirth to this node
    why: str = ""  # the first reason a rebirth is needed: sequence_gap, sp_no_birth, sp_unknown_alias
    gap: bool = False
    change: SessionChange | None = None  # what the message did to its node's session (stored with it)
    #: "node" (the node and all its devices) or "device" (the topic's device) died
    died: str | None = None
    ignored_death: bool = False  # an NDEATH whose bdSeq is not the current session's


class Sessions:
    def __init__(self) -> None:
        self.nodes: dict[tuple[str, str], NodeSession] = {}
        self._order = 0

    def restore(self, stored: list[StoredNode]) -> int:
        """Sessions as stored (at start, or when a partition is taken over): they replace what is
        kept here for those nodes. Returns how many were restored."""
        for n in stored:
            self.nodes[(n.group, n.node)] = NodeSession(bd_seq=n.bd_seq, seq=n.seq, node=n.table,
                                                        devices=dict(n.devices))
        return len(stored)

    def forget(self, keep) -> None:  # noqa: ANN001 - a predicate on (group, node)
        """Drop the sessions of the nodes ``keep`` says no (a partition given up: its next
        holder has their state)."""
        for key in [k for k in self.nodes if not keep(k)]:
            del self.nodes[key]

    def _next_order(self) -> int:
        self._order = max(self._order + 1, time.time_ns() // 1000)
        return self._order

    def handle(self, t: SpTopic, raw: bytes, now: float) -> Outcome:
        try:
            p = sp.decode(raw)
        except sp.PayloadError as e:
            return Outcome(refused=("sp_malformed", str(e)))
        key = (t.group, t.node)
        s = self.nodes.get(key)
        if t.type == "NBIRTH":
            return self._nbirth(key, p)
        if t.type == "NDEATH":
            return self._ndeath(key, s, p)
        if t.type in ("NCMD", "DCMD"):
            return Outcome()  # commands to edge nodes (ours among them): nothing to ingest
        if t.type == "DDEATH" and (s is None or s.node is None):
            # the device is gone even if its node's birth was missed (daemon restart): stale it
            return self._ask(key, now, Outcome(died="device", why="sp_no_birth"))
        if s is None or s.node is None:
            return self._ask(key, now, Outcome(refused=("sp_no_birth", f"{t.type} from {t.source} before its NBIRTH"),
                                               why="sp_no_birth"))
        out = Outcome()
        self._check_seq(s, p, out)
        order = self._next_order()
        if t.type == "DBIRTH":
            s.devices[t.device] = self._table(p, out)
            out.change = SessionChange("dbirth", t.group, t.node, order, s.seq, device=t.device,
                                       table=s.devices[t.device])
        elif t.type == "DDEATH":
            s.devices.pop(t.device, None)
            out.died = "device"
            out.change = SessionChange("ddeath", t.group, t.node, order, s.seq, device=t.device)
        else:
            out.change = SessionChange("seq", t.group, t.node, order, s.seq)
            table = s.node if t.type == "NDATA" else s.devices.get(t.device)
            if table is None:
                out.refused = ("sp_no_birth", f"DDATA from {t.source} before its DBIRTH")
                out.why = out.why or "sp_no_birth"
            else:
                self._data(p, table, out)
        if out.why:
            self._ask(key, now, out)
        return out

    # --- message kinds ------------------------------------------------------------------------
    def _nbirth(self, key: tuple[str, str], p: sp.Payload) -> Outcome:
        out = Outcome()
        s = NodeSession(bd_seq=sp.bd_seq(p), seq=p.seq if p.HasField("seq") else 0)
        s.node = self._table(p, out)
        self.nodes[key] = s
        out.change = SessionChange("nbirth", key[0], key[1], self._next_order(), s.seq, s.bd_seq, table=s.node)
        return out

    def _ndeath(self, key: tuple[str, str], s: NodeSession | None, p: sp.Payload) -> Outcome:
        bd = sp.bd_seq(p)
        if s is not None and s.bd_seq is not None and bd != s.bd_seq:
            return Outcome(ignored_death=True)
        self.nodes.pop(key, None)
        return Outcome(died="node", change=SessionChange("ndeath", key[0], key[1], self._next_order()))

    def _table(self, p: sp.Payload, out: Outcome) -> MetricTable:
        """Names, aliases and datatypes of a BIRTH; its values are readings too."""
        table = MetricTable()
        for m in p.metrics:
            if not m.name or not isinstance(m.name, str) or unstorable_char(m.name) is not None:
                continue  # a name that is not storable text: refused by _data
            table.types[m.name] = m.datatype
            if m.HasField("alias"):
                table.by_alias[m.alias] = m.name
        self._data(p, table, out)
        return table

    def _data(self, p: sp.Payload, table: MetricTable, out: Outcome) -> None:
        payload_t = p.timestamp if p.HasField("timestamp") else None
        for m in p.metrics:
            name = m.name if m.name else table.by_alias.get(m.alias) if m.HasField("alias") else None
            if name is None:
                out.metrics.append(MetricValue(f"alias {m.alias}", float("nan"), None, error=sp.MetricError(
                    "sp_unknown_alias", f"alias {m.alias} was not declared in the BIRTH"), raw=m.SerializeToString()))
                out.why = out.why or "sp_unknown_alias"
                continue
            why = "is not valid UTF-8" if not isinstance(name, str) else unstorable_char(name)
            if why is not None:  # protobuf gives bytes for a proto2 string that is not UTF-8
                out.metrics.append(MetricValue(repr(name)[:80], float("nan"), None, error=sp.MetricError(
                    "bad_text", f"metric name {why}"), raw=m.SerializeToString()))
                continue
            if name == sp.BDSEQ_METRIC or name.startswith("Node Control/"):
                continue
            ms = m.timestamp if m.HasField("timestamp") else payload_t
            if ms is None:
                out.metrics.append(MetricValue(name, float("nan"), None, error=sp.MetricError(
                    "bad_time", "neither the metric nor the payload has a timestamp"), raw=m.SerializeToString()))
                continue
            t = ms / 1000.0
            if m.is_null:
                out.metrics.append(MetricValue(name, t, None))
                continue
            datatype = m.datatype or table.types.get(name, 0)
            try:
                value = sp.numeric_value(m, datatype)
            except sp.MetricError as e:
                out.metrics.append(MetricValue(name, t, None, error=e, raw=m.SerializeToString()))
                continue
            quality, flag = sp.quality_and_flag(m)
            out.metrics.append(MetricValue(name, t, value, quality, flag=flag, historical=m.is_historical))

    @staticmethod
    def _check_seq(s: NodeSession, p: sp.Payload, out: Outcome) -> None:
        seq = p.seq if p.HasField("seq") else None
        expected = None if s.seq is None else (s.seq + 1) % 256
        if seq is not None and seq == s.seq:
            return  # the last message again (redelivered after a restart): its readings are stored once
        if seq is None or seq != expected:
            out.gap = True
            out.why = "sequence_gap"
        if seq is not None:
            s.seq = seq % 256

    def _ask(self, key: tuple[str, str], now: float, out: Outcome) -> Outcome:
        """Ask for a rebirth (``out.why`` says why), at most once per REBIRTH_EVERY seconds per node."""
        s = self.nodes.setdefault(key, NodeSession())
        out.rebirth = now - s.rebirth_asked >= REBIRTH_EVERY
        if out.rebirth:
            s.rebirth_asked = now
        return out
