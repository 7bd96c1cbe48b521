"""TEP fault-detection scoring: per-sample rates, no persistence rule (Chiang/Russell/Braatz).

FDR of a fault = fraction of its faulty rows flagged; FAR = fraction of normal rows flagged.
For the Braatz test sets the fault starts at row 161 (0-based 160) of 960.
"""
from __future__ import annotations

import numpy as np

TEST_FAULT_START = 160  # 0-based row at which dXX_te.dat turns faulty


def rate(alarm: np.ndarray) -> float:
    """Fraction of rows flagged (0 for an empty array)."""
    a = np.asarray(alarm, dtype=bool)
    return float(a.mean()) if a.size else 0.0


def fdr(alarm: np.ndarray, start: int = TEST_FAULT_START) -> float:
    """Fault detection rate over the faulty rows ``start:`` of a fault test set."""
    return rate(np.asarray(alarm)[start:])


def far(alarm: np.ndarray, start: int = 0) -> float:
    """False-alarm rate over the normal rows ``start:`` of a fault-free set."""
    return rate(np.asarray(alarm)[start:])


def detection_delay(alarm: np.ndarray, start: int = TEST_FAULT_START) -> int | None:
    """Rows from the fault's start to the first alarm at or after it (None if never)."""
    hit = np.flatnonzero(np.asarray(alarm, dtype=bool)[start:])
    return int(hit[0]) if len(hit) else None
