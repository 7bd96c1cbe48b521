"""Sequence-gap accounting per episode of a collector's counter (daemon/ingest/sequences.py): one batch
with an absurd ``seq`` cannot disable it, a counter that restarts is re-based, redeliveries are
not restarts, and the state survives a daemon restart (the true last ``seq``, not the greatest)."""
from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from plantwatch.connectors.wire import encode_batch
from plantwatch.daemon.ingest.sequences import Sequences

from .helpers import DaemonProcess, new_metrics_port, publish_batches, site_config, until

BIG = 2**63 - 1


def _run(seqs, *, sent=None, max_jump=1000, redelivery=100):
    s = Sequences(max_jump, redelivery)
    steps = [s.observe("edge1", q, sent[i] if sent else None) for i, q in enumerate(seqs)]
    return s, steps


def test_an_absurd_seq_is_a_restart_not_missing_batches():
    s, steps = _run([0, 1, BIG, 100, 105])
    assert [x.gap for x in steps] == [0, 0, 0, 0, 4]
    assert [x.restart for x in steps] == [False, False, True, True, False]
    assert s.state["edge1"].last == 105 and s.state["edge1"].episode_gaps == 4


def test_a_counter_reset_to_zero_is_gap_checked_again():
    s, steps = _run([5000, 5001, 0, 1, 3], sent=[10.0, 11.0, 12.0, 13.0, 14.0])
    assert [x.restart for x in steps] == [False, False, True, False, False]
    assert [x.gap for x in steps] == [0, 0, 0, 0, 1]


def test_redeliveries_are_neither_gaps_nor_restarts():
    # the broker delivers 8..10 again (committed, their PUBACK lost) before 11
    s, steps = _run([8, 9, 10, 8, 9, 10, 11], sent=[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0])
    assert not any(x.restart for x in steps) and sum(x.gap for x in steps) == 0
    assert s.state["edge1"].last == 11


def test_a_jump_within_the_plausible_range_is_a_gap():
    _, steps = _run([0, 1000], max_jump=1000)  # 999 missing: plausible
    assert steps[1].gap == 999 and not steps[1].restart
    _, steps = _run([0, 1002], max_jump=1000)  # 1001 missing: not
    assert steps[1].gap == 0 and steps[1].restart


@pytest.mark.slow
async def test_gap_accounting_survives_a_hostile_seq_and_a_restart(tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    topic = f"{prefix}/testsite/edge1/readings"
    mport = new_metrics_port()
    cfg = tmp_path / "site.yaml"
    cfg.write_text(site_config(mqtt=(mosquitto.host, mosquitto.port), prefix=prefix, dsn=db,
                               client_id=f"pw-{uuid.uuid4().hex[:8]}", metrics_port=mport))
    d = DaemonProcess(cfg, mport)
    t = time.time() - 60

    def batch(seq: int, k: int) -> bytes:
        return encode_batch("edge1", seq, [{"sensor": "G0", "time": t + k, "value": 1.0}], sent=t + k)

    d.start()
    try:
        await d.wait_connected(60)
        await publish_batches(mosquitto.host, mosquitto.port, topic, [batch(BIG, 0), batch(100, 1), batch(105, 2)])
        await until(lambda: d.stored() >= 3, what="three batches stored")
        m = d.metrics()
        assert m['plantwatch_sequence_gaps_total{collector="edge1"}'] == 4
        assert m['plantwatch_sequence_restarts_total{collector="edge1"}'] == 1
        assert d.terminate(timeout=30) == 0, d.log()
        d.start()
        await d.wait_connected(60)
        await publish_batches(mosquitto.host, mosquitto.port, topic, [batch(106, 3), batch(110, 4)])
        await until(lambda: d.stored() >= 2, what="two more batches stored")
        assert d.terminate(timeout=30) == 0, d.log()
    finally:
        d.kill()
    assert "went back from 9223372036854775807 to 100" in d.log()
    conn = await asyncpg.connect(db)
    try:
        row = await conn.fetchrow("SELECT last_seq, gaps, batches FROM collectors WHERE id = 'edge1'")
        extra = await conn.fetchrow("SELECT restarts, episode_gaps FROM collectors WHERE id = 'edge1'")
    finally:
        await conn.close()
    assert (row["last_seq"], row["gaps"], row["batches"]) == (110, 4 + 3, 5)
    assert (extra["restarts"], extra["episode_gaps"]) == (1, 7)
