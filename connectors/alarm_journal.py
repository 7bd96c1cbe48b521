"""The alarm journal on local disk: alarm operations decided but not yet committed to the database.

An alarm change is published (MQTT, webhooks, console) as soon as it is decided, and written to the
database with the readings that caused it; while the database is down or stalled that write waits.
The journal keeps every such unit of alarm operations durably until the database has it, so a
daemon stopped or killed during an outage writes them on its next start, in order, with their
original times, and the audit chain goes on without a gap.

Storage: one SQLite file (stdlib ``sqlite3``) in WAL mode with ``synchronous=FULL``: an append is
on disk (the WAL fsynced) before :meth:`AlarmJournal.append` returns. Each entry gets a key
``{journal id}:{seq}``, unique across journal files; the database records the keys it has committed
(table ``alarm_journal_applied``, written in the same transaction as the operations by
:class:`JournalApplied`), so a replay after a crash between the commit and :meth:`done` skips the
entry: nothing is written twice.

The journal is bounded (``limit`` entries): :meth:`append` raises :class:`JournalFull` beyond it,
and the caller makes that a loud system condition.
"""
from __future__ import annotations

import dataclasses
import fcntl
import importlib
import json
import math
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import asyncpg

from . import alarm_db, records, store
from .records import JournalApplied  # noqa: F401 - re-exported

#: modules whose dataclasses the journal holds as alarm operations (a new op type there is
#: journaled without a change here); a name read back is resolved only inside these
OP_MODULES = (records.__name__, store.__name__, alarm_db.__name__)  # the last two: entries of earlier versions


class JournalFull(RuntimeError):
    """The journal holds ``limit`` entries the database has not committed yet."""


class UnknownOp(TypeError):
    """An alarm operation the journal cannot store (not a dataclass of :data:`OP_MODULES`)."""


@dataclass(slots=True)
class Entry:
    seq: int
    key: str
    created: float
    ops: list[Any]


def _plain(x: Any) -> Any:
    """numpy scalars and other number-likes as plain Python values (json's ``default``)."""
    item = getattr(type(x), "item", None)
    if item is not None:
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def _op_type(module: str, name: str) -> type:
    cls = getattr(importlib.import_module(module), name, None) if module in OP_MODULES else None
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise UnknownOp(f"the alarm journal cannot hold a {module}.{name}")
    return cls


def encode_ops(ops: Iterable[Any]) -> str:
    out = []
    for op in ops:
        cls = type(op)
        if _op_type(cls.__module__, cls.__qualname__) is not cls:
            raise UnknownOp(f"the alarm journal cannot hold a {cls.__qualname__}")
        out.append({"module": cls.__module__, "type": cls.__qualname__,
                    "fields": {f.name: getattr(op, f.name) for f in dataclasses.fields(op)}})
    return json.dumps(out, default=_plain, allow_nan=True)


def decode_ops(text: str) -> list[Any]:
    return [_op_type(d["module"], d["type"])(**d["fields"]) for d in json.loads(text)]


class JournalInUse(RuntimeError):
    """Another process holds the journal file (two daemons configured with the same one)."""


class AlarmJournal:
    """The journal file ``path`` (SQLite), held under an exclusive lock (``{path}.lock``) while
    open. Synchronous: an append is one small fsynced SQLite transaction (milliseconds), made only
    when alarm operations are."""

    def __init__(self, path: str | Path, *, limit: int):
        self.path = Path(path)
        self.limit = limit
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise JournalInUse(f"the alarm journal {self.path} is in use by another process (give each daemon its"
                               " own alarms.journal_dir)") from None
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                         " created REAL NOT NULL, ops TEXT NOT NULL)")
        row = self._db.execute("SELECT v FROM meta WHERE k = 'id'").fetchone()
        if row is None:
            self.id = uuid.uuid4().hex
            self._db.execute("INSERT INTO meta (k, v) VALUES ('id', ?)", (self.id,))
        else:
            self.id = row[0]
        self._n = self._db.execute("SELECT count(*) FROM entries").fetchone()[0]

    def __len__(self) -> int:
        """Entries the database has not committed yet."""
        return self._n

    def key(self, seq: int) -> str:
        return f"{self.id}:{seq}"

    def append(self, ops: Sequence[Any], now: float | None = None) -> str:
        """Store one unit's alarm operations durably; returns the entry's key."""
        if self._n >= self.limit:
            raise JournalFull(f"the alarm journal {self.path} holds {self._n} entries (limit {self.limit})")
        text = encode_ops(ops)
        cur = self._db.execute("INSERT INTO entries (created, ops) VALUES (?, ?)",
                               (time.time() if now is None else now, text))
        self._n += 1
        return self.key(cur.lastrowid)

    def done(self, key: str) -> None:
        """The database committed entry ``key``: forget it."""
        jid, _, seq = key.rpartition(":")
        if jid != self.id:
            return
        cur = self._db.execute("DELETE FROM entries WHERE seq = ?", (int(seq),))
        self._n -= cur.rowcount

    def pending(self) -> list[Entry]:
        """Entries not yet committed, oldest first."""
        rows = self._db.execute("SELECT seq, created, ops FROM entries ORDER BY seq").fetchall()
        return [Entry(seq, self.key(seq), created, decode_ops(ops)) for seq, created, ops in rows]

    def oldest_age(self, now: float | None = None) -> float:
        row = self._db.execute("SELECT min(created) FROM entries").fetchone()
        if row is None or row[0] is None:
            return 0.0
        age = (time.time() if now is None else now) - row[0]
        return age if math.isfinite(age) else 0.0

    def close(self) -> None:
        self._db.close()
        self._lock.close()
