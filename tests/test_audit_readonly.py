"""Read-only means read-only (issue 16): every read command works with the read-only role, a
write through that role is refused by the database, no read command migrates, and a database
that refuses, is unreachable or has no (or an older) schema is one line and a non-zero exit."""
from __future__ import annotations

import asyncpg
import pytest

from .test_alarm_db import rig  # noqa: F401 - fixture
from .test_audit_record import T0, cli, incident, reader_dsn, record  # noqa: F401 - fixture
from .test_lifecycle import CFG_TEXT


def _iso(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


async def test_every_read_command_works_with_the_read_only_role(record, tmp_path):
    rig, admin, iid, _ = record
    ro = reader_dsn(rig.dsn)
    cand = tmp_path / "candidate.yaml"
    cand.write_text(CFG_TEXT)
    commands = {
        "audit verify": ["audit", "verify", "--dsn", ro],
        "audit export": ["audit", "export", "--dsn", ro, "--out", str(tmp_path / "e.jsonl")],
        "audit export --head-only": ["audit", "export", "--dsn", ro, "--head-only"],
        "incident list": ["incident", "list", "--dsn", ro],
        "incident show": ["incident", "show", str(iid), "--dsn", ro],
        "incident report": ["incident", "report", str(iid), "--dsn", ro, "--out", str(tmp_path / "r.html")],
        "alarms report": ["alarms", "report", "--dsn", ro, "--from", _iso(T0 - 3600), "--to", _iso(T0 + 3600)],
        "backtest": ["backtest", "--config", str(cand), "--dsn", ro, "--from", _iso(T0 - 60), "--to", _iso(T0 + 60),
                     "--warmup", "60"],
    }
    versions = await admin.fetchval("SELECT count(*) FROM schema_migrations")
    for name, argv in commands.items():
        r = cli(*argv)
        assert r.returncode == 0, (name, r.stdout[-2000:], r.stderr[-2000:])
        assert "Traceback" not in r.stderr, (name, r.stderr)
    assert "audit chain OK" in cli(*commands["audit verify"]).stdout
    assert "Incident" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert await admin.fetchval("SELECT count(*) FROM schema_migrations") == versions


async def test_a_write_through_the_read_only_role_is_refused_by_the_database(record):
    rig, _, iid, _ = record
    conn = await asyncpg.connect(reader_dsn(rig.dsn))
    try:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("UPDATE incidents SET title = 'routine check' WHERE id = $1", iid)
        await conn.execute("SET default_transaction_read_only = off")  # a session may lift its default ...
        for stmt in (f"UPDATE incidents SET title = 'routine check' WHERE id = {iid}",
                     f"DELETE FROM incident_alarms WHERE incident_id = {iid}",
                     "UPDATE readings SET value = 0",
                     "INSERT INTO audit_log (seq, time, kind, ref, body, prev_hash, hash)"
                     " VALUES (999, now(), 'x', 'x', '{}', 'x', 'x')",
                     "CREATE TABLE mine (x int)",
                     "SELECT content FROM config_versions"):  # ... but not its privileges (nor read credentials)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(stmt)
    finally:
        await conn.close()


async def test_older_or_missing_schema_is_one_line_and_exit_2(record, postgres):
    rig, admin, _, _ = record
    ro = reader_dsn(rig.dsn)
    await admin.execute("DELETE FROM schema_migrations WHERE version = 100")
    for argv in (["incident", "list"], ["audit", "verify"], ["alarms", "report"]):
        r = cli(*argv, "--dsn", ro)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "older than this plantwatch" in lines[0] and "100" in lines[0], r.stderr
    assert await admin.fetchval("SELECT count(*) FROM schema_migrations WHERE version = 100") == 0  # nothing migrated
    r = cli("-v", "incident", "list", "--dsn", ro)
    assert r.returncode != 0 and "Traceback" in r.stderr  # -v: the traceback
    # plantwatch db migrate, with the daemon's credentials, brings it up to date (a no-op SQL re-run aside)
    await admin.execute("INSERT INTO schema_migrations (version, name) VALUES (100, 'inspector_record')")
    r = cli("db", "migrate", "--dsn", rig.dsn)
    assert r.returncode == 0 and "applied now: nothing" in r.stderr, r.stderr
    # a database without plantwatch's schema
    other = rig.dsn.rsplit("/", 1)[0] + "/postgres"
    r = cli("incident", "list", "--dsn", other)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no plantwatch schema" in r.stderr, r.stderr


def test_refused_and_unreachable_databases_are_one_line(postgres):
    for dsn, what in ((postgres.dsn_for("postgres").replace("postgres@", "nosuchrole@", 1), "refused"),
                      ("postgresql://plantwatch_reader@127.0.0.1:1/x", "unreachable")):
        for argv in (["audit", "verify"], ["incident", "list"], ["incident", "report", "1", "--out", "/tmp/x.html"],
                     ["audit", "export", "--head-only"], ["alarms", "report"]):
            r = cli(*argv, "--dsn", dsn)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 1 and len(lines) == 1 and what in lines[0], (argv, r.stderr)
            assert "Traceback" not in r.stderr


def test_the_public_part_of_a_config_leaves_credentials_out():
    from plantwatch.connectors.config_record import public_config
    from plantwatch.daemon.config.model import load_config_text

    text = (CFG_TEXT + "mqtt: {host: broker.site, port: 8883, password_file: /etc/plantwatch/mqtt.pw}\n"
            'database:\n  dsn: "postgresql://plantwatch:s3cret@db/plantwatch"\n'
            "api:\n  tokens:\n    - {name: ann, role: operator, sha256: " + "ab" * 32 + "}\n"
            "notify:\n  webhooks:\n    - {url: 'https://hooks.example/T0KEN'}\n")
    public = public_config(text)
    for secret in ("s3cret", "mqtt.pw", "ab" * 32, "T0KEN", "broker.site"):
        assert secret not in public
    cfg = load_config_text(public, "public")  # the report loads it: detectors, sensors, alarms as configured
    assert [d.id for d in cfg.detectors] == ["h2s", "p"] and len(cfg.sensors) == 5
    assert cfg.alarms.incidents.close_after == 60
