"""PostgreSQL binary COPY encoding, vectorised with numpy.

Building a Python tuple and a ``datetime`` per reading dominates a naive COPY path; here a
whole batch becomes one structured numpy array whose bytes *are* the COPY stream: each row is
``int16 field count`` then, per field, ``int32 length`` + big-endian value. Timestamps are int64
microseconds since 2000-01-01 UTC, PostgreSQL's own representation.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

PG_EPOCH = 946_684_800.0  # 2000-01-01T00:00:00Z in Unix seconds
_PG_EPOCH_DT = datetime(2000, 1, 1, tzinfo=timezone.utc)
HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)

# field kind -> (numpy big-endian dtype, byte length)
_FIELDS = {"timestamptz": (">i8", 8), "int4": (">i4", 4), "float8": (">f8", 8), "int2": (">i2", 2)}


def unix_to_pg_micros(t: np.ndarray) -> np.ndarray:
    """Unix seconds (float64) → PostgreSQL timestamptz (int64 µs since 2000-01-01), rounded to µs."""
    return np.rint((np.asarray(t, dtype=np.float64) - PG_EPOCH) * 1e6).astype(np.int64)


def pg_datetime(t: float) -> datetime:
    """Unix seconds → the ``datetime`` of the timestamptz PostgreSQL stores for them: rounded to
    µs exactly as :func:`unix_to_pg_micros` (binary COPY) and ``to_timestamp()`` round.
    ``datetime.fromtimestamp`` rounds the Unix value itself and gives 1 µs more or less for some
    times (1796561804.1564865: …156487 against …156486), so a robot reading, an alarm or a query
    bound made with it would not be at the time of the reading stored by COPY."""
    # Python's arithmetic, not numpy's cast: a time no timestamp can hold (1e300, NaN) raises
    # here instead of becoming an arbitrary int64
    return _PG_EPOCH_DT + timedelta(microseconds=round((float(t) - PG_EPOCH) * 1e6))


def encode(columns: list[tuple[str, np.ndarray]]) -> bytes:
    """Binary COPY stream for rows given as (pg type, column values) pairs, no NULLs."""
    n = len(columns[0][1])
    fields = [("nf", ">i2")]
    for i, (kind, _) in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", _FIELDS[kind][0])]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["nf"] = len(columns)
    for i, (kind, values) in enumerate(columns):
        rows[f"l{i}"] = _FIELDS[kind][1]
        rows[f"v{i}"] = unix_to_pg_micros(values) if kind == "timestamptz" else values
    return HEADER + rows.tobytes() + TRAILER


def decode_fixed(data: bytes, kinds: list[str]) -> list[np.ndarray]:
    """Columns from a binary COPY stream of fixed-width, non-NULL fields (the reverse of
    :func:`encode`); timestamptz columns come back as Unix seconds (float64)."""
    fields = [("nf", ">i2")]
    for i, kind in enumerate(kinds):
        fields += [(f"l{i}", ">i4"), (f"v{i}", _FIELDS[kind][0])]
    dt = np.dtype(fields)
    body = memoryview(data)[len(HEADER):len(data) - len(TRAILER)]
    if len(body) % dt.itemsize:
        raise ValueError("COPY stream is not made of fixed-width rows (a NULL or a variable-width field?)")
    rows = np.frombuffer(body, dtype=dt)
    out = []
    for i, kind in enumerate(kinds):
        v = rows[f"v{i}"]
        out.append(v.astype(np.float64) / 1e6 + PG_EPOCH if kind == "timestamptz" else v.astype(v.dtype.newbyteorder("=")))
    return out
