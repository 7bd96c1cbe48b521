"""Benchmark scoring rules (NAB, SKAB, TEP): pure functions on numpy arrays, no I/O."""
from . import nab, skab, tep

__all__ = ["nab", "skab", "tep"]
