"""Self-contained HTML incident reports for inspectors.

One file, no external requests: plots are rendered by matplotlib to SVG (text as paths) and
inlined. Contents: summary, the readings of every involved sensor around the incident with the
limits in force and the alarm spans marked, robot-inspection readings on the site map, the
timeline of alarm changes and operator actions, the detector configuration that was active
(the part of ``config_versions`` without credentials, as YAML), the audit entries that vouch for
it, the chain head and the slice digests of the readings it shows — embedded as JSON too, so
that ``plantwatch audit verify --export FILE --report REPORT`` checks a saved report offline.

For the demo and other callers::

    from plantwatch.daemon.alarms.report import latest_incident_for, write_incident_report
    iid = await latest_incident_for(dsn, ["G3", "G4"])
    await write_incident_report(dsn, iid, "incident.html")

(``*_sync`` variants run their own event loop.)
"""
from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any, Sequence

from plantwatch.connectors import incident_facts
from plantwatch.connectors.alarm_records import AlarmRecords
from plantwatch.connectors.incident_facts import MAX_POINTS, PAD  # noqa: F401 - the report's window
from plantwatch.connectors.report_record import embed
from plantwatch.connectors.seal import iso
from plantwatch.daemon.alarms.report_config import _config, detectors_yaml, limit_of
from plantwatch.daemon.alarms.report_plots import _e, _fmt, _readings_plot, _robot_maps, _timeline_plot


def near_the_incident(d: dict[str, Any]) -> dict[str, Any]:
    """The store's facts (``connectors/incident_facts.py``) with the robot readings kept to
    those in an involved area or within the config's robot radius of an involved sensor."""
    inc, cfg, sensors = d["incident"], d["config"], d["sensors"]
    involved = [t for t in inc["sensors"] if t in sensors]
    robot = d["robot"]
    loaded = _config(cfg["content"]) if cfg and cfg["content"] else None
    radius = loaded.alarms.incidents.robot_radius if loaded else 30.0
    pts = [(sensors[t]["x"], sensors[t]["y"]) for t in involved if sensors[t]["x"] is not None]
    robot = [r for r in robot if r["area_id"] in inc["areas"]
             or any(math.hypot(r["x"] - x, r["y"] - y) <= radius for x, y in pts)]
    return {**d, "robot": robot, "radius": radius}


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#1d232b}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e3e6ea;padding:.25em .5em;text-align:left;
vertical-align:top;font-size:13px}th{background:#eceff3}pre{background:#f6f7f9;padding:.8em;overflow:auto;font-size:12px}
.plot svg{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:13px;color:#445}.muted{color:#667}code{font-size:12px;word-break:break-all}"""


def record_of(d: dict[str, Any]) -> dict[str, Any]:
    """What the report records about the chain (``connectors/report_record.py``): the head, the
    entries about the incident, the slice digests covering its readings, and its facts."""
    inc, head = d["incident"], d["head"] or {"seq": 0, "hash": ""}
    return {"head": {"seq": head["seq"], "hash": head["hash"]},
            "entries": [{"seq": r["seq"], "ref": r["ref"], "hash": r["hash"]} for r in d["audit"]],
            "slices": d.get("slices", []),
            "facts": {"id": inc["id"], "title": inc["title"], "cause_alarm_id": inc["cause_alarm_id"],
                      "members": sorted({(a["alarm_id"], a["role"]) for a in inc["alarms"]})}}


def _robot_section(d: dict[str, Any]) -> str:
    """The robot readings that matter — of the involved channels within the incident window — as
    rows, then one summary row per channel for the rest (count and range)."""
    inc = d["incident"]
    t_a, t_b = inc["started_at"], d["t_end"]
    keep = [r for r in d["robot"] if r["tag"] in inc["sensors"] and t_a <= r["t"] <= t_b]
    rows = "".join(f"<tr><td>{_fmt(r['t'])}</td><td>{_e(r['tag'])}</td><td>{r['value']:.3g} {_e(r['unit'])}</td>"
                   f"<td>{r['x']:.1f}, {r['y']:.1f}</td><td>{_e(r['area_id'])}</td></tr>" for r in keep[:500])
    rest: dict[str, list[dict[str, Any]]] = {}
    for r in d["robot"]:
        if not (r["tag"] in inc["sensors"] and t_a <= r["t"] <= t_b):
            rest.setdefault(r["tag"], []).append(r)
    summary = "".join(f'<tr class="summary"><td colspan="5">{_e(tag)}: {len(rs)} more reading(s) not listed'
                      f" ({'outside the incident' if tag in inc['sensors'] else 'a channel not involved'}),"
                      f" {min(x['value'] for x in rs):.3g} – {max(x['value'] for x in rs):.3g} {_e(rs[0]['unit'])}</td></tr>"
                      for tag, rs in sorted(rest.items()))
    return rows + summary


def render(d: dict[str, Any]) -> str:
    inc = d["incident"]
    cfg = d["config"]
    cfg_text = cfg["content"] if cfg else None
    cause = next((a for a in inc["alarms"] if a["role"] == "cause"), None)

    def value(a: dict[str, Any]) -> str:
        unit = d["sensors"].get(a["sensor"], {}).get("unit", "")
        lim = limit_of(cfg_text, a["sensor"], a["detector_id"], a["condition"])
        v = "—" if a.get("value") is None else f"{a['value']:.4g} {unit}"
        return f"<td>{_e(v)}</td><td>{_e('—' if lim is None else f'{lim:g} {unit}')}</td>"
    rows_alarms = "".join(
        f"<tr><td>{_e(a['role'])}</td><td>{_fmt(a['raised_at'])}</td><td>{_e(a['sensor'])}</td><td>{_e(a['area'])}</td>"
        f"<td>{_e(a['detector_id'])}</td><td>{_e(a['condition'])}</td>{value(a)}<td>{_e(a['severity'])}</td>"
        f"<td>{_e(a['priority'])}</td><td>{_e(a['state'])}</td></tr>" for a in inc["alarms"])
    # in the order of the alarm record (audit sequence), with both times: reading and processing
    sensor_of = {a["alarm_id"]: a["sensor"] for a in inc["alarms"]}
    events = [(c.get("seq"), c["time"], c.get("recorded_at"), "alarm change", f"{c['sensor']} · {c['detector_id']}",
               f"{c['from_state']} → {c['to_state']} ({c['condition']})",
               f"{c['cause'].get('by', '')} {c['cause'].get('actor') or ''}".strip()) if c["kind"] == "change" else
              (c.get("seq"), c["time"], c.get("recorded_at"), f"operator: {c['action']}",
               sensor_of.get(c["alarm_id"], ""), c["reason"], f"{c['actor']} ({c['role']})")
              for c in inc["timeline"]]
    rows_events = "".join(f"<tr><td>{_e(q if q is not None else '')}</td><td>{_fmt(t)}</td><td>{_fmt(r) if r else ''}</td>"
                          f"<td>{_e(k)}</td><td>{_e(s)}</td><td>{_e(w)}</td><td>{_e(b)}</td></tr>"
                          for q, t, r, k, s, w, b in events)
    robot_rows = _robot_section(d)
    audit_rows = "".join(f"<tr><td>{r['seq']}</td><td>{_e(r['time'].isoformat())}</td><td>{_e(r['kind'])}</td>"
                         f"<td>{_e(r['ref'])}</td><td><code>{_e(r['hash'])}</code></td></tr>" for r in d["audit"])
    slice_rows = "".join(f"<tr><td>{_e(iso(s['start']))}</td><td>{_e(s['table'])}</td><td>{_e(s['sensor'])}</td>"
                         f"<td>{s['n']}</td><td><code>{_e(s['digest'])}</code></td><td>{s['seq']}</td></tr>"
                         for s in d.get("slices", []))
    head = d["head"] or {}
    sealed = d.get("sealed_until")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Incident {inc['id']}: {_e(inc['title'])}</title>
<meta name="generator" content="plantwatch"><style>{CSS}</style></head><body>
<h1 id="title">Incident {inc['id']}: {_e(inc['title'])}</h1>
<table id="summary">
<tr><th>site</th><td>{_e(inc['site_id'])}</td></tr>
<tr><th>start</th><td>{_fmt(inc['started_at'])}</td></tr>
<tr><th>end</th><td>{_fmt(inc['ended_at']) if inc['ended_at'] else 'ongoing at report time'}</td></tr>
<tr><th>cause</th><td>{_e(cause['sensor'] + ' · ' + cause['detector_id'] + ' · ' + cause['condition']) if cause else '—'}</td></tr>
<tr><th>areas</th><td>{_e(', '.join(inc['areas']))}</td></tr>
<tr><th>sensors</th><td>{_e(', '.join(inc['sensors']))}</td></tr>
<tr><th>alarms</th><td>{len({a['alarm_id'] for a in inc['alarms']})}{' · raised during an alarm flood' if inc['flood'] else ''}</td></tr>
<tr><th>configuration</th><td><code>{_e(inc['config_hash'] or 'not recorded')}</code>{(' · first loaded ' + _e(cfg['first_loaded_at'].isoformat())) if cfg else ''}</td></tr>
<tr><th>report written</th><td>{_fmt(time.time())}</td></tr>
</table>
<h2>Readings of the involved sensors</h2>
<div class="plot" id="plot-readings">{_readings_plot(d)}</div>
<h2>Alarms</h2>
<table id="alarms"><tr><th>role</th><th>raised</th><th>sensor</th><th>area</th><th>detector</th><th>condition</th>
<th>value at alarm</th><th>limit</th><th>severity</th><th>priority</th><th>state now</th></tr>{rows_alarms}</table>
<h2>Timeline of alarms and operator actions</h2>
<p class="muted">In the order of the record (audit sequence #): <em>time</em> is when the reading was taken or the
action made, <em>processed</em> when plantwatch recorded it.</p>
<div class="plot" id="plot-timeline">{_timeline_plot(d)}</div>
<table id="timeline"><tr><th>#</th><th>time</th><th>processed</th><th>what</th><th>alarm</th><th>change / reason</th><th>by</th></tr>{rows_events}</table>
<h2>Robot inspection readings</h2>
<div class="plot" id="plot-map">{_robot_maps(d)}</div>
<p class="muted">Readings of the involved robot channels during the incident ({_fmt(inc['started_at'])} – {_fmt(d['t_end'])}).</p>
<table id="robot"><tr><th>time</th><th>channel</th><th>value</th><th>x, y</th><th>area</th></tr>{robot_rows}</table>
<h2>Detector configuration in force</h2>
<pre id="detectors">{_e(detectors_yaml(cfg_text, list(inc['sensors'])))}</pre>
<h2>Audit trail</h2>
<p>Entries of the tamper-evident log about this incident, its alarms and its configuration. Chain head at report time:
seq {head.get('seq')}, <code id="chain-head">{_e(head.get('hash'))}</code>; readings sealed up to
{_fmt(sealed / 1e6) if sealed else 'nothing yet'}. Check the database with <code>plantwatch audit verify</code>, and
this file offline against an export: <code>plantwatch audit verify --export FILE --report THIS.html</code>.</p>
<table id="audit"><tr><th>seq</th><th>time</th><th>kind</th><th>ref</th><th>hash</th></tr>{audit_rows}</table>
<h3>Sealed readings this report shows</h3>
<table id="slices"><tr><th>slice</th><th>table</th><th>sensor</th><th>rows</th><th>digest</th><th>seq</th></tr>{slice_rows}</table>
{embed(record_of(d))}
</body></html>
"""


async def incident_report_html(records: AlarmRecords, incident_id: int) -> str:
    """The report of an incident, from the store's alarm records (``LookupError`` if unknown)."""
    d = near_the_incident(await records.incident_facts(incident_id))
    return await asyncio.get_running_loop().run_in_executor(None, render, d)  # plotting is CPU work


async def write_incident_report(dsn: str, incident_id: int, out_path: str | Path) -> Path:
    """Write the self-contained HTML report of an incident; returns the path."""
    d = near_the_incident(await incident_facts.read(dsn, incident_id))
    text = await asyncio.get_running_loop().run_in_executor(None, render, d)
    p = Path(out_path)
    p.write_text(text, encoding="utf-8")
    return p


async def latest_incident_for(dsn: str, sensor_tags: Sequence[str] | None = None) -> int | None:
    """Id of the most recent incident that involves any of ``sensor_tags`` (any incident if
    none are given), or None."""
    return await incident_facts.latest(dsn, sensor_tags)


def write_incident_report_sync(dsn: str, incident_id: int, out_path: str | Path) -> Path:
    return asyncio.run(write_incident_report(dsn, incident_id, out_path))


def latest_incident_for_sync(dsn: str, sensor_tags: Sequence[str] | None = None) -> int | None:
    return asyncio.run(latest_incident_for(dsn, sensor_tags))
