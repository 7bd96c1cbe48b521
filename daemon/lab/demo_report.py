"""The demo's scoring table: injected incidents against the alarms plantwatch raised.

``match_alarms(truth, alarms)`` is pure (no database): it takes the simulator's ground truth and a
list of alarm raises and says, for each incident, whether it was detected, when, how long after
it started and by which sensors and detectors; every alarm that no incident explains is a false
alarm. ``fetch_report(conn, truth)`` reads the raises from the database
(:mod:`plantwatch.connectors.demo_queries`) and ``render_report`` prints the tables with rich.

Matching rules (``lead`` and ``margin`` in seconds):

* an alarm **detects** an incident when it is on one of the incident's ``sensors`` (those that
  should alarm), its condition is one of the incident's ``conditions`` (when given: ``stale``
  for a silent sensor), and it is raised in ``[start - lead, end + settle + margin]``;
* an alarm is **explained** by an incident when it is on one of its ``sensors`` or ``affected``
  sensors within that window (a robust z-score alarm on a detector the leak reached without
  passing its limit is not false);
* a silence alarm (``stale``, ``comm_lost``) raised after the simulated run ended (``t0 +
  duration``) is the detectors seeing the simulator stop, not a false alarm: it is listed apart
  (``after_run``);
* any other alarm is **false**: outside every incident window, or on a sensor no incident touched.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

#: seconds an alarm may precede an incident's recorded start and still count (clock skew)
DEFAULT_LEAD = 2.0
#: seconds after an incident's end (+ settle) within which its alarms still count
DEFAULT_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class TruthIncident:
    id: str
    kind: str
    start: float
    end: float | None
    sensors: tuple[str, ...]
    affected: tuple[str, ...] = ()
    description: str = ""
    area: str | None = None
    settle: float = 0.0
    conditions: tuple[str, ...] | None = None
    magnitude: float | None = None

    def window(self, lead: float, margin: float) -> tuple[float, float]:
        end = math.inf if self.end is None else self.end + self.settle + margin
        return self.start - lead, end


@dataclass(frozen=True, slots=True)
class Truth:
    t0: float | None
    incidents: tuple[TruthIncident, ...]
    site: str = ""
    scenario: str = ""
    duration: float | None = None  # seconds the simulator published from t0

    @property
    def end(self) -> float | None:
        """When the simulator stopped publishing (None when not known)."""
        return None if self.t0 is None or self.duration is None else self.t0 + self.duration


#: conditions that mean "nothing arrives": after the simulated run they describe its end
SILENCE = ("stale", "comm_lost")


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """One alarm raise (or escalation) of a detector on a sensor."""

    time: float  # Unix seconds
    sensor: str
    detector_id: str
    condition: str
    severity: str = ""
    area: str = ""
    cleared: float | None = None

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "AlarmRow":
        t = m["time"]
        return cls(time=t.timestamp() if isinstance(t, datetime) else float(t), sensor=str(m["sensor"]),
                   detector_id=str(m["detector_id"]), condition=str(m["condition"]),
                   severity=str(m.get("severity") or ""), area=str(m.get("area") or ""),
                   cleared=m.get("cleared"))


@dataclass(slots=True)
class IncidentResult:
    incident: TruthIncident
    detected: bool
    first_alarm: float | None  # Unix seconds of the first detecting alarm
    delay: float | None  # first_alarm - start
    detections: list[AlarmRow]  # alarms that detect the incident
    related: list[AlarmRow]  # other alarms the incident explains
    missed: list[str]  # sensors that should have alarmed and did not
    why: dict[str, str] = field(default_factory=dict)  # missed sensor -> why (daemon/lab/demo_explain.py)

    @property
    def sensors_alarmed(self) -> list[str]:
        return sorted({a.sensor for a in self.detections})

    @property
    def detectors(self) -> list[str]:
        return sorted({a.detector_id for a in self.detections})


@dataclass(slots=True)
class DemoReport:
    truth: Truth
    results: list[IncidentResult]
    false_alarms: list[AlarmRow]
    total_alarms: int
    lead: float = DEFAULT_LEAD
    margin: float = DEFAULT_MARGIN
    source: str = "alarms"
    after_run: list[AlarmRow] = field(default_factory=list)  # silence alarms once the simulator stopped

    @property
    def detected(self) -> int:
        return sum(r.detected for r in self.results)

    def result(self, incident_id: str) -> IncidentResult:
        for r in self.results:
            if r.incident.id == incident_id:
                return r
        raise KeyError(incident_id)

    def summary(self) -> dict[str, Any]:
        """Plain-data summary (for JSON output and tests)."""
        return {
            "incidents": len(self.results),
            "detected": self.detected,
            "false_alarms": len(self.false_alarms),
            "total_alarms": self.total_alarms,
            "rows": [{"id": r.incident.id, "kind": r.incident.kind, "detected": r.detected,
                      "first_alarm": r.first_alarm, "delay": r.delay, "sensors": r.sensors_alarmed,
                      "detectors": r.detectors, "missed": r.missed, "why": r.why} for r in self.results],
            "false": [{"time": a.time, "sensor": a.sensor, "detector_id": a.detector_id,
                       "condition": a.condition} for a in self.false_alarms],
        }


# --- truth ------------------------------------------------------------------------------------
def parse_truth(data: Mapping[str, Any]) -> Truth:
    incs = []
    for e in data.get("incidents", []):
        conds = e.get("conditions")
        incs.append(TruthIncident(
            id=str(e["id"]), kind=str(e["kind"]), start=float(e["start"]),
            end=None if e.get("end") is None else float(e["end"]),
            sensors=tuple(e.get("sensors") or ()), affected=tuple(e.get("affected") or ()),
            description=str(e.get("description") or ""), area=e.get("area"),
            settle=float(e.get("settle") or 0.0), conditions=None if conds is None else tuple(conds),
            magnitude=e.get("magnitude")))
    return Truth(t0=data.get("t0"), incidents=tuple(incs), site=str(data.get("site") or ""),
                 scenario=str(data.get("scenario") or ""),
                 duration=None if data.get("duration") is None else float(data["duration"]))


def load_truth(path: str | Path) -> Truth:
    return parse_truth(json.loads(Path(path).read_text(encoding="utf-8")))


# --- matching ---------------------------------------------------------------------------------
def match_alarms(truth: Truth | Mapping[str, Any], alarms: Iterable[AlarmRow | Mapping[str, Any]], *,
                 lead: float = DEFAULT_LEAD, margin: float = DEFAULT_MARGIN, source: str = "alarms") -> DemoReport:
    """Score alarm raises against the ground truth (pure; see the module doc for the rules)."""
    if not isinstance(truth, Truth):
        truth = parse_truth(truth)
    rows = sorted((a if isinstance(a, AlarmRow) else AlarmRow.from_mapping(a) for a in alarms),
                  key=lambda a: (a.time, a.detector_id, a.sensor))
    explained = [False] * len(rows)
    results: list[IncidentResult] = []
    for inc in truth.incidents:
        lo, hi = inc.window(lead, margin)
        should = set(inc.sensors)
        touched = should | set(inc.affected)
        detections: list[AlarmRow] = []
        related: list[AlarmRow] = []
        for k, a in enumerate(rows):
            if not (lo <= a.time <= hi) or a.sensor not in touched:
                continue
            explained[k] = True
            if a.sensor in should and (inc.conditions is None or a.condition in inc.conditions):
                detections.append(a)
            else:
                related.append(a)
        first = detections[0].time if detections else None
        alarmed = {a.sensor for a in detections}
        results.append(IncidentResult(
            incident=inc, detected=bool(detections), first_alarm=first,
            delay=None if first is None else first - inc.start, detections=detections, related=related,
            missed=[s for s in inc.sensors if s not in alarmed]))
    end = truth.end
    after = [a for a, ok in zip(rows, explained)
             if not ok and end is not None and a.time > end and a.condition in SILENCE]
    false = [a for a, ok in zip(rows, explained) if not ok and a not in after]
    return DemoReport(truth=truth, results=results, false_alarms=false, total_alarms=len(rows), lead=lead,
                      margin=margin, source=source, after_run=after)


# --- database ---------------------------------------------------------------------------------
async def fetch_report(conn: Any, truth: Truth | Mapping[str, Any] | str | Path, *, lead: float = DEFAULT_LEAD,
                       margin: float = DEFAULT_MARGIN, until: float | None = None,
                       source: str = "alarms") -> DemoReport:
    """Read alarm raises (``source="alarms"``) or detector events (``"events"``) from the database
    over the run's span and score them. ``until`` defaults to the last incident's window end or now.
    Why a missed incident was missed is :func:`.demo_explain.explain`'s to say."""
    from plantwatch.connectors import demo_queries

    if isinstance(truth, (str, Path)):
        truth = load_truth(truth)
    elif not isinstance(truth, Truth):
        truth = parse_truth(truth)
    starts = [i.start for i in truth.incidents]
    since = (truth.t0 if truth.t0 is not None else min(starts, default=0.0)) - 60.0
    if until is None:  # everything recorded so far (a sped-up run may stamp readings ahead of now)
        ends = [e for e in (i.window(lead, margin)[1] for i in truth.incidents) if math.isfinite(e)]
        until = max([datetime.now(timezone.utc).timestamp()] + ends) + 3600.0
    if source == "events":
        rows = await demo_queries.fetch_events(conn, since, until)
    elif source == "alarms":
        rows = await demo_queries.fetch_alarm_raises(conn, since, until)
    else:
        raise ValueError(f"source must be 'alarms' or 'events', not {source!r}")
    return match_alarms(truth, rows, lead=lead, margin=margin, source=source)


# --- rendering --------------------------------------------------------------------------------
def _when(t: float | None, t0: float | None) -> str:
    """Relative to the run's start when known (``+26.3 s``), else the UTC clock time."""
    if t is None:
        return "—"
    if t0 is not None:
        return f"+{t - t0:.1f} s"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%H:%M:%S")


def report_tables(report: DemoReport):
    """The rich tables: incidents, then false alarms (when there are any)."""
    from rich.table import Table

    t0 = report.truth.t0
    title = (f"plantwatch demo: {report.detected}/{len(report.results)} incidents detected, "
             f"{len(report.false_alarms)} false alarm(s) among {report.total_alarms} {report.source}")
    caption = (f"times from the run's start, {datetime.fromtimestamp(t0, tz=timezone.utc):%Y-%m-%d %H:%M:%S} UTC; "
               if t0 is not None else "times UTC; ")
    caption += f"alarms count from {report.lead:g} s before an incident to {report.margin:g} s after its effects end"
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    table.add_column("incident", no_wrap=True)
    table.add_column("kind")
    table.add_column("start", justify="right", no_wrap=True)
    table.add_column("detected", justify="center")
    table.add_column("first alarm", justify="right", no_wrap=True)
    table.add_column("delay", justify="right", no_wrap=True)
    table.add_column("alarmed: conditions")
    table.add_column("detectors")
    table.add_column("missed, and why")
    for r in report.results:
        inc = r.incident
        by_sensor: dict[str, list[str]] = {}
        for a in r.detections:
            conds = by_sensor.setdefault(a.sensor, [])
            if a.condition not in conds:
                conds.append(a.condition)
        table.add_row(
            inc.id,
            inc.kind.replace("_", " "),
            _when(inc.start, t0),
            "[green]yes[/green]" if r.detected else "[red]no[/red]",
            _when(r.first_alarm, t0),
            "—" if r.delay is None else f"{r.delay:.1f} s",
            "\n".join(f"{s}: {', '.join(c)}" for s, c in by_sensor.items()) or "—",
            "\n".join(r.detectors) or "—",
            "\n".join(f"{m}: {r.why[m]}" if m in r.why else m for m in r.missed) or "—",
        )
    if report.after_run:
        table.caption += (f"; after the simulator stopped, {len(report.after_run)} silence alarm(s) "
                          f"({', '.join(sorted({a.condition for a in report.after_run}))}) saw it stop: not counted")
    tables = [table]
    if report.false_alarms:
        fa = Table(title=f"false alarms ({len(report.false_alarms)})", title_justify="left")
        for col in ("time", "sensor", "detector", "condition", "severity"):
            fa.add_column(col)
        for a in report.false_alarms:
            fa.add_row(_when(a.time, t0), a.sensor, a.detector_id, a.condition, a.severity)
        tables.append(fa)
    return tables


def render_report(report: DemoReport, console: Any = None) -> None:
    """Print the report's tables (to ``console``, a rich Console; stdout by default)."""
    from rich.console import Console

    console = console or Console()
    for t in report_tables(report):
        console.print(t)
    if not report.false_alarms:
        console.print("[green]no false alarms[/green]")
