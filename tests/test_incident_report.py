"""The inspectors' incident report from a real daemon run (Mosquitto, TimescaleDB): one robot map
per robot channel with its own unit and colour scale, the limits in force shown with their
values, and time axes in UTC whatever the machine's time zone."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest

from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.alarms.report import latest_incident_for

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config

DETECTORS = (
    "detectors:\n"
    "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}\n"
    "  - {id: robot-h2s, type: limit, select: {sensors: [R0]}, params: {high: 20}}\n"
    "  - {id: robot-lel, type: lel, select: {sensors: [R1]}, params: {preset: 10/20}}\n")


def _svg_root(svg: str) -> ET.Element:
    return ET.fromstring(svg, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))


def _texts(el: ET.Element) -> list[str]:
    """Text drawn as paths: matplotlib writes each string as a comment before its glyphs."""
    return [c.text.strip() for c in el.iter() if c.tag is ET.Comment]


def _group(root: ET.Element, gid: str) -> ET.Element:
    found = [g for g in root.iter() if g.get("id") == gid]
    assert len(found) == 1, (gid, [g.get("id") for g in root.iter() if g.get("id")][:50])
    return found[0]


def _numbers(texts: list[str]) -> list[float]:
    out = []
    for t in texts:
        try:
            out.append(float(t.replace("\u2212", "-")))
        except ValueError:
            pass
    return out


@pytest.fixture
async def report(tmp_path, mosquitto, db, topic_prefix):
    """A daemon run with an H2S leak at G0 and a robot pass measuring H2S (ppm) and CH4 (%LEL)
    around it; the report written by the CLI with the machine in Tokyo."""
    prefix = topic_prefix.rstrip("/")
    mport = new_metrics_port()
    text = site_config(n_gas=3, n_robot=2, mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                       client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport, detectors=DETECTORS)
    text = text.replace("id: R1, kind: robot, quantity: H2S, unit: ppm", "id: R1, kind: robot, quantity: CH4, unit: '%LEL'")
    cfg = tmp_path / "site.yaml"
    cfg.write_text(text)
    d = DaemonProcess(cfg, mport)
    now = time.time()
    d.start()
    try:
        await d.wait_connected()
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings", [
            encode_batch("edge1", 0, [{"sensor": s, "time": now - 60, "value": 1.0} for s in ("G0", "G1", "G2")]),
            encode_batch("edge1", 1, [{"sensor": "G0", "time": now - 50, "value": 12.0}])])
        robot = [{"sensor": "R0", "time": now - 45 + k, "value": [3.0, 25.0, 70.0, 40.0, 8.0][k], "x": 2.0 + k, "y": 6.0}
                 for k in range(5)]
        robot += [{"sensor": "R1", "time": now - 45 + k, "value": [0.1, 0.3, 0.6, 0.4, 0.2][k], "x": 2.0 + k, "y": 6.0}
                  for k in range(5)]
        await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/robot1/robot",
                              [encode_batch("robot1", 0, robot)])
        iid = None
        for _ in range(150):
            iid = await latest_incident_for(db, ["G0"])
            if iid is not None:
                break
            await asyncio.sleep(0.2)
        assert iid is not None, d.log()
        await asyncio.sleep(1.0)  # the robot batch is stored by the same writer, give it a flush
        assert d.terminate() == 0, d.log()
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    out = tmp_path / "incident.html"
    r = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "incident", "report", str(iid), "--dsn", db,
                        "--out", str(out)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TZ": "Asia/Tokyo"})
    assert r.returncode == 0, r.stderr
    return out.read_text(encoding="utf-8"), now


def test_one_robot_map_per_channel_with_its_unit_scale_and_limits(report):
    html, _ = report
    maps = dict(re.findall(r'<figure class="robot-map" data-channel="([^"]+)">(.*?)</figure>', html, flags=re.S))
    assert sorted(maps) == ["R0", "R1"], sorted(maps)
    for tag, unit, peak, limits in (("R0", "ppm", 70.0, {"robot-h2s high": 20.0}),
                                    ("R1", "%LEL", 0.6, {"robot-lel alarm1": 10.0, "robot-lel alarm2": 20.0})):
        svg = _svg_root(maps[tag][maps[tag].index("<svg"):maps[tag].index("</svg>") + 6])
        bar = _texts(_group(svg, f"colorbar-{tag}"))
        assert any(f"[{unit}]" in t and tag in t for t in bar), bar
        ticks = _numbers(bar)
        # the scale spans this channel's readings and its limits, nothing of the other channel's
        assert max(ticks) <= max([peak, *limits.values()]) * 1.25 and max(ticks) >= peak, (tag, ticks)
        for name, value in limits.items():
            assert f"{name} {value:g} {unit}" in bar, (name, bar)


def test_time_axes_are_utc_whatever_the_machines_zone(report):
    html, now = report
    for pid in ("plot-readings", "plot-timeline"):
        m = re.search(rf'<div class="plot" id="{pid}">(.*?)</div>', html, flags=re.S)
        texts = _texts(_svg_root(m.group(1)))
        assert any("UTC" in t for t in texts), (pid, texts)
        clock = [t for t in texts if re.fullmatch(r"\d\d:\d\d(:\d\d)?", t)]
        assert len(clock) >= 2, (pid, texts)
        for t in clock:  # the ticks are UTC clock times within the plotted window (an hour each side)
            tick = datetime.strptime(t, "%H:%M:%S" if t.count(":") == 2 else "%H:%M").time()
            day = datetime.fromtimestamp(now, tz=timezone.utc)
            candidates = [day.replace(hour=tick.hour, minute=tick.minute, second=tick.second).timestamp() + k * 86400
                          for k in (-1, 0, 1)]
            assert min(abs(c - now) for c in candidates) < 3600, (pid, t, texts)


def test_involved_robot_channel_is_plotted_with_its_readings(report):
    """R0 (a robot channel) raised an alarm of the incident: its readings (3 to 70 ppm) are in the
    readings plot, not an empty axis around its limit."""
    html, _ = report
    m = re.search(r'<div class="plot" id="plot-readings">(.*?)</div>', html, flags=re.S)
    texts = _texts(_svg_root(m.group(1)))
    assert "R0 [ppm]" in texts, texts
    assert max(_numbers(texts)) >= 50, texts  # the axis spans the readings (3 to 70), not just the limit
