"""The config in force, as an incident report shows it: the limits each detector applies to a
sensor, and the detectors watching the involved sensors as readable YAML with the sensors'
descriptions. Read from the part of the config an inspector may read (no credentials)."""
from __future__ import annotations

import functools
from typing import Any

import yaml


@functools.lru_cache(maxsize=8)
def _config(text: str):
    from plantwatch.daemon.config.model import ConfigError, load_config_text
    try:
        return load_config_text(text, "config_versions", check_files=False)
    except (ConfigError, ValueError):  # an old config that no longer loads still gets a report
        return None


def limits(config_text: str | None, tag: str) -> tuple[list[tuple[str, float]], list[dict[str, Any]]]:
    """Limit lines for a sensor (``("h2s-limit high", 5.0)``: every absolute set point of the
    detectors watching it), and those detectors, from the config in force."""
    cfg = _config(config_text) if config_text else None
    sensor = next((s for s in cfg.sensors if s.id == tag), None) if cfg else None
    if sensor is None:
        return [], []
    from plantwatch.detectors import REGISTRY

    lines, dets = [], []
    for d in cfg.detectors:
        if d.select.matches(sensor):
            dets.append(d.model_dump(mode="json", exclude_defaults=True))
            if d.enabled:
                lines += [(f"{d.id} {k}", float(v)) for k, v, _ in REGISTRY[d.type].absolute_levels(d.validated_params())]
    return lines, dets


def limit_of(config_text: str | None, tag: str, detector_id: str, condition: str) -> float | None:
    """The set point of ``condition`` of detector ``detector_id`` on sensor ``tag`` (None: relative)."""
    return next((v for name, v in limits(config_text, tag)[0] if name == f"{detector_id} {condition}"), None)


def detectors_yaml(config_text: str | None, tags: list[str]) -> str:
    """The detectors watching ``tags`` and those sensors (with descriptions), as YAML."""
    cfg = _config(config_text) if config_text else None
    if cfg is None:
        return "# the configuration in force is not recorded (or no longer loads)\n"
    dets: dict[str, Any] = {}
    for tag in tags:
        for det in limits(config_text, tag)[1]:
            dets[det["id"]] = det
    sensors = [{k: v for k, v in s.model_dump(mode="json", exclude_defaults=True).items()} for s in cfg.sensors
               if s.id in tags]
    return yaml.safe_dump({"detectors": list(dets.values()), "sensors": sensors}, sort_keys=False,
                          allow_unicode=True, width=110)
