"""Tanks and their inventory: capacity and its unit, plausible transfer rates (docs/security.md).

A transfer declaration carries its unit: ``%`` (of the tank's capacity) or the tank's capacity
unit (``t``, ``kg``, ``m3`` ...). :func:`tank_scale` says, for one level sensor, in which unit its
inventory is reckoned and what its capacity is; :func:`to_quantity` converts a declared quantity to
that unit, or says why it cannot (an unknown or missing unit, an implausible quantity or rate).
The detectors that keep a tank's inventory (:data:`INVENTORY_DETECTORS`) take the capacity of a
tank reporting in % from here when their own ``capacity`` parameter does not name it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from plantwatch.daemon.config.sensors import Sensor

ID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
PERCENT_UNITS = frozenset({"%", "percent", "pct", "% capacity", "%cap"})
#: detector types that reckon a tank's inventory in capacity units (``capacity`` parameter)
INVENTORY_DETECTORS = frozenset({"unexplained_loss", "inventory_balance"})
#: a declaration shorter than this is rated as if it lasted this long (seconds)
MIN_RATE_SECONDS = 60.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tank(_Model):
    """One tank, by its level / inventory sensor."""

    #: the tank's level or inventory sensor (kind: level)
    sensor: ID
    #: the tank's capacity, in `unit`
    capacity: float = Field(gt=0, allow_inf_nan=False)
    #: the capacity's unit (t, kg, m3 ...); a sensor not reporting in % must report in this unit
    unit: str = Field(min_length=1, max_length=16)
    #: the fastest plausible transfer, `unit` per hour; omitted: inventory.max_rate_fraction x capacity
    max_rate: float | None = Field(None, gt=0, allow_inf_nan=False)


class SecurityRoutingConfig(_Model):
    """Which alarms are security alarms, and where they go (docs/security.md)."""

    #: detector ids whose alarms are security alarms; omitted: every enabled unexplained_loss,
    #: inventory_balance and inventory_integrity detector
    detectors: list[ID] | None = None
    #: sensors of toxic tanks: their instrument alarms (stale, flatline, out of range ...) are security alarms too
    toxic: list[ID] = Field(default_factory=list)
    #: the position security alarms are shown to (the console's security view)
    position: ID = "security"
    #: security alarm changes are also published on {prefix}/{site}/{topic}
    topic: str = Field("alarms/security", pattern=r"^[^#+\s]+$")


class InventoryConfig(_Model):
    """Tanks whose inventory is reconciled against declared transfers."""

    #: the tanks (a level sensor not listed reckons in its own unit, or in % with the loss detector's capacity)
    tanks: list[Tank] = Field(default_factory=list)
    #: the fastest plausible transfer of a tank without max_rate, in capacities per hour
    max_rate_fraction: float = Field(10.0, gt=0, le=3600, allow_inf_nan=False)
    #: security alarms: which they are and where they go
    security: SecurityRoutingConfig = SecurityRoutingConfig()


class InventorySite(Protocol):
    """What the inventory reads of the site's config (:class:`~plantwatch.daemon.config.model.Config`)."""

    @property
    def sensors(self) -> Sequence[Sensor]: ...

    @property
    def detectors(self) -> Sequence[Any]: ...

    @property
    def inventory(self) -> InventoryConfig: ...


def is_percent(unit: str) -> bool:
    return unit.strip().lower() in PERCENT_UNITS


def same_unit(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        return u.strip().replace("³", "3").replace(" ", "").lower()
    return norm(a) == norm(b)


@dataclass(frozen=True, slots=True)
class TankScale:
    """How a tank's inventory is reckoned: in ``unit`` (None: in % of an unknown capacity)."""

    tank: str
    percent: bool  # the sensor reports in % of capacity
    capacity: float | None  # in ``unit``; None: unknown
    unit: str | None  # the quantity unit; None: the sensor's % is the quantity
    max_rate: float | None  # quantity units per hour; None: not bounded

    @property
    def quantity_unit(self) -> str:
        if self.unit:
            return self.unit
        return "%" if self.capacity is None else "capacity units"

    def accepted_units(self) -> str:
        units = ["%"] if self.percent or self.capacity is not None else []
        return " or ".join(units + ([self.unit] if self.unit else []))


def _detector_capacity(cfg: InventorySite, s: "Sensor") -> float | None:
    for d in cfg.detectors:
        if d.type in INVENTORY_DETECTORS and d.enabled and d.select.matches(s):
            cap = d.params.get("capacity")
            cap = cap.get(s.id) if isinstance(cap, dict) else cap
            if isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0:
                return float(cap)
    return None


def tank_scale(cfg: InventorySite, s: "Sensor") -> TankScale:
    """The inventory scale of level sensor ``s``."""
    pct = is_percent(s.unit)
    tank = next((t for t in cfg.inventory.tanks if t.sensor == s.id), None)
    if tank is not None:
        rate = tank.max_rate if tank.max_rate is not None else cfg.inventory.max_rate_fraction * tank.capacity
        return TankScale(s.id, pct, tank.capacity, tank.unit, rate)
    if pct:
        cap = _detector_capacity(cfg, s)
        if cap is None:  # the detector reckons in %: the capacity is 100 %
            return TankScale(s.id, True, None, None, cfg.inventory.max_rate_fraction * 100.0)
        return TankScale(s.id, True, cap, None, cfg.inventory.max_rate_fraction * cap)
    # a sensor reporting a quantity: its measuring range bounds what the tank can hold
    top = max(abs(s.range[0]), abs(s.range[1]))
    return TankScale(s.id, False, None, s.unit, cfg.inventory.max_rate_fraction * top if top > 0 else None)


def _bound(scale: TankScale, top: float | None) -> float | None:
    """The largest quantity the tank can hold, in quantity units."""
    if scale.percent:
        return scale.capacity if scale.capacity is not None else 100.0
    return scale.capacity if scale.capacity is not None else top


def to_quantity(scale: TankScale, quantity: float, unit: str | None, start: float, end: float,
                top: float | None = None) -> float:
    """``quantity`` declared in ``unit``, in the tank's quantity units; ValueError says why not.

    ``top``: the upper end of the sensor's measuring range (bounds a tank without a capacity)."""
    if unit is None or not unit.strip():
        raise ValueError(f"a declaration needs its unit: {scale.accepted_units()} for tank {scale.tank!r}")
    if not math.isfinite(quantity):
        raise ValueError("quantity must be a finite number")
    if is_percent(unit):
        if scale.percent and scale.unit is None:
            q = quantity * scale.capacity / 100.0 if scale.capacity is not None else quantity
        elif scale.capacity is not None:
            q = quantity * scale.capacity / 100.0
        else:
            raise ValueError(f"tank {scale.tank!r} has no configured capacity to convert % to {scale.unit}"
                             f" (inventory.tanks): declare it in {scale.unit}")
    elif scale.unit is not None and same_unit(unit, scale.unit):
        q = quantity
    else:
        raise ValueError(f"unit {unit!r} is not a unit of tank {scale.tank!r}: declare it in {scale.accepted_units()}")
    bound = _bound(scale, top)
    if bound is not None and abs(q) > bound * (1 + 1e-9):
        raise ValueError(f"quantity {quantity:g} {unit} ({q:g} {scale.quantity_unit}) is more than tank"
                         f" {scale.tank!r} holds ({bound:g} {scale.quantity_unit})")
    if scale.max_rate is not None:
        rate = abs(q) / max(end - start, MIN_RATE_SECONDS) * 3600.0
        if rate > scale.max_rate * (1 + 1e-9):
            raise ValueError(f"rate {rate:g} {scale.quantity_unit}/h ({abs(q):g} {scale.quantity_unit} in"
                             f" {max(end - start, 0):g} s) is above the plausible maximum of tank {scale.tank!r},"
                             f" {scale.max_rate:g} {scale.quantity_unit}/h (inventory max_rate)")
    return q


def inventory_problems(cfg: InventorySite) -> list[str]:
    """Each tank is a level sensor listed once; a sensor not in % reports in the tank's unit; a
    capacity given to a loss detector too agrees with the tank's."""
    out: list[str] = []
    sensors = {s.id: s for s in cfg.sensors}
    seen: dict[str, int] = {}
    for i, t in enumerate(cfg.inventory.tanks):
        where = f"inventory.tanks[{i}]"
        s = sensors.get(t.sensor)
        if s is None:
            out.append(f"{where}.sensor: unknown sensor {t.sensor!r}")
            continue
        if s.kind != "level":
            out.append(f"{where}.sensor: {t.sensor!r} is a {s.kind} sensor, not a level sensor")
        if t.sensor in seen:
            out.append(f"{where}.sensor: {t.sensor!r} is already listed as inventory.tanks[{seen[t.sensor]}]")
        seen.setdefault(t.sensor, i)
        if is_percent(t.unit):
            out.append(f"{where}.unit: the capacity's unit is a quantity (t, kg, m3), not {t.unit!r}")
        elif not is_percent(s.unit) and not same_unit(s.unit, t.unit):
            out.append(f"{where}.unit: sensor {t.sensor!r} reports in {s.unit!r}, the tank's unit is {t.unit!r}")
        cap = _detector_capacity(cfg, s) if is_percent(s.unit) else None
        if cap is not None and not math.isclose(cap, t.capacity, rel_tol=1e-9):
            out.append(f"{where}.capacity: {t.capacity:g} disagrees with the loss detector's capacity {cap:g}"
                       f" for {t.sensor!r}: give it in one place")
    sec = cfg.inventory.security
    dets = {d.id for d in cfg.detectors}
    for i, d in enumerate(sec.detectors or []):
        if d not in dets:
            out.append(f"inventory.security.detectors[{i}]: unknown detector {d!r}")
    for i, s in enumerate(sec.toxic):
        if s not in sensors:
            out.append(f"inventory.security.toxic[{i}]: unknown sensor {s!r}")
    return out


def inventory_params(detector_type: str, params: dict[str, Any], sensors: list["Sensor"], cfg: InventorySite) -> dict[str, Any]:
    """``params`` of an inventory detector with the configured tanks' capacities filled in."""
    if detector_type not in INVENTORY_DETECTORS or not cfg.inventory.tanks:
        return params
    cap = params.get("capacity")
    per = dict(cap) if isinstance(cap, dict) else {}
    if isinstance(cap, (int, float)):
        return params  # one capacity for all its tanks: given explicitly
    tanks = {t.sensor: t for t in cfg.inventory.tanks}
    for s in sensors:
        if s.id in tanks and is_percent(s.unit):
            per.setdefault(s.id, tanks[s.id].capacity)
    return {**params, "capacity": per} if per else params
