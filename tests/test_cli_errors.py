"""The command line's errors and results: an error is one line on stderr (the traceback only
with -v), results go to stdout, and `simulate` says what it did without -v."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from plantwatch.connectors.services import free_port

SITE_YAML = Path(__file__).resolve().parents[1] / "deploy" / "site" / "plantwatch" / "site.yaml"


def plantwatch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def test_an_unreachable_database_is_one_line_and_the_traceback_needs_v():
    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/plantwatch"
    p = plantwatch("incident", "list", "--dsn", dsn)
    assert p.returncode == 1 and p.stdout == "", p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plantwatch: database unreachable: ConnectionRefusedError"), p.stderr
    v = plantwatch("-v", "incident", "list", "--dsn", dsn)
    assert v.returncode == 1 and "Traceback" in v.stderr, v.stderr


def test_simulate_against_a_site_config_the_demo_scenario_does_not_fit_says_what_to_give():
    p = plantwatch("simulate", "--config", str(SITE_YAML), "--duration", "1", "--port", str(free_port()))
    assert p.returncode == 2, p
    assert "give --scenario" in p.stderr and "deploy/site/plantwatch/scenario.yaml" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_simulate_prints_a_summary_without_v(mosquitto, tmp_path):
    p = plantwatch("simulate", "--host", mosquitto.host, "--port", str(mosquitto.port), "--prefix",
                   f"t-{os.getpid()}", "--duration", "2", "--speed", "2", "--truth", str(tmp_path / "truth.json"))
    assert p.returncode == 0, p
    assert p.stdout.startswith("simulated 2 s of site ") and "0 dropped, 0 unsent" in p.stdout, p
