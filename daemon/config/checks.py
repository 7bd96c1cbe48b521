"""Config checks that look across sections: references between ids, and alarm levels against the
instruments' measuring ranges.

They run on the plain YAML data, not on the validated model, so that they still run when some
other part of the file fails schema validation: ``plantwatch config check`` then reports every
problem of the file in one go. Entries that are themselves malformed are skipped here (the schema
check reports them). Each problem is ``(path, message)`` with a key path such as
``("detectors", 2, "params", "high")``.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from plantwatch.detectors import REGISTRY
from plantwatch.detectors.compose import CompositionConfig

from plantwatch.daemon.config.sensors import Selector, Sensor

Problem = tuple[tuple[Any, ...], str]

#: lists whose entries carry an ``id``: problems name an entry by its id rather than its index
ID_LISTS: tuple[tuple[str, ...], ...] = (("sensors",), ("detectors",), ("compositions",), ("site", "areas"),
                                         ("alarms", "positions"))


def did_you_mean(name: Any, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def _list(data: Any, *keys: str) -> list[Any]:
    for k in keys:
        data = data.get(k) if isinstance(data, dict) else None
    return data if isinstance(data, list) else []


def _str_list(v: Any) -> list[str]:
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def _valid(model: type[BaseModel], data: Any) -> BaseModel | None:
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def entry_label(data: Any, path: tuple[Any, ...]) -> str | None:
    """The id naming ``path``'s entry when ``path`` is an entry of an id list with a unique id."""
    if len(path) < 2 or not isinstance(path[-1], int) or tuple(path[:-1]) not in ID_LISTS:
        return None
    items = _list(data, *path[:-1])
    if path[-1] >= len(items) or not isinstance(items[path[-1]], dict):
        return None
    ident = items[path[-1]].get("id")
    ids = [x.get("id") for x in items if isinstance(x, dict)]
    return ident if isinstance(ident, str) and ident and ids.count(ident) == 1 else None


def valid_sensors(data: Any) -> list[Any]:
    """The entries of ``sensors`` that pass schema validation, as models."""
    return [m for m in (_valid(Sensor, s) for s in _list(data, "sensors")) if m is not None]


def reference_problems(data: Any, valid: list[Any]) -> list[Problem]:
    """Duplicate ids and references to ids that do not exist (``valid``: :func:`valid_sensors`)."""
    if not isinstance(data, dict):
        return []
    out: list[Problem] = []
    area_entries = _list(data, "site", "areas")
    areas: dict[str, int] = {}
    area_collector: dict[str, Any] = {}
    for i, a in enumerate(area_entries):
        aid = a.get("id") if isinstance(a, dict) else None
        if isinstance(aid, str):
            if aid in areas:
                out.append((("site", "areas", i, "id"), f"duplicate area id {aid!r} (also site.areas[{areas[aid]}])"))
            areas.setdefault(aid, i)
            area_collector.setdefault(aid, a.get("collector"))
    sensors = [s for s in _list(data, "sensors") if isinstance(s, dict)]
    known: dict[str, int] = {}  # sensor id -> first position
    orphans: dict[str, list[str]] = {}  # area without a collector -> its sensors that name none
    for i, s in enumerate(_list(data, "sensors")):
        if not isinstance(s, dict):
            continue
        sid = s.get("id")
        if isinstance(sid, str):
            if sid in known:
                out.append((("sensors", i, "id"), f"duplicate sensor id {sid!r} (also sensors[{known[sid]}])"))
            known.setdefault(sid, i)
        if isinstance(s.get("area"), str) and s["area"] not in areas:
            out.append((("sensors", i, "area"), f"unknown area {s['area']!r}{did_you_mean(s['area'], areas)}"))
        elif isinstance(s.get("area"), str) and s.get("collector") is None and area_collector[s["area"]] is None:
            orphans.setdefault(s["area"], []).append(sid if isinstance(sid, str) else f"sensors[{i}]")
    for aid, names in orphans.items():  # once, at the area: the one place that fixes them all
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        out.append((("site", "areas", areas[aid]), f"area {aid!r} has no collector, and {len(names)} of its sensors"
                    f" name none ({shown}): set collector on the area, or on each of those sensors"))
    ids = list(known)
    for i, s in enumerate(_list(data, "sensors")):
        for n in _str_list(s.get("neighbours") if isinstance(s, dict) else None):
            if n not in known:
                out.append((("sensors", i, "neighbours"), f"unknown sensor {n!r}{did_you_mean(n, ids)}"))
    det_ids: dict[str, int] = {}
    conditions: dict[str, tuple[str, ...]] = {}
    for i, d in enumerate(_list(data, "detectors")):
        if not isinstance(d, dict):
            continue
        did = d.get("id")
        if isinstance(did, str):
            if did in det_ids:
                out.append((("detectors", i, "id"), f"duplicate detector id {did!r} (also detectors[{det_ids[did]}])"))
            det_ids.setdefault(did, i)
            if d.get("type") in REGISTRY and d.get("enabled", True) is not False:
                conditions[did] = REGISTRY[d["type"]].CONDITIONS
        sel = d.get("select") if isinstance(d.get("select"), dict) else {}
        bad = False
        for n in _str_list(sel.get("sensors")):
            if n not in known:
                bad = True
                out.append((("detectors", i, "select", "sensors"), f"unknown sensor {n!r}{did_you_mean(n, ids)}"))
        for a in _str_list(sel.get("areas")):
            if a not in areas:
                bad = True
                out.append((("detectors", i, "select", "areas"), f"unknown area {a!r}{did_you_mean(a, areas)}"))
        selector = _valid(Selector, sel)
        if not bad and selector is not None and len(valid) == len(sensors) \
                and not any(selector.matches(s) for s in valid):
            out.append((("detectors", i, "select"), "matches no sensor"))
    for i, r in enumerate(_list(data, "alarms", "suppress_when")):
        for side in ("alarms", "upstream"):
            ref = r.get(side) if isinstance(r, dict) else None
            if not isinstance(ref, dict):
                continue
            det = ref.get("detector")
            if isinstance(det, str) and det not in det_ids:
                out.append((("alarms", "suppress_when", i, side, "detector"),
                            f"unknown detector {det!r}{did_you_mean(det, det_ids)}"))
            for n in _str_list(ref.get("sensors")):
                if n not in known:
                    out.append((("alarms", "suppress_when", i, side, "sensors"), f"unknown sensor {n!r}{did_you_mean(n, ids)}"))
    for i, pos in enumerate(_list(data, "alarms", "positions")):
        for a in _str_list(pos.get("areas") if isinstance(pos, dict) else None):
            if a not in areas:
                out.append((("alarms", "positions", i, "areas"), f"unknown area {a!r}{did_you_mean(a, areas)}"))
    for i, c in enumerate(_list(data, "compositions")):
        if not isinstance(c, dict):
            continue
        if isinstance(c.get("id"), str) and c["id"] in det_ids:
            out.append((("compositions", i, "id"), f"{c['id']!r} is already a detector id"))
        comp = _valid(CompositionConfig, c)
        for problem in comp.check(conditions) if comp is not None else []:
            rel, _, msg = problem.partition(": ")
            path = ("compositions", i) + tuple(int(x) if x.isdigit() else x
                                               for x in rel.replace("[", ".").replace("]", "").split("."))
            if msg.startswith("unknown detector "):
                msg += did_you_mean(msg.removeprefix("unknown detector ").strip("'\""), conditions)
            out.append((path, msg))
    return out


def range_problems(data: Any, sensors: list[Any]) -> list[Problem]:
    """Alarm levels outside the measuring range of a sensor the detector watches (``sensors``:
    :func:`valid_sensors`): readings outside the range are rejected at ingest, so such a level
    is never crossed (or always is)."""
    out: list[Problem] = []
    for i, d in enumerate(_list(data, "detectors")):
        if not isinstance(d, dict) or d.get("type") not in REGISTRY:
            continue
        cls = REGISTRY[d["type"]]
        params = _valid(cls.Params, d.get("params", {}))
        selector = _valid(Selector, d.get("select"))
        if params is None or selector is None:
            continue
        watched = [s for s in sensors if selector.matches(s)]
        given = d.get("params") if isinstance(d.get("params"), Mapping) else {}
        for name, value, upper in cls.absolute_levels(params):
            groups: dict[tuple[float, float, str], list[str]] = {}
            for s in watched:
                if not s.range[0] <= value <= s.range[1]:
                    groups.setdefault((s.range[0], s.range[1], s.unit), []).append(s.id)
            for (lo, hi, unit), outside in groups.items():
                above = value > hi
                names = ", ".join(repr(s) for s in outside[:5]) + (f" and {len(outside) - 5} more" if len(outside) > 5 else "")
                what = "sensor" if len(outside) == 1 else f"{len(outside)} sensors"
                out.append((("detectors", i, "params", name if name in given else "preset"),
                            f"{name} = {value:g} is {'above' if above else 'below'} the measuring range of {what} "
                            f"{names} ({lo:g} to {hi:g} {unit}): readings outside the range are rejected, so this "
                            f"level {'can never be reached' if above == upper else 'would always be in alarm'}"))
    return out
