"""``plantwatch faults``: the TCP proxy's cuts and stalls against a real PostgreSQL, and a quick
subset of the fault run end to end (its table, and a checker that sees a loss it is shown)."""
from __future__ import annotations

import asyncio
import json

import asyncpg
import numpy as np
import pytest

from plantwatch.connectors.tcp_proxy import PgCopyWatch, TcpProxy
from plantwatch.daemon.lab.faults import main
from plantwatch.daemon.lab.faults.checker import check_readings
from plantwatch.daemon.lab.faults.ledger import Ledger
from plantwatch.daemon.lab.faults.report import CLUSTER_COLUMNS, COLUMNS


async def test_proxy_cuts_a_connection_in_the_middle_of_a_copy(postgres):
    async with TcpProxy(postgres.host, postgres.port, watch=PgCopyWatch) as px:
        dsn = postgres.admin_dsn.replace(f":{postgres.port}/", f":{px.port}/")
        conn = await asyncpg.connect(dsn)
        other = await asyncpg.connect(postgres.admin_dsn)
        try:
            await other.execute("CREATE TABLE IF NOT EXISTS proxy_copy (i int)")
            await other.execute("TRUNCATE proxy_copy")
            assert await conn.fetchval("SELECT 1") == 1  # queries pass, no cut
            cut = px.arm_cut()
            with pytest.raises((asyncpg.PostgresConnectionError, ConnectionError, asyncpg.InterfaceError)):
                async with conn.transaction():
                    await conn.copy_records_to_table("proxy_copy", records=[(i,) for i in range(200_000)])
            assert cut.done() and cut.result() > 0
            assert px.stats.cuts == 1
            assert await other.fetchval("SELECT count(*) FROM proxy_copy") == 0  # the COPY's transaction died
            conn2 = await asyncpg.connect(dsn)  # the proxy takes new connections at once
            assert await conn2.fetchval("SELECT 2") == 2
            await conn2.close()
        finally:
            conn.terminate()
            await other.execute("DROP TABLE IF EXISTS proxy_copy")
            await other.close()


async def test_proxy_stall_holds_traffic_until_resumed(postgres):
    async with TcpProxy(postgres.host, postgres.port) as px:
        conn = await asyncpg.connect(postgres.admin_dsn.replace(f":{postgres.port}/", f":{px.port}/"))
        try:
            px.stall()
            q = asyncio.create_task(conn.fetchval("SELECT 41 + 1"))
            done, _ = await asyncio.wait({q}, timeout=1.0)
            assert not done  # nothing gets through a stalled link ...
            px.resume()
            assert await asyncio.wait_for(q, 10) == 42  # ... and nothing is lost when it is lifted
        finally:
            await conn.close()


def test_an_unknown_fault_is_one_clear_line_before_anything_starts(capsys):
    assert main(["--only", "kill9,nope"]) == 2
    assert main(["--cluster", "--only", "db-freeze"]) == 2  # a single-instance fault, not a failover one
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("unknown fault(s) nope; known: kill9, broker-restart")
    assert out[1].startswith("unknown fault(s) db-freeze; known: kill9-dead")
    assert len(out) == 2


def test_pg_copy_watch_follows_the_frontend_protocol():
    w = PgCopyWatch()
    ssl = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
    startup = (17).to_bytes(4, "big") + (196608).to_bytes(4, "big") + b"user\0x\0\0\0"
    query = b"Q" + (13).to_bytes(4, "big") + b"COPY x\0\0\0"  # a 'd' inside a message body is no CopyData
    copy = b"d" + (9).to_bytes(4, "big") + b"abcd" + b"c" + (4).to_bytes(4, "big")
    stream = ssl + startup + query
    assert not any(w.feed(stream[i:i + 3]) for i in range(0, len(stream), 3))  # in pieces
    assert w.feed(copy) and w.copy_messages == 1


def test_checker_counts_a_missing_reading_and_a_duplicate():
    k, n = 4, 6
    ledger = Ledger(1000.0, 0.5, 2, 3, np.arange(k) * 0.5 + 1000.0, np.array([0, 0, 1, 1], np.int16),
                    np.ones((k, 2), bool), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                    np.zeros(0))
    index = {100 + i: i for i in range(n)}
    keys = [(kk, i) for kk in range(k) for i in range(n)]
    keys.remove((2, 4))  # lost in phase 1
    keys.append((0, 1))  # stored twice in phase 0
    sid = np.array([100 + i for _, i in keys])
    t = np.array([ledger.time_of(kk) for kk, _ in keys])
    t = np.append(t, 999.0)  # not the ledger's
    sid = np.append(sid, 100)
    rc = check_readings(ledger, sid, t, index)
    assert rc.phases[0] == {"sent": 12, "stored": 12, "lost": 0, "unacked_missing": 0, "duplicated": 1}
    assert rc.phases[1] == {"sent": 12, "stored": 11, "lost": 1, "unacked_missing": 0, "duplicated": 0}
    assert rc.unexpected == 1
    assert rc.examples_lost[0] | {"time": 0} == {"tick": 2, "sensor": 4, "collector": 1, "seq": 2, "time": 0, "phase": 1}


@pytest.mark.slow
def test_quick_fault_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "faults.json"
    rc = main(["--quick", "--only", "kill9,cut-copy", "--outage", "3", "--no-limits", "--rate", "2000",
               "--collectors", "2", "--settle", "1", "--fast-db", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for col in COLUMNS:
        assert col in text
    res = json.loads(out.read_text())
    assert [r["label"] for r in res["rows"]] == ["no fault (steady load)", "daemon kill -9 ×1", "connection cut mid-COPY"]
    for r in res["rows"]:
        assert r["readings"]["sent"] > 0 and r["readings"]["lost"] == 0, r
        assert r["alarms"]["injected"] == r["alarms"]["raised"] == 1, r
    assert res["total"]["sent"] == res["total"]["stored"] > 0
    assert "cut after" in " ".join(res["rows"][2]["notes"])
    # the checker sees a loss it is shown: stored readings deleted after the run are counted missing
    sc = res["self_check"]
    assert sc["deleted"] == 5 and sc["missing_after"] - sc["missing_before"] == 5 and sc["ok"]
    assert "checker self-test: 5 stored readings deleted" in text


@pytest.mark.slow
def test_quick_failover_run_kill9_of_one_instance(tmp_path, capsys):
    out = tmp_path / "failover.json"
    rc = main(["--cluster", "--quick", "--only", "kill9-dead", "--no-limits", "--fast-db", "--settle", "1",
               "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for col in CLUSTER_COLUMNS:
        assert col in text
    res = json.loads(out.read_text())
    assert res["mode"] == "cluster"
    steady, kill = res["rows"]
    assert kill["label"] == "kill -9, stays dead"
    assert kill["readings"]["sent"] > 0 and kill["readings"]["lost"] == 0, kill
    assert kill["alarms"]["injected"] >= 10 and kill["alarms"]["lost"] == 0, kill
    assert kill["alarms"]["duplicated"] == 0 and kill["alarms"]["stale"] == 0, kill
    # the dead instance's partitions were taken over (under a new epoch) within lease + renew
    # (2 s + 0.5 s, the defaults) plus slack for a loaded machine, and its alarms resumed
    assert kill["takeover"] is not None and kill["takeover"] < 2.0 + 0.5 + 2.5, kill
    assert kill["alarms"]["longest_gap"] is not None and kill["alarms"]["longest_gap"] < 3.0 + 2.5, kill
    assert any("instance hit: pw-" in n for n in kill["notes"])
    assert res["self_check"]["ok"]


@pytest.mark.slow
def test_quick_failover_database_outage_alarms_keep_coming(tmp_path, capsys):
    """Three instances, the database stopped: nobody exits, nothing is lost, and the crossings
    injected during the outage are alarmed on MQTT within seconds (published before their commit
    while each partition's MQTT session is connected), none duplicated or left stale."""
    out = tmp_path / "failover.json"
    rc = main(["--cluster", "--quick", "--only", "db-stop", "--no-limits", "--settle", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    steady, outage = res["rows"]
    assert outage["name"] == "db-stop" and outage["exited"] == 0, outage
    assert outage["readings"]["sent"] > 0 and outage["readings"]["lost"] == 0, outage
    assert outage["readings"]["duplicated"] == 0, outage
    assert outage["alarms"]["injected"] >= 5 and outage["alarms"]["lost"] == 0, outage
    assert outage["alarms"]["duplicated"] == 0 and outage["alarms"]["stale"] == 0, outage
    # the outage lasts several seconds; alarms waiting for the commit would show a gap as long
    assert outage["alarms"]["longest_gap"] is not None and outage["alarms"]["longest_gap"] < 3.0, outage
    assert res["self_check"]["ok"]
