"""plantwatch's Grafana objects as files: the dashboards of ``dashboards/json``, the data sources
and alert rules of ``dashboards/provisioning``, the SQL they run, and the site-specific copies
``plantwatch grafana render`` writes for file provisioning (console URL, time zone).

:mod:`.grafana` pushes the same objects through Grafana's HTTP API.
"""
from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from .grafana_macros import interpolate_provisioning_value


class GrafanaPushError(RuntimeError):
    """Push failed; the message says why in words an operator can act on."""


#: dashboards/ of a source checkout (the package is installed editable from it); override with
#: ``--dir`` or PLANTWATCH_DASHBOARDS_DIR.
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "dashboards"
PG_TYPES = ("grafana-postgresql-datasource", "postgres")
#: the colour of each alarm priority, the same on every dashboard (value mappings of priority
#: names, and fields named by priority); the tests hold the dashboards to it
PRIORITY_COLOURS = {"critical": "red", "high": "orange", "medium": "yellow", "low": "blue"}
_ENV_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class GrafanaPushError(RuntimeError):
    """Push failed; the message says why in words an operator can act on."""


# --- loading ----------------------------------------------------------------------------------

def dashboards_dir(path: str | Path | None = None) -> Path:
    d = Path(path or os.environ.get("PLANTWATCH_DASHBOARDS_DIR") or DEFAULT_DIR)
    if not (d / "json").is_dir() or not (d / "provisioning").is_dir():
        raise GrafanaPushError(f"{d} is not a plantwatch dashboards folder (no json/ and provisioning/ in it); "
                               "pass --dir or set PLANTWATCH_DASHBOARDS_DIR")
    return d


def load_dashboards(root: str | Path | None = None) -> list[tuple[Path, dict]]:
    """Every dashboard JSON file, sorted by name."""
    out = []
    for f in sorted((dashboards_dir(root) / "json").glob("*.json")):
        try:
            out.append((f, json.loads(f.read_text(encoding="utf-8"))))
        except json.JSONDecodeError as e:
            raise GrafanaPushError(f"{f}: not valid JSON: {e}") from None
    return out


def _interpolate(obj: Any, env: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        return interpolate_provisioning_value(obj, env)
    if isinstance(obj, list):
        return [_interpolate(v, env) for v in obj]
    if isinstance(obj, dict):
        return {k: _interpolate(v, env) for k, v in obj.items()}
    return obj


def env_references(obj: Any) -> set[str]:
    """Names of environment variables a provisioning value refers to (``$$`` is a literal)."""
    if isinstance(obj, str):
        return {a or b for part in obj.split("$$") for a, b in _ENV_REF.findall(part)}
    if isinstance(obj, list):
        return set().union(*(env_references(v) for v in obj)) if obj else set()
    if isinstance(obj, dict):
        return set().union(*(env_references(v) for v in obj.values())) if obj else set()
    return set()


def load_datasources(root: str | Path | None = None, env: Mapping[str, str] | None = None,
                     *, require_env: bool = True) -> list[dict]:
    """Data sources of provisioning/datasources/*.yaml, with $VAR expanded as Grafana would."""
    env = os.environ if env is None else env
    out = []
    for f in sorted((dashboards_dir(root) / "provisioning" / "datasources").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for ds in doc.get("datasources") or []:
            missing = sorted(n for n in env_references(ds) if n not in env)
            if missing and require_env:
                raise GrafanaPushError(f"{f}: data source {ds.get('name')!r} needs environment variable(s) "
                                       f"{', '.join(missing)}")
            out.append(_interpolate(ds, env))
    return out


def load_rule_groups(root: str | Path | None = None) -> list[dict]:
    """Rule groups of provisioning/alerting/rules.yaml (the file contains no $ to expand)."""
    f = dashboards_dir(root) / "provisioning" / "alerting" / "rules.yaml"
    doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    return list(doc.get("groups") or [])


_DUR = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DUR_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(s: str | int | float | None) -> float:
    """Prometheus model.Duration ("1h30m", "0s") in seconds; numbers are seconds."""
    if s is None or s == "":
        return 0.0
    if isinstance(s, (int, float)):
        return float(s)
    s = s.strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DUR.match(s, pos)
        if not m:
            raise ValueError(f"not a duration: {s!r}")
        total += int(m.group(1)) * _DUR_S[m.group(2)]
        pos = m.end()
    return total


def alert_rule_payloads(groups: Sequence[dict], folder_uid: str) -> list[dict]:
    """The ProvisionedAlertRule bodies (HTTP API field names) for the provisioning-file rules."""
    out = []
    for g in groups:
        for r in g.get("rules") or []:
            out.append({
                "uid": r["uid"],
                "orgID": int(g.get("orgId") or 1),
                "folderUID": folder_uid,
                "ruleGroup": g["name"],
                "title": r["title"],
                "condition": r["condition"],
                "data": [{
                    "refId": q["refId"],
                    "queryType": q.get("queryType", ""),
                    "relativeTimeRange": {"from": int((q.get("relativeTimeRange") or {}).get("from", 0)),
                                          "to": int((q.get("relativeTimeRange") or {}).get("to", 0))},
                    "datasourceUid": q["datasourceUid"],
                    "model": q["model"],
                } for q in r["data"]],
                "noDataState": r.get("noDataState", "NoData"),
                "execErrState": r.get("execErrState", "Error"),
                "for": r.get("for", "0s"),
                "keep_firing_for": r.get("keepFiringFor", "0s"),
                "annotations": dict(r.get("annotations") or {}),
                "labels": dict(r.get("labels") or {}),
                "isPaused": bool(r.get("isPaused", False)),
            })
    return out


@dataclass(frozen=True)
class SqlQuery:
    """One SQL query Grafana runs against the PostgreSQL data source."""

    where: str        # "plant-overview.json: panel 'Active alarms' A"
    kind: str         # panel | annotation | variable | alert
    sql: str          # rawSql as written (macros and variables not expanded)
    format: str       # time_series | table
    dashboard: dict | None = None
    panel: dict | None = None


def _is_pg(ds: Any, default_pg: bool) -> bool:
    if isinstance(ds, dict):
        return ds.get("type") in PG_TYPES or ds.get("uid") == "plantwatch-pg"
    return default_pg if ds is None else False


def iter_sql_queries(dashboards: Sequence[tuple[Path, dict]], rule_groups: Sequence[dict] = ()) -> Iterator[SqlQuery]:
    """Every SQL query of every panel, annotation, query variable and alert rule."""
    for path, d in dashboards:
        name = path.name
        for v in (d.get("templating") or {}).get("list") or []:
            if v.get("type") == "query" and _is_pg(v.get("datasource"), False):
                q = v.get("query")
                sql = q.get("rawSql") if isinstance(q, dict) else q
                yield SqlQuery(f"{name}: variable {v['name']!r}", "variable", sql, "table", d)
        for a in (d.get("annotations") or {}).get("list") or []:
            if _is_pg(a.get("datasource"), False) and a.get("target"):
                yield SqlQuery(f"{name}: annotation {a['name']!r}", "annotation", a["target"]["rawSql"],
                               a["target"].get("format", "table"), d)
        for p in _panels(d.get("panels") or []):
            for t in p.get("targets") or []:
                if _is_pg(t.get("datasource") or p.get("datasource"), False):
                    yield SqlQuery(f"{name}: panel {p.get('title')!r} {t.get('refId')}", "panel", t["rawSql"],
                                   t.get("format", "time_series"), d, p)
    for g in rule_groups:
        for r in g.get("rules") or []:
            for q in r.get("data") or []:
                if q.get("datasourceUid") == "plantwatch-pg":
                    yield SqlQuery(f"rules.yaml: rule {r['uid']!r} {q['refId']}", "alert", q["model"]["rawSql"],
                                   q["model"].get("format", "time_series"))


def iter_panels(panels: list[dict]) -> Iterator[dict]:
    """Every panel, including those inside collapsed rows."""
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels") or [])  # collapsed rows hold their panels


_panels = iter_panels


def with_console_url(dashboard: dict, console_url: str) -> dict:
    """A copy of ``dashboard`` whose ``console_url`` constant is ``console_url``."""
    u = urlparse(console_url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise GrafanaPushError(f"not a console URL: {console_url!r} (expected http(s)://host[:port][/path])")
    d = copy.deepcopy(dashboard)
    for v in (d.get("templating") or {}).get("list") or []:
        if v.get("name") == "console_url":
            v["query"] = console_url.rstrip("/")
    return d

#: every dashboard shows time in UTC, like the console, the CLI and the reports; a site that wants
#: its local time renders or pushes them with ``--timezone browser`` (or an IANA name)
DEFAULT_TIMEZONE = "utc"


def with_timezone(dashboard: dict, timezone: str) -> dict:
    """A copy of ``dashboard`` shown in ``timezone`` ("utc", "browser" or an IANA name such as
    "Europe/Berlin"), and saying so in its description."""
    if not timezone or not re.fullmatch(r"utc|browser|[A-Za-z_]+(/[A-Za-z0-9_+\-]+)*", timezone):
        raise GrafanaPushError(f"not a time zone: {timezone!r} (utc, browser or an IANA name such as Europe/Berlin)")
    d = copy.deepcopy(dashboard)
    d["timezone"] = timezone
    said = "the viewer's browser time" if timezone == "browser" else "UTC" if timezone == "utc" else timezone
    desc = re.sub(r"\s*Times are shown in [^.]*\.$", "", d.get("description") or "")
    d["description"] = (desc + " " if desc else "") + f"Times are shown in {said}."
    return d


def render(out_dir: str | Path, *, console_url: str | None = None, timezone: str = DEFAULT_TIMEZONE,
           root: str | Path | None = None) -> list[Path]:
    """Write every dashboard into ``out_dir`` with the site's console URL and time zone (for
    Grafana's file provisioning); returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, d in load_dashboards(root):
        if console_url is not None:
            d = with_console_url(d, console_url)
        d = with_timezone(d, timezone)
        target = out / path.name
        target.write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
        written.append(target)
    return written
