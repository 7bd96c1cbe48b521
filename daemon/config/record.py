"""The ``record`` section: how readings are sealed in the audit chain (docs/audit.md)."""
from __future__ import annotations

from pydantic import Field

from plantwatch.daemon.config.sensors import Model


class RecordConfig(Model):
    """Readings sealed in time slices: one digest per slice and sensor chained in the audit log."""

    #: seal readings, robot readings and dead letters (off: nothing is sealed; audit verify then
    #: checks the chained records only)
    seal: bool = True
    #: seconds of readings per slice
    slice_seconds: int = Field(60, ge=1, le=3600)
    #: seconds after a slice's end before it is sealed: readings arriving this late are still in the
    #: slice's first seal; later ones get a sealed delta (never a silent change)
    horizon_seconds: float = Field(120.0, ge=0, le=86400)
    #: seconds between sealing rounds
    interval_seconds: float = Field(10.0, gt=0, le=3600)
