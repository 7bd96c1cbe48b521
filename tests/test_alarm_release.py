"""When decided alarm changes go out (daemon/alarms/release.py): in decision order, at their commit
or after ``publish_wait``, never after their unit was refused by the lease fence."""
from __future__ import annotations

import asyncio

from plantwatch.connectors.store import AlarmWrite
from plantwatch.daemon.alarms.release import DecidedChanges


def _w(sensor: int, to: str = "unack") -> AlarmWrite:
    return AlarmWrite("lim", sensor, "normal" if to == "unack" else "unack", to, to == "unack", "high", "high",
                      1.0, {})


async def test_changes_go_out_at_their_commit_in_decision_order_with_their_ids():
    out: list[tuple[int, int | None]] = []
    rel = DecidedChanges(lambda ws: out.extend((w.sensor_id, w.alarm_id) for w in ws), lambda w: True, wait=5.0)
    a, b = rel.add([_w(1)]), rel.add([_w(2)])
    b.writes[0].alarm_id = 20
    rel.committed(b)  # the later one committed first: it waits for the earlier one
    assert out == []
    a.writes[0].alarm_id = 10
    rel.committed(a)
    assert out == [(1, 10), (2, 20)]


async def test_an_uncommitted_change_goes_out_after_the_wait_with_the_alarm_id_learned_earlier():
    out: list[tuple[int, int | None, int | None]] = []
    rel = DecidedChanges(lambda ws: out.extend((w.sensor_id, w.alarm_id, w.seq) for w in ws), lambda w: True,
                         wait=0.05)
    first = rel.add([_w(1)])
    first.writes[0].alarm_id, first.writes[0].seq = 7, 3
    rel.committed(first)
    rel.add([_w(1, "rtn_unack")])  # the database stops answering: no commit comes
    await asyncio.sleep(0.2)
    assert out == [(1, 7, 3), (1, 7, None)]
    assert rel.released_before_commit == 1 and rel.pending() == 0


async def test_a_refused_unit_is_never_published_and_does_not_hold_the_next_back():
    out: list[int] = []
    rel = DecidedChanges(lambda ws: out.extend(w.sensor_id for w in ws), lambda w: True, wait=5.0)
    a, b = rel.add([_w(1)]), rel.add([_w(2)])
    rel.committed(b)
    rel.refused(a)
    assert out == [2]


async def test_without_the_partition_nothing_goes_out_before_the_commit():
    out: list[int] = []
    held = {"ok": False}
    rel = DecidedChanges(lambda ws: out.extend(w.sensor_id for w in ws), lambda w: held["ok"], wait=0.05)
    d = rel.add([_w(1)])
    await asyncio.sleep(0.2)
    assert out == []  # the lease is not valid by this process's clock: wait for the commit
    rel.committed(d)
    assert out == [1]
