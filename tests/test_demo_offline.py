"""The demo offline: the simulated plant through the real detectors, scored against the truth.

This is the check that the demo site config's detector parameters make the scripted incidents
detectable and stay quiet in normal operation. Simulated time runs as fast as the detectors do.
"""
from __future__ import annotations

import json

import pytest

from plantwatch.daemon.lab.simulator.scenario import default_scenario
from plantwatch.daemon.lab import demo_offline
from plantwatch.daemon.lab.demo_offline import run_offline, simulate_alarms
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.lab.demo_site import demo_config_text, load_demo_config


@pytest.fixture(scope="module")
def report():
    return run_offline(duration=60)


def test_demo_minute_detects_all_five_incidents_with_the_right_condition(report):
    assert report.false_alarms == []
    leak = report.result("leak-TK-103")
    assert leak.detected and leak.missed == [] and 5 < leak.delay < 20
    assert "gas-h2s-limit" in leak.detectors and "robot-h2s-limit" in leak.detectors
    pdrop = report.result("pdrop-V-202")
    assert pdrop.detected and pdrop.delay < 6 and "RX-PT-202-limit" in pdrop.detectors
    silent = report.result("silent-LB-NH3-02")
    assert silent.detected and silent.detectors == ["stale-gas"] and 14 <= silent.delay <= 17
    # instrument faults are caught as what they are: a drift as a drift, a frozen value as a flatline
    drift = report.result("drift-LB-H2S-02")
    assert drift.detected and drift.detectors == ["gas-drift"] and {a.condition for a in drift.detections} == {"drift"}
    assert drift.delay < 35  # so that a 40 s run shows it too
    stuck = report.result("stuck-RX-CH4-02")
    assert stuck.detected and stuck.detectors == ["stuck-lel"] and stuck.delay < 25
    assert report.detected == 5


def test_a_missed_incident_says_why():
    text = demo_config_text()
    for det in ("gas-drift", "stuck-lel"):  # the demo as it was: no drift detector, a 30-minute flatline window
        text = text.replace(f"{{id: {det}, ", f"{{id: {det}, enabled: false, ")
    rep = run_offline(load_config_text(text), duration=60)
    drift, stuck = rep.result("drift-LB-H2S-02"), rep.result("stuck-RX-CH4-02")
    assert not drift.detected and not stuck.detected
    assert drift.why == {"LB-H2S-02": "no detector watches LB-H2S-02 for drift: configure a neighbour_drift detector for it"}
    assert stuck.why == {"RX-CH4-02": "stuck-gas: flatline window 1800 s is longer than the 50 s the fault lasted in the run"}
    rows = {r["id"]: r for r in rep.summary()["rows"]}
    assert rows["drift-LB-H2S-02"]["why"] == drift.why


def test_a_drift_caught_by_the_gas_limit_is_the_wrong_diagnosis():
    text = demo_config_text().replace("{id: gas-drift, ", "{id: gas-drift, enabled: false, ")
    rep = run_offline(load_config_text(text), duration=150)
    drift = rep.result("drift-LB-H2S-02")
    assert not drift.detected  # its gas limit went off, but that calls an ageing cell a gas release
    assert drift.why["LB-H2S-02"] == "alarmed as high (gas-h2s-limit), not as drift"
    assert rep.false_alarms == []


def test_drift_is_caught_before_it_reaches_the_limit():
    rep = run_offline(duration=150)
    drift = rep.result("drift-LB-H2S-02")
    assert drift.detected and drift.detectors == ["gas-drift"] and drift.delay < 35
    assert {(a.detector_id, a.condition) for a in drift.related} == {("gas-h2s-limit", "high")}
    assert rep.false_alarms == [] and rep.detected == 5


def test_normal_operation_raises_no_alarm():
    cfg = load_demo_config()
    alarms = simulate_alarms(cfg, default_scenario().without_incidents(), duration=300)
    assert alarms == [], [(a.time, a.sensor, a.detector_id, a.condition) for a in alarms]


def test_other_seeds_detect_too():
    for seed in (1, 2):
        rep = run_offline(duration=60, seed=seed)
        assert rep.false_alarms == []
        assert rep.detected == 5


def test_cli_json(capsys):
    assert demo_offline.main(["--duration", "40", "--normal", "30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["incidents"] == 5 and out["false_alarms"] == 0 and out["normal"]["alarms"] == 0
    assert out["detected"] == 5 and all(r["why"] == {} for r in out["rows"])


def test_cli_table(capsys):
    assert demo_offline.main(["--duration", "30"]) == 0
    out = capsys.readouterr().out
    assert "incidents detected" in out and "leak-TK-103" in out
