"""The demo end to end on the embedded broker and database (the newcomer's path), and on the
real Mosquitto and TimescaleDB."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from plantwatch.daemon.lab.demo import run_demo

pytestmark = pytest.mark.slow

#: the incidents the demo promises to alarm, how fast (s), and which detector catches each
MUST = {"leak": (20.0, "gas-h2s-limit"), "pressure_drop": (20.0, "RX-PT-202-limit"), "silent": (20.0, "stale-gas"),
        "drift": (33.0, "gas-drift"), "stuck": (28.0, "stuck-lel")}


def _check(res) -> None:
    rep = res["report"]
    by_kind = {r.incident.kind: r for r in rep.results}
    for kind, (within, detector) in MUST.items():
        r = by_kind[kind]
        assert r.detected, f"{kind} not alarmed: {r.why}"
        assert r.delay is not None and r.delay < within and detector in r.detectors, (kind, r.delay, r.detectors)
    assert rep.detected == len(rep.results) == 5
    assert rep.false_alarms == []
    assert res["stats"].readings > 2000


async def test_demo_on_embedded_services(tmp_path):
    out = io.StringIO()
    res = await run_demo(duration=40, data_dir=str(tmp_path / "data"), console=Console(file=out, width=160), live=False)
    _check(res)
    text = out.getvalue()
    assert "incidents detected" in text and "leak-" in text
    # the embedded database stops with the demo: no DSN that would lead to a refused connection
    assert "stopped with the demo" in text and res["dsn"] not in text, text[-600:]
    # the demo ends with the inspectors' report of the leak's incident: self-contained, with plots
    html = open(res["incident_report"], encoding="utf-8").read()
    assert html.count("<svg") >= 2 and "TF-H2S" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


async def test_demo_on_real_broker_and_timescaledb(tmp_path, mosquitto, db):
    res = await run_demo(duration=40, mqtt=f"{mosquitto.host}:{mosquitto.port}", dsn=db, data_dir=str(tmp_path),
                         console=Console(file=io.StringIO(), width=160), live=False)
    _check(res)
