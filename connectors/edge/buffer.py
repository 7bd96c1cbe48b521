"""Store-and-forward buffer of an edge collector: batches on disk until the broker has them.

A batch gets its ``seq`` when it enters the buffer and keeps it through broker outages and
collector restarts; the next ``seq`` is stored with the batches, so numbering continues after a
restart and the daemon's gap counter stays meaningful. The publisher reads batches oldest first
and deletes one only after the broker's PUBACK. The buffer is bounded: past ``max_batches`` the
oldest batches are dropped, counted (persistently) and logged; that shows as a ``seq`` gap
downstream.

stdlib sqlite3 in WAL mode with ``synchronous=FULL``: a committed batch survives a crash of the
collector or the machine. Calls are short and made from the event loop thread.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("plantwatch.collect.buffer")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, readings BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int
    topic: str
    readings: list[dict[str, Any]]


class Outbox:
    """``with Outbox(path, max_batches) as box: box.append(topic, readings); box.oldest(20); box.delete(seqs)``"""

    def __init__(self, path: str | Path, max_batches: int = 100_000):
        if max_batches < 1:
            raise ValueError("max_batches must be >= 1")
        self.path = Path(path)
        self.max_batches = max_batches
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(list[dict[str, Any]]).decode

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                         (key, value))

    @property
    def next_seq(self) -> int:
        return self._meta("next_seq")

    @property
    def dropped(self) -> int:
        """Batches dropped from a full buffer, over the buffer file's whole life."""
        return self._meta("dropped")

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM batches").fetchone()[0])

    def append(self, topic: str, readings: list[dict[str, Any]]) -> int:
        """Store one batch durably; returns its ``seq``."""
        with self._db:  # one transaction: the batch, the next seq and any drop commit together
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._meta("next_seq")
            self._db.execute("INSERT INTO batches (seq, topic, readings) VALUES (?, ?, ?)",
                             (seq, topic, self._encode(readings)))
            self._set_meta("next_seq", seq + 1)
            excess = len(self) - self.max_batches
            if excess > 0:
                first = self._db.execute("SELECT min(seq) FROM batches").fetchone()[0]
                self._db.execute("DELETE FROM batches WHERE seq < ?", (first + excess,))
                self._set_meta("dropped", self._meta("dropped") + excess)
        if excess > 0:
            log.warning("buffer full (%d batches): dropped the oldest %d (seq %d..%d), %d dropped in all",
                        self.max_batches, excess, first, first + excess - 1, self.dropped)
        return seq

    def oldest(self, n: int) -> list[Stored]:
        rows = self._db.execute("SELECT seq, topic, readings FROM batches ORDER BY seq LIMIT ?", (n,)).fetchall()
        return [Stored(seq, topic, self._decode(readings)) for seq, topic, readings in rows]

    def delete(self, seqs: list[int]) -> None:
        """Forget batches the broker has acknowledged."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM batches WHERE seq = ?", [(s,) for s in seqs])
