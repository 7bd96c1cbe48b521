"""Every command and subcommand of ``plantwatch`` explains itself: ``--help`` exits 0, names the
real program (``usage: plantwatch <command>``), has a description in plain words (no RST
markup), every subcommand listed has help text, and commands that read the database or a
password show the environment variables they read."""
from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest

from plantwatch.daemon.cli.main import PASSTHROUGH, build_parser, main


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _listed_help(p: argparse.ArgumentParser) -> dict[str, str | None]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            return {name: helps.get(name) for name in a.choices}
    return {}


def commands() -> list[list[str]]:
    """Every command path: ["run"], ["config", "check"], ["grafana", "push"], ..."""
    out = []

    def walk(prefix: list[str], p: argparse.ArgumentParser):
        subs = _subparsers(p)
        for name, sp in subs.items():
            out.append(prefix + [name])
            walk(prefix + [name], sp)

    walk([], build_parser())
    out += [["grafana", "push"], ["grafana", "render"]]
    return out


def _help(path: list[str]) -> tuple[int, str]:
    buf, errbuf = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(errbuf):
        try:
            code = main(path + ["--help"])
        except SystemExit as e:
            code = e.code or 0
    return code, buf.getvalue() + errbuf.getvalue()


@pytest.mark.parametrize("path", commands(), ids=lambda p: " ".join(p))
def test_help_names_plantwatch_and_says_what_the_command_does(path):
    code, text = _help(path)
    assert code == 0, text
    name = " ".join(path)
    assert re.match(rf"usage: plantwatch {re.escape(name)}\b", text), text[:300]
    assert "``" not in text and "python -m" not in text, text
    # a description or the subcommands' help, beyond the usage and the options
    body = text.split("\n\n")
    assert len(body) >= 3 or path[0] in PASSTHROUGH and len(body) >= 2, text


def test_every_listed_subcommand_has_help():
    def walk(prefix, p):
        for name, h in _listed_help(p).items():
            assert h, f"plantwatch {' '.join(prefix + [name])}: no help text in the command list"
        for name, sp in _subparsers(p).items():
            walk(prefix + [name], sp)

    walk([], build_parser())


@pytest.mark.parametrize("path", [["incident", "list"], ["incident", "show"], ["audit", "verify"], ["backtest"],
                                  ["alarms", "report"]], ids=" ".join)
def test_database_commands_name_plantwatch_dsn(path):
    code, text = _help(path)
    assert code == 0 and "PLANTWATCH_DSN" in text, text


@pytest.mark.parametrize("path", [["run"], ["simulate"], ["transfer"]], ids=" ".join)
def test_commands_with_a_broker_password_name_its_variable(path):
    code, text = _help(path)
    assert code == 0 and "PLANTWATCH_MQTT_PASSWORD" in text, text
