"""Self-contained HTML incident reports for inspectors.

One file, no external requests: plots are rendered by matplotlib to SVG (text as paths) and
inlined. Contents: summary, the readings of every involved sensor around the incident with the
limits in force and the alarm spans marked, robot-inspection readings on the site map, the
timeline of alarm changes and operator actions, the detector configuration that was active
(from ``config_versions``), and the audit entries that vouch for it.

For the demo and other callers::

    from plantwatch.daemon.alarms.report import latest_incident_for, write_incident_report
    iid = await latest_incident_for(dsn, ["G3", "G4"])
    await write_incident_report(dsn, iid, "incident.html")

(``*_sync`` variants run their own event loop.)
"""
from __future__ import annotations

import asyncio
import html
import io
import json
import math
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from plantwatch.connectors import incident_facts
from plantwatch.connectors.alarm_records import AlarmRecords
from plantwatch.connectors.incident_facts import MAX_POINTS, PAD  # noqa: F401 - the report's window


def _fmt(t: float | None) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "—"


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    s = buf.getvalue()
    s = s[s.index("<svg"):]  # drop the XML prolog and the DOCTYPE (it names an external DTD)
    return re.sub(r"\s*<metadata>.*?</metadata>", "", s, flags=re.S)  # creator/date: noise


def _subplots(*args, figsize, **kw):
    """A figure without pyplot (no global state: safe in a worker thread)."""
    import matplotlib
    from matplotlib.figure import Figure
    matplotlib.rcParams.update({"svg.fonttype": "path", "font.size": 9, "svg.hashsalt": "plantwatch"})
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kw)


def _limits(config_text: str | None, tag: str) -> tuple[list[tuple[str, float]], list[dict[str, Any]]]:
    """Limit lines for a sensor (``("h2s-limit high", 5.0)``: every absolute set point of the
    detectors watching it), and those detectors, from the config in force."""
    if not config_text:
        return [], []
    try:
        from plantwatch.daemon.config.model import load_config_text
        cfg = load_config_text(config_text, "config_versions")
    except Exception:  # noqa: BLE001 - an old config that no longer parses still gets a report
        return [], []
    sensor = next((s for s in cfg.sensors if s.id == tag), None)
    if sensor is None:
        return [], []
    from plantwatch.detectors import REGISTRY

    lines, dets = [], []
    for d in cfg.detectors:
        if d.select.matches(sensor):
            dets.append(d.model_dump(mode="json"))
            if d.enabled:
                lines += [(f"{d.id} {k}", float(v)) for k, v, _ in REGISTRY[d.type].absolute_levels(d.validated_params())]
    return lines, dets


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _utc_time_axis(ax, t0: float, t1: float, what: str) -> None:
    """Clock times in UTC on the x axis, whatever the machine's time zone, labelled so."""
    import matplotlib.dates as mdates
    locator = mdates.AutoDateLocator(tz=timezone.utc)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc, show_offset=True))
    ax.set_xlim(_utc(t0), _utc(t1))
    ax.set_xlabel(f"time (UTC){what}")


def _spans(changes: list[dict[str, Any]], t_end: float) -> dict[int, list[tuple[float, float, str]]]:
    """Active spans per alarm from its change history (condition not normal)."""
    out: dict[int, list[tuple[float, float, str]]] = {}
    open_: dict[int, tuple[float, str]] = {}
    for c in changes:
        aid = c["alarm_id"]
        if c["condition"] != "normal":
            if aid not in open_:
                open_[aid] = (c["time"], c["condition"])
        elif aid in open_:
            t0, cond = open_.pop(aid)
            out.setdefault(aid, []).append((t0, c["time"], cond))
    for aid, (t0, cond) in open_.items():
        out.setdefault(aid, []).append((t0, t_end, cond))
    return out


def near_the_incident(d: dict[str, Any]) -> dict[str, Any]:
    """The store's facts (``connectors/incident_facts.py``) with the robot readings kept to
    those in an involved area or within the config's robot radius of an involved sensor."""
    inc, cfg, sensors = d["incident"], d["config"], d["sensors"]
    involved = [t for t in inc["sensors"] if t in sensors]
    robot = d["robot"]
    radius = 30.0
    if cfg:
        try:
            from plantwatch.daemon.config.model import load_config_text
            radius = load_config_text(cfg["content"], "config_versions").alarms.incidents.robot_radius
        except Exception:  # noqa: BLE001
            pass
    pts = [(sensors[t]["x"], sensors[t]["y"]) for t in involved if sensors[t]["x"] is not None]
    robot = [r for r in robot if r["area_id"] in inc["areas"]
             or any(math.hypot(r["x"] - x, r["y"] - y) <= radius for x, y in pts)]
    return {**d, "robot": robot, "radius": radius}


def _readings_plot(d: dict[str, Any]) -> str:
    inc = d["incident"]
    tags = list(d["series"])
    if not tags:
        return "<p>No readings stored for the involved sensors in this window.</p>"
    spans = _spans(inc["changes"], d["t_end"])
    alarms_by_sensor: dict[str, list[int]] = {}
    for a in inc["alarms"]:
        alarms_by_sensor.setdefault(a["sensor"], []).append(a["alarm_id"])
    fig, axes = _subplots(len(tags), 1, figsize=(9, 2.1 * len(tags)), sharex=True, squeeze=False)
    cfg_text = d["config"]["content"] if d["config"] else None
    for ax, tag in zip(axes[:, 0], tags):
        ts, vs = d["series"][tag]
        unit = d["sensors"][tag]["unit"]
        ax.plot([_utc(t) for t in ts], vs, lw=1, color="#1f4e79", label=tag)
        for name, v in _limits(cfg_text, tag)[0]:
            ax.axhline(v, ls="--", lw=0.8, color="#b00020" if "high_high" in name or "low_low" in name else "#e65100")
            ax.annotate(f"{name} {v:g} {unit}", xy=(1, v), xycoords=("axes fraction", "data"), fontsize=7, ha="right",
                        va="bottom", color="#7a2020")
        for aid in alarms_by_sensor.get(tag, []):
            for a0, a1, cond in spans.get(aid, []):
                ax.axvspan(_utc(a0), _utc(a1), color="#b00020", alpha=0.12, lw=0)
        ax.set_ylabel(f"{tag} [{unit}]")
        ax.grid(alpha=0.3)
    _utc_time_axis(axes[-1, 0], d["t0"], d["t1"], " · shaded: alarm active · dashed: limits in force")
    return _svg(fig)


def _robot_maps(d: dict[str, Any]) -> str:
    """One map per robot channel: each has its own unit, its own colour scale (spanning its
    readings and its limits) and its limits marked on the colour bar."""
    channels: dict[str, list[dict[str, Any]]] = {}
    for r in d["robot"]:
        channels.setdefault(r["tag"], []).append(r)
    if not channels:
        return _map_figure(d, None, [], [])
    cfg_text = d["config"]["content"] if d["config"] else None
    out = []
    for tag in sorted(channels):
        rows = channels[tag]
        limits = _limits(cfg_text, tag)[0]
        unit, quantity = rows[0]["unit"], rows[0]["quantity"] or "reading"
        peak = max(rows, key=lambda r: r["value"])
        caption = (f"{tag}: {quantity} in {unit} · {len(rows)} reading(s) · peak {peak['value']:.3g} {unit} at "
                   f"{_fmt(peak['t'])} · limits: " + (", ".join(f"{n} {v:g} {unit}" for n, v in limits) or "none"))
        out.append(f'<figure class="robot-map" data-channel="{_e(tag)}"><figcaption>{_e(caption)}</figcaption>'
                   f"{_map_figure(d, tag, rows, limits)}</figure>")
    return "".join(out)


def _map_figure(d: dict[str, Any], tag: str | None, rows: list[dict[str, Any]], limits: list[tuple[str, float]]) -> str:
    from matplotlib.patches import Rectangle
    site = d["site"] or {"width": 200, "height": 120}
    fig, ax = _subplots(figsize=(9, 9 * site["height"] / site["width"] if site["width"] else 5))
    inc = d["incident"]
    for a in d["areas"]:
        if a["x0"] is None:
            continue
        hit = a["id"] in inc["areas"]
        ax.add_patch(Rectangle((a["x0"], a["y0"]), a["x1"] - a["x0"], a["y1"] - a["y0"], fill=hit, alpha=0.15 if hit else 1,
                               color="#e65100" if hit else "#999", lw=1))
        ax.text(a["x0"] + 1, a["y1"] - 1, a["id"], fontsize=7, va="top", color="#555")
    xs = [s for s in d["sensors"].values() if s["x"] is not None]
    ax.scatter([s["x"] for s in xs], [s["y"] for s in xs], s=12, color="#888", label="sensors", zorder=2)
    inv = [d["sensors"][t] for t in inc["sensors"] if t in d["sensors"] and d["sensors"][t]["x"] is not None]
    ax.scatter([s["x"] for s in inv], [s["y"] for s in inv], s=60, marker="^", color="#b00020",
               label="alarmed sensors", zorder=4)
    for s in inv:
        ax.annotate(s["tag"], (s["x"], s["y"]), xytext=(3, 3), textcoords="offset points", fontsize=8)
    if rows:
        unit = rows[0]["unit"]
        span = [r["value"] for r in rows] + [v for _, v in limits]
        lo, hi = min(span), max(span)
        sc = ax.scatter([r["x"] for r in rows], [r["y"] for r in rows], c=[r["value"] for r in rows], s=18,
                        cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1, marker="o",
                        label=f"robot readings {tag}", zorder=3)
        bar = fig.colorbar(sc, ax=ax)
        bar.ax.set_gid(f"colorbar-{tag}")
        bar.ax.yaxis.set_label_position("left")
        bar.set_label(f"robot {tag} {rows[0]['quantity'] or 'reading'} [{unit}]")
        for name, v in limits:
            bar.ax.axhline(v, color="#b00020", lw=1.2)
            bar.ax.annotate(f"{name} {v:g} {unit}", xy=(1, v), xycoords=("axes fraction", "data"), xytext=(30, 0),
                            textcoords="offset points", va="center", fontsize=7, color="#b00020")
    ax.set_xlim(0, site["width"])
    ax.set_ylim(0, site["height"])
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.legend(loc="upper right", fontsize=7)
    return _svg(fig)


def _timeline_plot(d: dict[str, Any]) -> str:
    inc = d["incident"]
    alarms = []
    for a in inc["alarms"]:
        if a["alarm_id"] not in [x["alarm_id"] for x in alarms]:
            alarms.append(a)
    if not alarms:
        return ""
    fig, ax = _subplots(figsize=(9, 0.5 * len(alarms) + 1.2))
    row = {a["alarm_id"]: i for i, a in enumerate(alarms)}
    spans = _spans(inc["changes"], d["t_end"])
    for aid, sp in spans.items():
        if aid in row:
            for a0, a1, cond in sp:
                ax.barh(row[aid], (a1 - a0) / 86400, left=_utc(a0), height=0.5, color="#b00020", alpha=0.35)
    colors = {"unack": "#b00020", "ack": "#1b5e20", "rtn_unack": "#e65100", "normal": "#607d8b", "shelved": "#6a1b9a",
              "suppressed": "#455a64", "out_of_service": "#000"}
    for c in inc["changes"]:
        if c["alarm_id"] in row:
            ax.plot(_utc(c["time"]), row[c["alarm_id"]], "o", ms=5, color=colors.get(c["to_state"], "#333"))
    for o in inc["actions"]:
        if o["alarm_id"] in row:
            ax.plot(_utc(o["time"]), row[o["alarm_id"]] + 0.32, "v", ms=7, color="#0d47a1")
            ax.annotate(o["action"], (_utc(o["time"]), row[o["alarm_id"]] + 0.32), xytext=(2, 3),
                        textcoords="offset points", fontsize=7, color="#0d47a1")
    ax.set_yticks(range(len(alarms)), [f"{a['sensor']} · {a['detector_id']} ({a['role']})" for a in alarms])
    ax.invert_yaxis()
    _utc_time_axis(ax, d["t0"], d["t1"], " · dots: state changes · ▼ operator actions")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#1d232b}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e3e6ea;padding:.25em .5em;text-align:left;
vertical-align:top;font-size:13px}th{background:#eceff3}pre{background:#f6f7f9;padding:.8em;overflow:auto;font-size:12px}
.plot svg{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:13px;color:#445}.muted{color:#667}code{font-size:12px;word-break:break-all}"""


def render(d: dict[str, Any]) -> str:
    inc = d["incident"]
    cause = next((a for a in inc["alarms"] if a["role"] == "cause"), None)
    rows_alarms = "".join(
        f"<tr><td>{_e(a['role'])}</td><td>{_fmt(a['raised_at'])}</td><td>{_e(a['sensor'])}</td><td>{_e(a['area'])}</td>"
        f"<td>{_e(a['detector_id'])}</td><td>{_e(a['condition'])}</td><td>{_e(a['severity'])}</td>"
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
    robot_rows = "".join(f"<tr><td>{_fmt(r['t'])}</td><td>{_e(r['tag'])}</td><td>{r['value']:.3g} {_e(r['unit'])}</td>"
                         f"<td>{r['x']:.1f}, {r['y']:.1f}</td><td>{_e(r['area_id'])}</td></tr>" for r in d["robot"][:200])
    dets: dict[str, Any] = {}
    cfg = d["config"]
    for tag in inc["sensors"]:
        for det in _limits(cfg["content"] if cfg else None, tag)[1]:
            dets[det["id"]] = det
    audit_rows = "".join(f"<tr><td>{r['seq']}</td><td>{_e(r['time'].isoformat())}</td><td>{_e(r['kind'])}</td>"
                         f"<td>{_e(r['ref'])}</td><td><code>{_e(r['hash'])}</code></td></tr>" for r in d["audit"])
    head = d["head"] or {}
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
<th>severity</th><th>priority</th><th>state now</th></tr>{rows_alarms}</table>
<h2>Timeline of alarms and operator actions</h2>
<div class="plot" id="plot-timeline">{_timeline_plot(d)}</div>
<table id="timeline"><tr><th>#</th><th>time</th><th>processed</th><th>what</th><th>alarm</th><th>change / reason</th><th>by</th></tr>{rows_events}</table>
<h2>Robot inspection readings near the incident</h2>
<div class="plot" id="plot-map">{_robot_maps(d)}</div>
<p class="muted">{len(d['robot'])} robot reading(s) within {d['radius']:g} m of an alarmed sensor or in an involved area,
{_fmt(d['t0'])} – {_fmt(d['t1'])}.</p>
<table id="robot"><tr><th>time</th><th>channel</th><th>value</th><th>x, y</th><th>area</th></tr>{robot_rows}</table>
<h2>Detector configuration in force</h2>
<pre id="detectors">{_e(json.dumps(list(dets.values()), indent=2))}</pre>
<h2>Audit trail</h2>
<p>Entries of the tamper-evident log about this incident and its configuration. Chain head at report time:
seq {head.get('seq')}, <code>{_e(head.get('hash'))}</code>. Check with <code>plantwatch audit verify</code>.</p>
<table id="audit"><tr><th>seq</th><th>time</th><th>kind</th><th>ref</th><th>hash</th></tr>{audit_rows}</table>
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
