"""Does an edge collector's channel list agree with the site it publishes to?

A collector whose channels name a sensor the site does not have, give it another measuring range
or unit, or publish a sensor another collector owns, sends readings the daemon can only reject
(``unknown_sensor``, ``out_of_range``, ``wrong_collector``); a collector publishing under a site
or topic prefix no daemon reads loses them altogether. So the two are compared, from either side:

* ``plantwatch collect --site SITE.yaml`` and ``plantwatch config check`` compare the collect config
  with the site config file before anything runs: each disagreement is an error at the collect
  config's ``file:line:col`` (the site file's position of the sensor in the message);
* at run time the collector compares its channels with what the daemon announces it serves
  (:mod:`.site_status`: retained ``{prefix}/{site}/status/...`` topics) and logs the same problems.

A channel's ``range`` (or ``loop.range``) and ``unit`` are compared only when the channel gives
them. Sensors the site assigns to the collector that no channel reads are a note, not an error:
they go stale, which the daemon alarms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from plantwatch.daemon.collect.config import CollectConfig
from plantwatch.daemon.config.model import Config
from plantwatch.daemon.config.checks import did_you_mean
from plantwatch.daemon.config.loader import Located


@dataclass(frozen=True, slots=True)
class SiteSensor:
    kind: str
    unit: str
    range: tuple[float, float]
    collector: str
    where: str = ""  # "site.yaml:12:5" (a site file) or "" (a daemon's announcement)


@dataclass(slots=True)
class SiteView:
    """What a site serves, from its config file or from its daemon's announcement."""

    site: str
    source: str  # "site.yaml" or "the daemon's announcement"
    sensors: dict[str, SiteSensor]
    prefix: str | None = None  # the daemon's topic prefix, when known
    collectors: set[str] = field(default_factory=set)

    @classmethod
    def from_config(cls, cfg: Config, located: Located | None = None) -> "SiteView":
        sensors = {}
        for i, s in enumerate(cfg.sensors):
            where = located.where(("sensors", i)) if located is not None else ""
            sensors[s.id] = SiteSensor(s.kind, s.unit, (float(s.range[0]), float(s.range[1])), cfg.collector_of(s), where)
        return cls(cfg.site.id, located.source if located is not None else "the site config", sensors,
                   cfg.mqtt.topic_prefix if cfg.mqtt is not None else None, {x.collector for x in sensors.values()})

    @classmethod
    def from_announcement(cls, site: str, collector: str, registry: dict[str, Any],
                          served: dict[str, Any]) -> "SiteView":
        """From the daemon's retained ``status/registry`` and ``status/collectors/{collector}``."""
        sensors = {str(s["id"]): SiteSensor(str(s.get("kind", "")), str(s.get("unit", "")),
                                            (float(s["range"][0]), float(s["range"][1])), collector)
                   for s in served.get("sensors", [])}
        return cls(site, "the daemon's announcement", sensors, None, {str(c) for c in registry.get("collectors", [])})


def _loc(located: Located, path: tuple[Any, ...]) -> str:
    return located.where(path)


def agreement(cfg: CollectConfig, located: Located, site: SiteView, *,
              prefix: str | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes): each problem ``file:line:col: path: what`` in the collect config."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    if cfg.site != site.site:
        problems.append((("site",), f"site {cfg.site!r} is not {site.site!r}, the site of {site.source}: "
                                    "no daemon of that site would read these readings"))
    want_prefix = prefix if prefix is not None else site.prefix
    if want_prefix is not None and cfg.mqtt.topic_prefix != want_prefix:
        problems.append((("mqtt", "topic_prefix"), f"topic prefix {cfg.mqtt.topic_prefix!r} is not {want_prefix!r},"
                                                   f" the prefix of {site.source}: no daemon would read these readings"))
    read: set[str] = set()
    for i, src in enumerate(cfg.sources):
        for j, ch in enumerate(src.channels):
            at = ("sources", i, "channels", j)
            read.add(ch.sensor)
            known = site.sensors.get(ch.sensor)
            if known is None:
                hint = did_you_mean(ch.sensor, site.sensors)
                problems.append((at + ("sensor",), f"sensor {ch.sensor!r} is not in the sensor registry of site "
                                                   f"{site.site!r} ({site.source}){hint}: its readings would be "
                                                   "dead-lettered as unknown_sensor"))
                continue
            where = f" ({known.where})" if known.where else ""
            there = known.where or site.source
            if known.kind == "robot":
                problems.append((at + ("sensor",), f"sensor {ch.sensor!r} is a robot channel{where}: robot readings "
                                                   "carry a position and are not published by plantwatch collect"))
            if known.collector != cfg.collector:
                problems.append((at + ("sensor",), f"sensor {ch.sensor!r} is published by collector "
                                                   f"{known.collector!r} in site {site.site!r}{where}, not by "
                                                   f"{cfg.collector!r}: its readings would be rejected as "
                                                   "wrong_collector"))
            rng = ch.measuring_range
            if rng is not None and (float(rng[0]), float(rng[1])) != known.range:
                key = ("loop", "range") if ch.loop is not None else ("range",)
                problems.append((at + key, f"range [{rng[0]:g}, {rng[1]:g}] of sensor {ch.sensor!r} differs from "
                                           f"[{known.range[0]:g}, {known.range[1]:g}] {known.unit} in "
                                           f"{there}: its values would be misread, or rejected as out_of_range"))
            if ch.unit is not None and ch.unit.strip() != known.unit.strip():
                problems.append((at + ("unit",), f"unit {ch.unit!r} of sensor {ch.sensor!r} differs from "
                                                 f"{known.unit!r} in {there}"))
    out = [f"{_loc(located, p)}: {_path(cfg, p)}: {m}" for p, m in
           sorted(problems, key=lambda pm: _line(located, pm[0]))]
    unread = sorted(s for s, x in site.sensors.items() if x.collector == cfg.collector and x.kind != "robot"
                    and s not in read)
    notes = []
    if unread:
        notes.append(f"{located.source}: site {site.site!r} has sensors of collector {cfg.collector!r} that no "
                     f"channel reads (they will go stale): {', '.join(_first(unread))}")
    return out, notes


def _first(xs: list[str], n: int = 20) -> Iterable[str]:
    return xs[:n] + ([f"... {len(xs) - n} more"] if len(xs) > n else [])


def _line(located: Located, path: tuple[Any, ...]) -> tuple[int, int]:
    p = tuple(path)
    while p and p not in located.lines:
        p = p[:-1]
    return located.lines.get(p, (1, 1))


def _path(cfg: CollectConfig, path: tuple[Any, ...]) -> str:
    """``sources[gas-panel].channels[G0].range`` for ``("sources", 0, "channels", 0, "range")``."""
    if path[:1] != ("sources",) or len(path) < 2:
        return ".".join(str(p) for p in path)
    src = cfg.sources[path[1]]
    out = f"sources[{src.id}]"
    if len(path) >= 4:
        out += f".channels[{src.channels[path[3]].sensor}]"
    rest = path[4:]
    return out + "".join(f".{p}" for p in rest)


def load_site(path: str) -> tuple[Config, Located]:
    """The site config with its node positions (raises ConfigError)."""
    from plantwatch.daemon.config.model import ConfigError, parse_config
    from plantwatch.daemon.config.loader import ConfigSyntaxError, load_yaml_file

    try:
        located = load_yaml_file(path)
    except ConfigSyntaxError as e:
        raise ConfigError(str(path), [str(e)]) from None
    return parse_config(located), located


def check_against_site(cfg: CollectConfig, located: Located, site_path: str) -> list[str]:
    """Compare a collect config with a site config file: notes as returned, problems raised as
    ConfigError (from the collect config's file)."""
    from plantwatch.daemon.config.model import ConfigError

    site_cfg, site_located = load_site(site_path)
    problems, notes = agreement(cfg, located, SiteView.from_config(site_cfg, site_located))
    if problems:
        raise ConfigError(located.source, problems)
    return notes
