"""Name → detector class registry (Telegraf's plugin registry, in Python).

A new detector is one module that subclasses :class:`~.base.Detector` and decorates itself with
``@register``; importing it (``detectors/__init__.py`` imports the built-in ones) is all the
wiring it needs. The config refers to detectors by ``type: <name>``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .base import Detector, DetectorParams, SensorInfo

REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    name = cls.name
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise ValueError(f"detector name {name!r} registered twice ({REGISTRY[name].__module__}, {cls.__module__})")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, DetectorParams)):
        raise TypeError(f"{cls.__name__}.Params must subclass DetectorParams")
    if cls.CONDITIONS[0] != "normal":
        raise TypeError(f"{cls.__name__}.CONDITIONS[0] must be 'normal'")
    REGISTRY[name] = cls
    return cls


def get(name: str) -> type[Detector]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector type {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def create(name: str, params: Mapping[str, Any] | DetectorParams, sensors: Sequence[SensorInfo]) -> Detector:
    """Build a detector from its registry name and raw (or validated) parameters."""
    cls = get(name)
    p = params if isinstance(params, cls.Params) else cls.Params.model_validate(dict(params))
    return cls(p, sensors)
