"""Slice digests computed in the daemon from the rows it has just committed, so that the
database does no digest work for the slices this daemon saw whole (docs/audit.md).

Each committed unit's readings are kept per slice as numpy arrays (no Python per row). When the
sealer reaches a slice it asks :meth:`SliceDigests.take` for the slice's digests: one per sensor,
in the canonical form ``connectors/seal.py`` defines and ``audit verify`` recomputes from the
database — sha256 over the sensor's rows in time order, each row the stored timestamptz (int8
microseconds since 2000-01-01, big-endian; the COPY path's own conversion), the float8 bits of the
value and the int2 quality. A slice the daemon did not see whole answers ``None`` and the sealer
falls back to the database's digest for it:

- a slice that began before this daemon started and already held readings then (a previous run
  wrote into it; ``connectors.seal.first_whole_slice``);
- a slice a unit wrote into with duplicates (rows the database kept from an earlier write) or
  that was split after a refusal (some of its rows quarantined);
- every slice when several instances share the site (``cluster``), or of a table this module
  does not digest (robot readings: few rows, their digest stays in the database).

Rows committed for a slice already taken (late readings) are not kept: the sealed-delta path
(``Sealer.reseal``) handles them from the database.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from plantwatch.connectors.pgcopy import PG_EPOCH, unix_to_pg_micros
from plantwatch.connectors.records import ReadingRows

_PG_EPOCH_US = int(PG_EPOCH) * 1_000_000
#: the canonical row: ``timestamptz_send(time) || float8send(value) || int2send(quality)``
ROW = np.dtype([("t", ">i8"), ("v", ">f8"), ("q", ">i2")])


def canonical_digests(sensor: np.ndarray, pg_us: np.ndarray, value: np.ndarray,
                      quality: np.ndarray) -> dict[int, tuple[int, str]]:
    """sensor id -> (rows, sha256 hex) over each sensor's rows in time order."""
    if len(sensor) == 0:
        return {}
    order = np.lexsort((pg_us, sensor))
    rows = np.empty(len(order), dtype=ROW)
    rows["t"], rows["v"], rows["q"] = pg_us[order], value[order], quality[order]
    s = sensor[order]
    cuts = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(s)]))
    buf = memoryview(rows.tobytes())
    size = ROW.itemsize
    return {int(s[a]): (int(b - a), hashlib.sha256(buf[a * size:b * size]).hexdigest())
            for a, b in zip(starts.tolist(), ends.tolist())}


class SliceDigests:
    """The committed readings of the slices not sealed yet, per slice start (Unix µs)."""

    def __init__(self, width: int, started: float, *, enabled: bool = True):
        """``started``: the Unix time from which this daemon writes every reading (slices that
        began earlier may hold rows of a previous run); ``enabled``: False in cluster mode (other instances write
        too): every slice falls back to the database."""
        self.w_us = int(width) * 1_000_000
        self.enabled = enabled
        #: slices from here on (Unix µs) may be whole; below it they are not, or already taken
        self.floor = math.ceil(started * 1e6 / self.w_us) * self.w_us
        self.parts: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.tainted: set[int] = set()

    def _slices(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pg = unix_to_pg_micros(t)
        return pg, (pg + _PG_EPOCH_US) // self.w_us * self.w_us

    def committed(self, rows: ReadingRows | None, *, whole: bool) -> None:
        """A unit's readings after their commit; ``whole``: every row was stored by it (no
        duplicates met, not split)."""
        if not self.enabled or rows is None or not len(rows):
            return
        pg, start = self._slices(rows.t)
        lo, hi = int(start.min()), int(start.max())
        if not whole:
            self.tainted.update(range(lo, hi + 1, self.w_us))
            return
        if lo == hi:
            if lo >= self.floor:
                self.parts.setdefault(lo, []).append((rows.sensor_id, pg, rows.value, rows.quality))
            return
        for s in np.unique(start).tolist():
            if s >= self.floor:
                m = start == s
                self.parts.setdefault(s, []).append((rows.sensor_id[m], pg[m], rows.value[m], rows.quality[m]))

    def take(self, start: int) -> dict[int, tuple[int, str]] | None:
        """The digests of the slice at ``start`` (Unix µs), or None if this daemon did not see it
        whole (the database computes it). The slice and every earlier one are forgotten."""
        whole = self.enabled and start >= self.floor and start not in self.tainted
        parts = self.parts.pop(start, [])
        self.floor = max(self.floor, start + self.w_us)
        for s in [s for s in self.parts if s < self.floor]:
            del self.parts[s]
        self.tainted = {s for s in self.tainted if s >= self.floor}
        if not whole:
            return None
        if not parts:
            return {}
        return canonical_digests(*(np.concatenate([p[i] for p in parts]) for i in range(4)))
