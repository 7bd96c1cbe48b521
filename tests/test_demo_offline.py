"""The demo offline: the simulated plant through the real detectors, scored against the truth.

This is the check that the demo site config's detector parameters make the scripted incidents
detectable and stay quiet in normal operation. Simulated time runs as fast as the detectors do.
"""
from __future__ import annotations

import json

import pytest

from plantwatch.connectors.simulator.scenario import default_scenario
from plantwatch.daemon import demo_offline
from plantwatch.daemon.demo_offline import run_offline, simulate_alarms
from plantwatch.daemon.demo_site import load_demo_config


@pytest.fixture(scope="module")
def report():
    return run_offline(duration=60)


def test_demo_minute_detects_leak_pressure_drop_and_silent_sensor(report):
    assert report.false_alarms == []
    leak = report.result("leak-TK-103")
    assert leak.detected and leak.missed == [] and 5 < leak.delay < 20
    assert "gas-h2s-limit" in leak.detectors and "robot-h2s-limit" in leak.detectors
    pdrop = report.result("pdrop-V-202")
    assert pdrop.detected and pdrop.delay < 6 and "RX-PT-202-limit" in pdrop.detectors
    silent = report.result("silent-LB-NH3-02")
    assert silent.detected and silent.detectors == ["stale-gas"] and 14 <= silent.delay <= 17
    # a slow drift and a frozen reading are beyond limit/stale/z-score within one minute
    assert not report.result("drift-LB-H2S-02").detected
    assert not report.result("stuck-RX-CH4-02").detected


def test_drift_reaches_the_limit_later():
    rep = run_offline(duration=150)
    drift = rep.result("drift-LB-H2S-02")
    assert drift.detected and drift.detectors == ["gas-h2s-limit"] and 110 < drift.delay < 140
    assert rep.false_alarms == []


def test_normal_operation_raises_no_alarm():
    cfg = load_demo_config()
    alarms = simulate_alarms(cfg, default_scenario().without_incidents(), duration=300)
    assert alarms == [], [(a.time, a.sensor, a.detector_id, a.condition) for a in alarms]


def test_other_seeds_detect_too():
    for seed in (1, 2):
        rep = run_offline(duration=60, seed=seed)
        assert rep.false_alarms == []
        assert all(rep.result(i).detected for i in ("leak-TK-103", "pdrop-V-202", "silent-LB-NH3-02"))


def test_cli_json(capsys):
    assert demo_offline.main(["--duration", "40", "--normal", "30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["incidents"] == 5 and out["false_alarms"] == 0 and out["normal"]["alarms"] == 0
    rows = {r["id"]: r for r in out["rows"]}
    assert all(rows[i]["detected"] for i in ("pdrop-V-202", "leak-TK-103", "silent-LB-NH3-02"))


def test_cli_table(capsys):
    assert demo_offline.main(["--duration", "30"]) == 0
    out = capsys.readouterr().out
    assert "incidents detected" in out and "leak-TK-103" in out
