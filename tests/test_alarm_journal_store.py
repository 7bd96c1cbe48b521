"""The alarm journal file and its replay against a real PostgreSQL: every alarm operation type
survives the journal unchanged, a replay writes an entry exactly once (also when the database
already committed it and only the journal's bookkeeping was lost), and a full journal is loud but
never holds an alarm back."""
from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import pytest

from plantwatch.connectors import alarm_db, audit
from plantwatch.connectors.alarm_journal import (AlarmJournal, JournalApplied, JournalInUse, UnknownOp, decode_ops,
                                                encode_ops)
from plantwatch.connectors.store import AlarmWrite, EventEnd, EventStart, Store
from plantwatch.daemon.ingest.alarm_journal import Journaling, journal_path, replay
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.metrics import Metrics

from .helpers import site_config


def _raise(sid: int, t: float, *, nan: bool = False) -> list:
    cause = {"by": "detector", "score": np.float64(7.0), **({"nan": float("nan")} if nan else {})}
    return [EventStart("h2s-limit", {"type": "limit"}, sid, "high", "high", t, np.float64(7.0)),
            AlarmWrite("h2s-limit", sid, "normal", "unack", True, "high", "high", t, cause, raised=True)]


def test_every_alarm_operation_type_survives_the_journal(tmp_path):
    t = 1795430000.25
    ops = [*_raise(3, t, nan=True), EventEnd("h2s-limit", 3, t + 5, 9.5),
           alarm_db.AlarmFields("h2s-limit", 3, {"acked_at": t + 1, "acked_by": "op"}),
           alarm_db.OperatorAction("h2s-limit", 3, t + 1, "ack", "op", "operator", "seen", {"x": 1}, "unack", "ack"),
           alarm_db.IncidentOpen("k1", "site", t, "gas", "area1", "G0", "h2s-limit", 3, "high", "high", "abc"),
           alarm_db.IncidentJoin("k1", t, "area1", "G1", "h2s-limit", 4, "high", "high"),
           alarm_db.IncidentClose("k1", t + 60)]
    back = decode_ops(encode_ops(ops))
    assert [type(o) for o in back] == [type(o) for o in ops]
    for a, b in zip(ops, back):
        fa, fb = dataclasses.asdict(a), dataclasses.asdict(b)
        if isinstance(a, AlarmWrite):  # NaN is kept (and is not equal to itself)
            assert math.isnan(fb["cause"].pop("nan")) and math.isnan(fa["cause"].pop("nan"))
        assert fa == fb
    # the file keeps it across a reopen, in order; a second opener is refused
    j = AlarmJournal(tmp_path / "j.sqlite", limit=10)
    k1, k2 = j.append(ops[:2]), j.append(ops[2:3])
    with pytest.raises(JournalInUse):
        AlarmJournal(tmp_path / "j.sqlite", limit=10)
    j.close()
    j = AlarmJournal(tmp_path / "j.sqlite", limit=10)
    assert [e.key for e in j.pending()] == [k1, k2] and len(j) == 2
    j.done(k1)
    assert [e.key for e in j.pending()] == [k2]
    j.close()


def test_the_journal_file_is_per_site_instance_and_database(tmp_path):
    cfg = load_config_text(site_config(n_gas=1, state=f"{{data_dir: '{tmp_path}'}}"))
    a = journal_path(cfg, "postgresql://u:secret@db1:5432/plant")
    b = journal_path(cfg, "postgresql://u:secret@db2:5432/plant")
    assert a != b and a.parent == tmp_path / "alarm-journal" and "secret" not in str(a)


def test_a_full_journal_is_loud_and_holds_no_alarm_back(tmp_path, caplog):
    m = Metrics()
    seen: list[tuple[bool, str]] = []
    j = Journaling(AlarmJournal(tmp_path / "j.sqlite", limit=1), m, on_condition=lambda a, t: seen.append((a, t)))
    first = j.record(_raise(1, 1.0))
    assert isinstance(first[-1], JournalApplied)
    caplog.set_level(logging.WARNING)
    second = j.record(_raise(1, 2.0))
    third = j.record(_raise(1, 3.0))
    assert second == _raise(1, 2.0) and third == _raise(1, 3.0)  # written and published all the same
    assert m.registry.get_sample_value("plantwatch_alarm_journal_full") == 1
    assert m.registry.get_sample_value("plantwatch_alarm_journal_unjournaled_total") == 4
    assert [a for a, _ in seen] == [True] and "NOT journaled" in seen[0][1]
    assert len([r for r in caplog.records if r.levelno == logging.CRITICAL]) == 1  # once per episode
    j.committed(first)
    assert isinstance(j.record(_raise(1, 4.0))[-1], JournalApplied)
    assert [a for a, _ in seen] == [True, False] and "4 alarm operation(s) were not journaled" in seen[1][1]
    assert m.registry.get_sample_value("plantwatch_alarm_journal_full") == 0


async def test_a_replay_writes_each_entry_once(tmp_path, db):
    cfg = load_config_text(site_config(n_gas=2, dsn=db))
    store = await Store.open(db, connections=2)
    try:
        ids = await store.sync_registry(cfg.site, cfg.sensors)
        m = Metrics()
        journal = AlarmJournal(tmp_path / "j.sqlite", limit=100)
        j = Journaling(journal, m)
        t1, t2 = time.time() - 10, time.time() - 5
        committed = j.record(_raise(ids["G0"], t1))
        waiting = j.record(_raise(ids["G1"], t2))
        # the first unit committed, but the run stopped before the journal forgot it
        await store.write(None, alarm_ops=committed)
        assert len(journal) == 2

        j2 = Journaling(journal, m)
        assert await replay(j2, store, m) == 1
        assert len(journal) == 0 and await replay(j2, store, m) == 0
        async with store.pool.acquire() as conn:
            rows = await conn.fetch("SELECT s.tag, c.time FROM alarm_changes c JOIN alarms a ON a.id = c.alarm_id"
                                    " JOIN sensors s ON s.id = a.sensor_id ORDER BY c.id")
            assert [(r["tag"], r["time"].timestamp()) for r in rows] == [("G0", pytest.approx(t1, abs=1e-6)),
                                                                          ("G1", pytest.approx(t2, abs=1e-6))]
            assert (await audit.verify(conn)).ok
        # the redelivered readings decide the replayed change again: not written, not published twice
        again = _raise(ids["G1"], t2)
        again[1].from_state = "unack"
        assert j2.drop_replayed(again) == []
        assert j2.drop_replayed(_raise(ids["G1"], t2 + 1)) == _raise(ids["G1"], t2 + 1)
        assert m.registry.get_sample_value("plantwatch_alarm_journal_replayed_total") == 1
        assert waiting[-1].key.endswith(":2")
    finally:
        await store.close()


async def test_a_journaled_operation_the_database_refuses_is_quarantined_not_retried(tmp_path, db):
    cfg = load_config_text(site_config(n_gas=1, dsn=db))
    store = await Store.open(db, connections=2)
    try:
        ids = await store.sync_registry(cfg.site, cfg.sensors)
        m = Metrics()
        journal = AlarmJournal(tmp_path / "j.sqlite", limit=100)
        bad = alarm_db.OperatorAction("h2s-limit", ids["G0"], time.time(), "ack", "op", "operator", "x",
                                      from_state="unack", to_state="ack")
        bad.t = 1e300  # a time the database cannot hold
        journal.append([*_raise(ids["G0"], time.time()), bad])
        assert await replay(Journaling(journal, m), store, m) == 1
        assert len(journal) == 0
        async with store.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM alarm_changes") == 1
            assert await conn.fetchval("SELECT count(*) FROM dead_letters WHERE reason = 'unstorable_alarm_op'") == 1
    finally:
        await store.close()


def test_only_operations_of_the_alarm_modules_are_journaled_or_read_back():
    @dataclasses.dataclass
    class Foreign:
        x: int

    with pytest.raises(UnknownOp):
        encode_ops([Foreign(1)])
    with pytest.raises(UnknownOp):
        decode_ops('[{"module": "os", "type": "system", "fields": {}}]')
    with pytest.raises(UnknownOp):
        decode_ops('[{"module": "plantwatch.connectors.store", "type": "Store", "fields": {}}]')
