"""The audit chain's plain parts: canonical JSON, exact times, and a problem found."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any


def clean(obj: Any) -> Any:
    """A JSON value that survives jsonb unchanged: non-finite floats become strings, -0.0 is 0.0,
    NUL characters are dropped, keys are strings."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return repr(obj)
        return 0.0 if obj == 0 else obj
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, str):
        return obj.replace("\x00", "")
    if isinstance(obj, (bool, int)) or obj is None:
        return obj
    if isinstance(obj, datetime):
        return obj.isoformat()
    return str(obj)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def micros(t: datetime) -> int:
    """Exact microseconds since the epoch (what timestamptz stores)."""
    return (t - _EPOCH) // _US


def from_micros(us: int) -> datetime:
    """The ``datetime`` of exact microseconds since the epoch (the inverse of :func:`micros`)."""
    return _EPOCH + int(us) * _US


@dataclass
class Problem:
    seq: int | None
    kind: str  # altered | inserted | deleted | moved | head
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        return f"{where}: {self.kind}: {self.detail}"


