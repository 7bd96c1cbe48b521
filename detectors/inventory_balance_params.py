"""Parameters of :mod:`.inventory_balance` and the minimum detectable loss rate of its CUSUM."""
from __future__ import annotations

import math

from pydantic import Field, field_validator

from .base import debounce


def _per_map(v, name, lo=0.0, strict=True):
    if isinstance(v, dict):
        for key, x in v.items():
            if not (isinstance(x, (int, float)) and math.isfinite(x) and (x > lo if strict else x >= lo)):
                raise ValueError(f"{name}[{key!r}] must be a {'positive' if strict else 'non-negative'} number, got {x!r}")
    return v


def minimum_detectable_rate(sigma: float, bucket: float, k: float, h: float, horizon: float) -> float:
    """Smallest constant loss rate (quantity per hour) a CUSUM with reference ``k`` and threshold
    ``h`` (in σ) on bucket residuals of uncertainty ``sigma`` finds within ``horizon`` seconds.

    A loss of rate L per second makes the residual grow by ``L·bucket`` per bucket; after K buckets
    the CUSUM holds about ``L·bucket·K²/(2σ) − k·K``, which reaches h at ``L = 2σ(h + kK)/(bucket·K²)``."""
    K = max(horizon / bucket, 1.0)
    return 2.0 * sigma * (h + k * K) / (bucket * K * K) * 3600.0


class InventoryBalanceParams(debounce(clear_ratio=0.5, longest=86400)):
    capacity: float | dict[str, float] | None = Field(
        None, description="capacity of tanks reporting in % (one number, or per sensor id): converts % to quantity")
    accuracy: float | dict[str, float] = Field(
        0.0, description="instrument accuracy, quantity units, 1 sigma (one number, or per sensor id)")
    bucket: float = Field(300.0, ge=10, le=86400, description="seconds of readings averaged into one balance step")
    k: float = Field(0.5, ge=0, le=10, description="CUSUM reference, in sigma (half the smallest shift of interest)")
    h: float = Field(10.0, gt=0, le=1000, description="CUSUM threshold, in sigma")
    transfer_tolerance: float = Field(0.01, ge=0, le=1, description="metering tolerance of a declaration, 1 sigma, fraction")
    transfer_margin: float = Field(600.0, ge=0, le=86400, description="seconds a declared transfer is widened by, each side")
    mismatch_k: float = Field(5.0, gt=0, le=100, description="moved vs declared differing by this many sigma is a mismatch")
    min_mismatch: float = Field(0.0, ge=0, description="smallest mismatch that counts, quantity units")
    hold: float = Field(3600.0, ge=0, le=7 * 86400, description="seconds a transfer mismatch is held")
    evaporation: float = Field(0.0, ge=0, description="allowed loss per hour (evaporation, breathing), quantity units")
    reconcile: float = Field(86400.0, ge=600, le=365 * 86400, description="seconds of calm after which the balance is re-based")
    warmup_buckets: int = Field(4, ge=2, le=10_000, description="balance steps before the CUSUM counts")
    temperature: dict[str, str] = Field(default_factory=dict, description="tank sensor id -> its temperature sensor id")
    expansion: dict[str, float] = Field(default_factory=dict, description="tank sensor id -> volumetric expansion, 1/K")
    reference_temperature: float = Field(15.0, ge=-100, le=500, description="temperature the inventory is reckoned at")
    groups: dict[str, list[str]] = Field(default_factory=dict,
                                         description="group id -> its connected tanks; the group's loss is raised on the first")

    @field_validator("capacity")
    @classmethod
    def _cap(cls, v):
        if isinstance(v, float) and not (math.isfinite(v) and v > 0):
            raise ValueError("capacity must be a positive number")
        return _per_map(v, "capacity")

    @field_validator("accuracy")
    @classmethod
    def _acc(cls, v):
        if isinstance(v, float) and not (math.isfinite(v) and v >= 0):
            raise ValueError("accuracy must be a non-negative number")
        return _per_map(v, "accuracy", strict=False)

    @field_validator("groups")
    @classmethod
    def _groups(cls, v):
        for key, members in v.items():
            if len(members) < 2 or len(set(members)) != len(members):
                raise ValueError(f"groups[{key!r}] must name at least two different tanks")
        return v

    @field_validator("expansion")
    @classmethod
    def _beta(cls, v):
        for key, x in v.items():
            if not (math.isfinite(x) and 0 <= x < 0.01):
                raise ValueError(f"expansion[{key!r}] must be between 0 and 0.01 per kelvin, got {x!r}")
        return v
