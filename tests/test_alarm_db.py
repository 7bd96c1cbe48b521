"""Alarm lifecycle through the real write path: state survives a restart in every state, every
change and action lands in the audit chain, and tampering with the chain is found."""
from __future__ import annotations

import json

import asyncpg
import numpy as np
import pytest

from plantwatch.connectors import alarm_db, audit
from plantwatch.connectors.store import Store
from plantwatch.daemon.config.model import config_hash
from plantwatch.daemon.detection import Change
from plantwatch.daemon.alarms.lifecycle import ManagedAlarmBook

from .helpers import superuser_dsn
from .test_lifecycle import CFG, CFG_TEXT, H2S, P

STATES = ["normal", "unack", "ack", "rtn_unack", "shelved", "suppressed", "out_of_service"]


class Rig:
    """A store and a book, and 'restart' = a new book loaded from the database."""

    def __init__(self, store: Store, ids: np.ndarray, clock):
        self.store, self.ids, self.clock = store, ids, clock
        self.book = ManagedAlarmBook(ids, CFG, config_hash=config_hash(CFG_TEXT), clock=clock)
        self.key = {tag: (("p" if tag.startswith("P") else "h2s"), int(ids[i]))
                    for i, tag in enumerate(s.id for s in CFG.sensors)}

    async def write(self, ops):
        if ops:
            await self.store.write(None, alarm_ops=ops)

    async def change(self, tag, old, new, t):
        col = [s.id for s in CFG.sensors].index(tag)
        w = P if tag.startswith("P") else H2S
        await self.write(self.book.apply([Change(w, col, t, old, new, 7.0, 9.0)]))

    async def act(self, tag, action, **kw):
        kw.setdefault("actor", "ann")
        kw.setdefault("role", "engineer")
        await self.write(self.book.act(self.key[tag], action, **kw))

    async def restart(self):
        book = ManagedAlarmBook(self.ids, CFG, config_hash=config_hash(CFG_TEXT), clock=self.clock)
        async with self.store.pool.acquire() as conn:
            book.load(await alarm_db.load_alarm_rows(conn))
            book.load_incidents(await alarm_db.load_open_incidents(conn))
        old = self.book
        for k, a in old.alarms.items():
            b = book.alarms[k]
            assert (b.state, b.active, b.condition, b.severity, b.shelved_until, b.suppressed_by, b.incident) == (
                a.state, a.active, a.condition, a.severity, a.shelved_until, a.suppressed_by, a.incident), k
        assert set(book.incidents) == set(old.incidents)
        self.book = book


@pytest.fixture
async def rig(db):
    store = await Store.open(db)
    ids_by_tag = await store.sync_registry(CFG.site, CFG.sensors)
    await store.record_config(config_hash(CFG_TEXT), CFG_TEXT)
    ids = np.array([ids_by_tag[s.id] for s in CFG.sensors], dtype=np.int32)
    now = {"t": 1_700_000_000.0}
    r = Rig(store, ids, lambda: now["t"])
    r.now = now
    try:
        yield r
    finally:
        await store.close()


async def _to_state(r: Rig, state: str, t0: float) -> None:
    """Bring G0's alarm (h2s) — or P0's for 'suppressed' — into ``state``."""
    if state == "normal":
        await r.change("G0", "normal", "high", t0)
        await r.change("G0", "high", "normal", t0 + 1)
        await r.act("G0", "ack")
    elif state == "suppressed":
        await r.change("G2", "normal", "high", t0)
        await r.change("P0", "normal", "low", t0 + 1)
    else:
        await r.change("G0", "normal", "high", t0)
        if state == "ack":
            await r.act("G0", "ack")
        elif state == "rtn_unack":
            await r.change("G0", "high", "normal", t0 + 1)
        elif state == "shelved":
            await r.act("G0", "shelve", reason="nuisance", duration=60, now=r.now["t"])
        elif state == "out_of_service":
            await r.act("G0", "out_of_service", reason="sensor swap")
    key = r.key["P0" if state == "suppressed" else "G0"]
    assert r.book.alarms[key].state == state


@pytest.mark.parametrize("state", STATES)
async def test_state_survives_restart_and_goes_on(rig: Rig, state):
    t0 = rig.now["t"] - 100
    await _to_state(rig, state, t0)
    await rig.restart()
    # ... and the restarted book carries on correctly from there
    if state == "normal":
        await rig.change("G0", "normal", "high", t0 + 10)
        assert rig.book.alarms[rig.key["G0"]].state == "unack"
    elif state == "unack":
        await rig.act("G0", "ack")
        assert rig.book.alarms[rig.key["G0"]].state == "ack"
    elif state == "ack":
        await rig.change("G0", "high", "high_high", t0 + 10)
        assert rig.book.alarms[rig.key["G0"]].state == "unack"  # re-alarm
    elif state == "rtn_unack":
        await rig.act("G0", "ack")
        assert rig.book.alarms[rig.key["G0"]].state == "normal"
    elif state == "shelved":
        assert rig.book.expire_shelves(rig.now["t"] + 59) == []
        await rig.write(rig.book.expire_shelves(rig.now["t"] + 60))
        assert rig.book.alarms[rig.key["G0"]].state == "unack"
    elif state == "suppressed":
        await rig.change("G2", "high", "normal", t0 + 10)
        assert rig.book.alarms[rig.key["P0"]].state == "unack"
    elif state == "out_of_service":
        await rig.act("G0", "return_to_service", reason="back")
        assert rig.book.alarms[rig.key["G0"]].state == "unack"
    await rig.restart()
    async with rig.store.pool.acquire() as conn:
        v = await audit.verify(conn)
        assert v.ok, v.problems
        # every alarm change and operator action is in the chain
        n_changes = await conn.fetchval("SELECT count(*) FROM alarm_changes")
        n_actions = await conn.fetchval("SELECT count(*) FROM operator_actions")
        kinds = {r["kind"]: r["n"] for r in await conn.fetch("SELECT kind, count(*) AS n FROM audit_log GROUP BY kind")}
        assert kinds.get("alarm_change") == n_changes and kinds.get("operator_action", 0) == n_actions
        assert kinds["config"] == 1 and kinds["incident"] >= 1


async def test_operator_action_rows_and_alarm_fields(rig: Rig):
    await rig.change("G0", "normal", "high_high", rig.now["t"])
    await rig.act("G0", "ack", actor="ann", role="operator", reason="seen it")
    await rig.act("G0", "comment", actor="bob", role="operator", reason="crew dispatched")
    await rig.act("G0", "shelve", actor="ann", role="operator", reason="known leak", duration=600, now=rig.now["t"])
    async with rig.store.pool.acquire() as conn:
        alarm_id = await conn.fetchval("SELECT id FROM alarms WHERE detector_id = 'h2s'")
        a = await alarm_db.get_alarm(conn, alarm_id)
        assert (a["state"], a["priority"], a["acked_by"], a["shelved_by"], a["state_reason"]) == (
            "shelved", 1, "ann", "ann", "known leak")
        assert a["shelved_until"] == pytest.approx(rig.now["t"] + 600)
        assert [(x["action"], x["actor"], x["reason"]) for x in a["actions"]] == [
            ("ack", "ann", "seen it"), ("comment", "bob", "crew dispatched"), ("shelve", "ann", "known leak")]
        assert [(c["from_state"], c["to_state"], c["cause"]["by"]) for c in a["changes"]] == [
            ("normal", "unack", "detector"), ("unack", "ack", "operator"), ("ack", "shelved", "operator")]
        inc = await alarm_db.get_incident(conn, a["incident_id"])
        assert inc["config_hash"] == config_hash(CFG_TEXT) and inc["alarms"][0]["role"] == "cause"
        ops = await conn.fetch("SELECT body::text AS b FROM audit_log WHERE kind = 'operator_action' ORDER BY seq")
        assert [json.loads(o["b"])["action"] for o in ops] == ["ack", "comment", "shelve"]


# --- tampering ---------------------------------------------------------------------------------
async def _chain(rig: Rig) -> None:
    t = rig.now["t"] - 500
    await rig.change("G0", "normal", "high", t)
    await rig.act("G0", "ack", reason="seen")
    await rig.change("G1", "normal", "high", t + 5)
    await rig.act("G1", "comment", reason="hmm")
    await rig.change("G0", "high", "normal", t + 10)
    await rig.change("G1", "high", "normal", t + 12)
    await rig.act("G1", "ack")


async def _verdict(rig: Rig) -> audit.Verdict:
    async with rig.store.pool.acquire() as conn:
        return await audit.verify(conn)



@pytest.fixture
async def chain(rig: Rig, db):
    await _chain(rig)
    rig.dsn = db
    v = await _verdict(rig)
    assert v.ok and v.entries >= 12, v.problems
    conn = await asyncpg.connect(superuser_dsn(db))  # the test cluster's superuser: the trigger lets it through
    try:
        yield rig, conn, v
    finally:
        await conn.close()


async def test_tamper_update_body_is_found(chain):
    rig, conn, _ = chain
    await conn.execute("UPDATE audit_log SET body = jsonb_set(body, '{reason}', '\"nothing to see\"')"
                       " WHERE seq = (SELECT min(seq) FROM audit_log WHERE kind = 'operator_action')")
    seq = await conn.fetchval("SELECT min(seq) FROM audit_log WHERE kind = 'operator_action'")
    v = await _verdict(rig)
    assert not v.ok and (v.first.seq, v.first.kind) == (seq, "altered")


async def test_tamper_update_and_rehash_is_found_at_the_next_link(chain):
    rig, conn, _ = chain
    row = await conn.fetchrow("SELECT * FROM audit_log WHERE seq = 5")
    body = json.loads(await conn.fetchval("SELECT body::text FROM audit_log WHERE seq = 5"))
    body["forged"] = True
    body = audit.clean(body)
    h = audit.entry_hash(row["prev_hash"], 5, audit.micros(row["time"]), row["kind"], row["ref"], body)
    await conn.execute("UPDATE audit_log SET body = $1::text::jsonb, hash = $2 WHERE seq = 5", json.dumps(body), h)
    v = await _verdict(rig)
    assert not v.ok and v.first.seq == 6 and v.first.kind == "altered"


async def test_tamper_delete_is_found(chain):
    rig, conn, _ = chain
    await conn.execute("DELETE FROM audit_log WHERE seq = 4")
    v = await _verdict(rig)
    assert not v.ok and (v.first.seq, v.first.kind) == (4, "deleted")


async def test_tamper_delete_last_is_found(chain):
    rig, conn, v0 = chain
    await conn.execute("DELETE FROM audit_log WHERE seq = $1", v0.last_seq)
    v = await _verdict(rig)
    assert not v.ok and (v.first.seq, v.first.kind) == (v0.last_seq, "deleted")


async def test_tamper_insert_forged_row_is_found(chain):
    rig, conn, v0 = chain
    # forge an entry after the last one, correctly linked and hashed: only the head catches it
    from datetime import datetime, timezone
    t = datetime.now(timezone.utc)
    body = {"action": "ack", "actor": "nobody"}
    seq = v0.last_seq + 1
    h = audit.entry_hash(v0.last_hash, seq, audit.micros(t), "operator_action", "operator_action:999", body)
    await conn.execute("INSERT INTO audit_log VALUES ($1, $2, 'operator_action', 'operator_action:999',"
                       " $3::text::jsonb, $4, $5)", seq, t, json.dumps(body), v0.last_hash, h)
    v = await _verdict(rig)
    assert not v.ok and (v.first.seq, v.first.kind) == (seq, "inserted")


async def test_tamper_insert_in_the_middle_is_found(chain):
    rig, conn, _ = chain
    # make room by shifting, then insert a forged row at seq 3: the links no longer hold
    await conn.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 3")
    await conn.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1003")
    await conn.execute("INSERT INTO audit_log SELECT 3, time, kind, ref, body, prev_hash, 'f' || substr(hash, 2)"
                       " FROM audit_log WHERE seq = 2")
    v = await _verdict(rig)
    assert not v.ok and v.first.seq == 3


async def test_tamper_reorder_is_found(chain):
    rig, conn, _ = chain
    await conn.execute("UPDATE audit_log SET seq = -seq WHERE seq IN (3, 4)")
    await conn.execute("UPDATE audit_log SET seq = CASE seq WHEN -3 THEN 4 ELSE 3 END WHERE seq IN (-3, -4)")
    v = await _verdict(rig)
    assert not v.ok and v.first.seq == 3


async def test_append_only_trigger_refuses_non_superusers(chain, db):
    rig, conn, _ = chain
    await conn.execute("CREATE ROLE pw_app LOGIN PASSWORD 'x'")
    await conn.execute("GRANT SELECT, UPDATE, DELETE, INSERT ON audit_log TO pw_app")
    await conn.execute("SET ROLE pw_app")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("UPDATE audit_log SET ref = 'x' WHERE seq = 1")
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("DELETE FROM audit_log WHERE seq = 1")
    await conn.execute("RESET ROLE")
    await conn.execute("DROP OWNED BY pw_app; DROP ROLE pw_app")
    assert (await _verdict(rig)).ok


async def test_export_verifies_offline_and_tampered_file_fails(chain, tmp_path):
    rig, conn, v0 = chain
    lines = list(await audit.export(conn, None, None))
    assert audit.verify_lines(lines).ok
    header = json.loads(lines[0])
    assert header["anchor"] == audit.GENESIS and header["last_hash"] == v0.last_hash
    # a time-bounded range hangs from the hash of the entry before it
    mid = await conn.fetchval("SELECT time FROM audit_log WHERE seq = 4")
    part = list(await audit.export(conn, mid, None))
    h = json.loads(part[0])
    assert h["first_seq"] <= 4 and h["anchor"] != audit.GENESIS
    assert audit.verify_lines(part).ok
    # tamper with one line
    bad = list(lines)
    e = json.loads(bad[3])
    e["body"]["tampered"] = 1
    bad[3] = json.dumps(e)
    v = audit.verify_lines(bad)
    assert not v.ok and v.first.seq == e["seq"] and v.first.kind == "altered"
    # drop one line
    v = audit.verify_lines(lines[:3] + lines[4:])
    assert not v.ok and v.first.kind == "deleted"
    # drop the last line: the header's last hash catches it
    v = audit.verify_lines(lines[:-1])
    assert not v.ok and v.first.kind == "deleted"
    # an inspector's own anchor that does not match
    assert not audit.verify_lines(part, anchor="1" * 64).ok


async def test_audit_chain_on_plain_postgres(plain_db):
    store = await Store.open(plain_db)
    try:
        await store.sync_registry(CFG.site, CFG.sensors)
        await store.record_config("h1", "x: 1")
        await store.record_config("h1", "x: 1")
        async with store.pool.acquire() as conn:
            v = await audit.verify(conn)
            assert v.ok and v.entries == 2
    finally:
        await store.close()


async def test_records_cross_checked_against_the_chain(chain):
    rig, conn, _ = chain
    async with rig.store.pool.acquire() as c:
        assert await audit.verify_records(c) == []
    cid = await conn.fetchval("SELECT min(id) FROM alarm_changes")
    await conn.execute("UPDATE alarm_changes SET severity = 'low' WHERE id = $1", cid)
    oid = await conn.fetchval("SELECT min(id) FROM operator_actions")
    await conn.execute("UPDATE operator_actions SET actor = 'mallory' WHERE id = $1", oid)
    aid = await conn.fetchval("SELECT min(id) FROM alarms")
    await conn.execute("UPDATE alarms SET state = 'shelved' WHERE id = $1", aid)
    async with rig.store.pool.acquire() as c:
        found = [str(p) for p in await audit.verify_records(c)]
    assert any(f"alarm_changes row {cid} differs" in p for p in found)
    assert any(f"alarm {aid} is in state 'shelved'" in p for p in found)
    assert any(f"operator_actions row {oid} differs" in p for p in found)
    await conn.execute("DELETE FROM operator_actions WHERE id = $1", oid)
    async with rig.store.pool.acquire() as c:
        found = [str(p) for p in await audit.verify_records(c)]
    assert any("gone from operator_actions" in p for p in found)
    # the CLI reports the chain and the records together
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "plantwatch.daemon.cli.main", "audit", "verify", "--dsn", rig.dsn],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "BROKEN" in r.stdout and "operator_actions" in r.stdout, r.stdout
