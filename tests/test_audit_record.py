"""The inspector's record on a real PostgreSQL/TimescaleDB (issue 16): every tamper case an
inspector tried is found by ``audit verify``, with the row or slice named — an incident's title,
a membership deleted, a reading changed, deleted or inserted into a sealed slice, an alarm change
reordered, and the chain truncated and rebuilt from a point (against an earlier exported head)."""
from __future__ import annotations

import json
import subprocess
import sys

import asyncpg
import numpy as np
import pytest

from plantwatch.connectors import alarm_db, audit, inspection
from plantwatch.connectors.store import ReadingRows

from .helpers import superuser_dsn
from .test_alarm_db import Rig, rig  # noqa: F401 - fixture

T0 = 1_700_000_000.0


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def reader_dsn(dsn: str) -> str:
    user = dsn.split("://", 1)[1].split("@", 1)[0]
    return dsn.replace(f"://{user}@", "://plantwatch_reader@", 1)


async def write_readings(rig: Rig) -> dict[str, int]:
    """One reading a second of every sensor from T0 - 120 to T0 + 60; G1 above 40 ppm for 19 s."""
    ids = {tag: key[1] for tag, key in rig.key.items()}
    ts = np.arange(T0 - 120, T0 + 60, 1.0)
    sid, t, v = [], [], []
    for tag, i in ids.items():
        vals = np.full(len(ts), 1.0)
        if tag == "G1":
            vals[(ts >= T0 + 10) & (ts < T0 + 29)] = 45.0
        sid += [i] * len(ts)
        t += list(ts)
        v += list(vals)
    await rig.store.write(ReadingRows(np.array(sid, np.int32), np.array(t), np.array(v), np.zeros(len(t), np.int16)))
    return ids


@pytest.fixture
async def incident(rig: Rig, db):  # noqa: F811
    """An incident (G0 raised first, G1 joined and became the cause), an acknowledgement, readings."""
    ids = await write_readings(rig)
    rig.now["t"] = T0 + 5
    await rig.change("G0", "normal", "high", T0)
    await rig.change("G1", "normal", "high_high", T0 + 10)
    await rig.act("G0", "ack")
    rig.dsn = db
    admin = await asyncpg.connect(superuser_dsn(db))
    try:
        async with rig.store.pool.acquire() as conn:
            iid = await alarm_db.latest_incident_id(conn, ["G0"])
        yield rig, admin, iid, ids
    finally:
        await admin.close()


@pytest.fixture
async def record(incident):
    """:func:`incident` with its readings sealed in 60 s slices."""
    rig = incident[0]
    assert await rig.store.sealer(width=60, horizon=0).seal(T0 + 600) >= 4
    v = await inspection.verify_audit(rig.dsn)
    assert v.ok, [str(p) for p in v.problems]
    return incident


async def problems(rig: Rig, **kw) -> list[str]:
    v = await inspection.verify_audit(rig.dsn, **kw)
    return [str(p) for p in v.problems]


def verify_cli(dsn: str, *extra: str) -> str:
    r = cli("audit", "verify", "--dsn", dsn, *extra)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout


# --- the three cases that passed verification before (issue 16) -----------------------------------
async def test_incident_title_changed_is_named(incident):
    rig, admin, iid, _ = incident
    await admin.execute("UPDATE incidents SET title = 'routine check' WHERE id = $1", iid)
    out = verify_cli(rig.dsn)
    assert "audit chain BROKEN" in out, out
    assert f"incidents row {iid} differs from its audit entry: column title" in out and "'routine check'" in out, out


async def test_incident_membership_deleted_is_named(incident):
    rig, admin, iid, ids = incident
    alarm = await admin.fetchval("SELECT alarm_id FROM incident_alarms WHERE incident_id = $1 AND role = 'consequence'",
                                 iid)
    await admin.execute("DELETE FROM incident_alarms WHERE incident_id = $1 AND alarm_id = $2", iid, alarm)
    out = verify_cli(rig.dsn)
    assert "audit chain BROKEN" in out, out
    assert f"incident_alarms row (incident {iid}, alarm {alarm}) is gone" in out and "as consequence" in out, out


async def test_a_membership_stored_with_the_earlier_rounding_of_its_time_verifies(incident):
    """Rows written before every time was rounded as PostgreSQL rounds it (connectors/pgcopy.py:
    ``pg_datetime``) hold ``datetime.fromtimestamp``'s µs, 1 µs away for some times: such a row is
    still its chain entry's row; 2 µs away it is not."""
    rig, admin, iid, _ = incident
    moved = ("UPDATE incident_alarms SET raised_at = raised_at + interval '1 microsecond'"
             " WHERE incident_id = $1 AND role = 'cause'")
    await admin.execute(moved, iid)
    assert await problems(rig) == []
    await admin.execute(moved, iid)
    assert any(f"incident_alarms row (incident {iid}" in p for p in await problems(rig))


async def test_reading_changed_is_named_by_slice_and_sensor(record):
    rig, admin, _, ids = record
    n = await admin.fetchval("WITH u AS (UPDATE readings SET value = 0 WHERE sensor_id = $1 AND value > 40"
                             " RETURNING 1) SELECT count(*) FROM u", ids["G1"])
    assert n == 19
    out = verify_cli(rig.dsn)
    assert "audit chain BROKEN" in out, out
    assert "readings slice 2023-11-14 22:13:00 UTC (+60 s), sensor G1" in out and "rows changed" in out, out


# --- the further cases ------------------------------------------------------------------------------
async def test_reading_deleted_and_inserted_into_a_sealed_slice_are_named(record):
    rig, admin, _, ids = record
    await admin.execute("DELETE FROM readings WHERE sensor_id = $1 AND time = to_timestamp($2)", ids["G2"], T0 - 100)
    await admin.execute("INSERT INTO readings (time, sensor_id, value) VALUES (to_timestamp($1), $2, 3.0)",
                        T0 + 0.5, ids["G3"])
    found = await problems(rig)
    assert any("slice 2023-11-14 22:11:00 UTC (+60 s), sensor G2" in p and "rows deleted" in p
               and "chained 40 rows" in p and "stored 39 rows" in p for p in found), found
    assert any("sensor G3" in p and "inserted into a sealed slice" in p and "stored 61 rows" in p for p in found), found
    # a window that leaves the changed slices out is clean; one that holds them is not
    from datetime import datetime, timezone
    late = datetime.fromtimestamp(T0 + 60, tz=timezone.utc)
    assert await problems(rig, since=late) == []
    assert len(await problems(rig, until=late)) == 2


async def test_late_reading_after_sealing_is_a_sealed_delta_not_a_silent_change(record):
    rig, admin, _, ids = record
    sealer = rig.store.sealer(width=60, horizon=0)
    rig.store.take_seal_marks()
    late = ReadingRows(np.array([ids["G2"]], np.int32), np.array([T0 + 0.25]), np.array([2.0]), np.zeros(1, np.int16))
    await rig.store.write(late)
    marks = rig.store.take_seal_marks()
    assert marks == [(T0 + 0.25, T0 + 0.25)]
    assert any("inserted into a sealed slice" in p for p in await problems(rig))  # until the delta is chained
    assert await sealer.reseal(marks) == 1
    assert await problems(rig) == []
    body = json.loads(await admin.fetchval("SELECT body::text FROM audit_log WHERE kind = 'seal' ORDER BY seq DESC LIMIT 1"))
    assert body["delta"] is True and body["table"] == "readings" and body["sensors"][0][:2] == [ids["G2"], 61]
    assert len(body["sensors"]) == 1


async def test_alarm_change_reordered_is_named(record):
    rig, admin, _, _ = record
    a, b = await admin.fetch("SELECT id, seq FROM alarm_changes ORDER BY seq LIMIT 2")
    await admin.execute("UPDATE alarm_changes SET seq = CASE id WHEN $1 THEN $3::bigint ELSE $4::bigint END WHERE id IN ($1, $2)",
                        a["id"], b["id"], b["seq"], a["seq"])
    found = await problems(rig)
    assert any(f"alarm_changes row {a['id']} differs from its audit entry: column seq: chained {a['seq']},"
               f" stored {b['seq']}" in p for p in found), found
    assert any(f"alarm_changes row {b['id']} differs" in p and "column seq" in p for p in found), found


async def _rebuild_from(admin: asyncpg.Connection, k: int) -> None:
    """What a superuser can do: cut the chain at seq k and write it again, every hash recomputed,
    with the incident's title changed in the entry and in its table."""
    rows = [dict(r) for r in await admin.fetch("SELECT seq, time, kind, ref, body::text AS body FROM audit_log"
                                                " WHERE seq >= $1 ORDER BY seq", k)]
    prev = await admin.fetchval("SELECT hash FROM audit_log WHERE seq = $1", k - 1)
    await admin.execute("DELETE FROM audit_log WHERE seq >= $1", k)
    for r in rows:
        body = json.loads(r["body"])
        if r["kind"] == "incident" and "title" in body:
            body["title"] = "routine check"
        h = audit.entry_hash(prev, r["seq"], audit.micros(r["time"]), r["kind"], r["ref"], body)
        await admin.execute("INSERT INTO audit_log (seq, time, kind, ref, body, prev_hash, hash)"
                            " VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)", r["seq"], r["time"], r["kind"], r["ref"],
                            json.dumps(body), prev, h)
        prev = h
    await admin.execute("UPDATE audit_head SET hash = $1 WHERE id = 1", prev)
    await admin.execute("UPDATE incidents SET title = 'routine check'")


async def test_chain_truncated_and_rebuilt_from_a_point_is_found_with_an_earlier_head(record, tmp_path):
    rig, admin, iid, _ = record
    earlier = tmp_path / "earlier.jsonl"
    r = cli("audit", "export", "--dsn", reader_dsn(rig.dsn), "--out", str(earlier))
    assert r.returncode == 0, r.stderr
    head = cli("audit", "export", "--dsn", reader_dsn(rig.dsn), "--head-only")
    seq, h = head.stdout.strip().split(":")
    k = await admin.fetchval("SELECT min(seq) FROM audit_log WHERE kind = 'incident'")
    await _rebuild_from(admin, k)
    # on its own the rebuilt chain is consistent: a superuser can hide this from the database alone
    assert "audit chain OK" in verify_cli(rig.dsn)
    # the head exported before gives it away, online and offline, naming where the rewrite starts
    for given in (str(earlier), f"{seq}:{h}"):
        out = verify_cli(rig.dsn, "--head", given)
        assert "audit chain BROKEN" in out and "rewritten" in out, out
    out = verify_cli(rig.dsn, "--head", str(earlier))
    assert f"the chain was rewritten from seq {k}" in out, out
    now = tmp_path / "now.jsonl"
    assert cli("audit", "export", "--dsn", rig.dsn, "--out", str(now)).returncode == 0
    r = cli("audit", "verify", "--export", str(now), "--head", str(earlier))
    assert r.returncode == 1 and f"the chain was rewritten from seq {k}" in r.stdout, r.stdout
    assert cli("audit", "verify", "--export", str(now)).returncode == 0  # the export alone verifies: hence the head
    # truncated without rebuilding past the earlier head: named too
    await admin.execute("DELETE FROM audit_log WHERE seq >= $1", int(seq) - 1)
    await admin.execute("UPDATE audit_head SET seq = $1, hash = (SELECT hash FROM audit_log WHERE seq = $1)",
                        int(seq) - 2)
    out = verify_cli(rig.dsn, "--head", f"{seq}:{h}")
    assert f"the chain ends at seq {int(seq) - 2}, before the earlier exported head" in out, out
