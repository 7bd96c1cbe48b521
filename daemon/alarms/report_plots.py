"""The incident report's figures: readings with limits and alarm spans, robot maps (one per
channel, its own unit and colour scale), the alarm timeline. matplotlib to inline SVG, text as
paths, no pyplot global state (safe in a worker thread)."""
from __future__ import annotations

import io
import re
from datetime import datetime, timezone
from typing import Any

from plantwatch.daemon.alarms.report_config import limits as _limits


def _fmt(t: float | None) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "—"


def _e(x: Any) -> str:
    import html
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
