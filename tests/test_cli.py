"""The console command's wiring (each subcommand's own behaviour is tested beside its module)."""
from __future__ import annotations

import os
import subprocess
import sys

from plantwatch.connectors.services import free_port


def plantwatch(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_help_lists_the_subcommands():
    p = plantwatch("--help")
    assert p.returncode == 0
    for cmd in ("run", "config", "backtest", "grafana"):
        assert cmd in p.stdout


def test_grafana_push_unreachable_is_a_clear_error():
    port = free_port()  # nothing listens here
    env = {"PLANTWATCH_DB_ADDR": "db:5432", "PLANTWATCH_DB_NAME": "plantwatch", "PLANTWATCH_READER_PASSWORD": "x",
           "PLANTWATCH_PROMETHEUS_URL": "http://prometheus:9090"}
    p = plantwatch("grafana", "push", "--url", f"http://127.0.0.1:{port}", "--token", "t", "--timeout", "2", env=env)
    assert p.returncode == 1
    assert f"cannot reach Grafana at http://127.0.0.1:{port}" in p.stderr


def test_unknown_arguments_are_refused():
    p = plantwatch("config", "check", "x.yaml", "--bogus")
    assert p.returncode == 2 and "unrecognized arguments: --bogus" in p.stderr
