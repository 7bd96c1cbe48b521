"""The alarm record in causal order (one monotonic order: the audit sequence; reading and
processing times both kept), a robot alarm that stays in the area where it was raised, and the
content of alarm change messages (MQTT ``alarms/changes`` and webhooks)."""
from __future__ import annotations

import re
import time

import asyncpg
import numpy as np
import pytest

from plantwatch.connectors import alarm_db
from plantwatch.connectors.store import AlarmWrite, Store
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.detection import Change, DetectorSet
from plantwatch.daemon.alarms.lifecycle import ManagedAlarmBook
from plantwatch.daemon.metrics import Metrics
from plantwatch.daemon.alarms.notify import Notifications
from plantwatch.daemon.alarms.report import incident_report_html

from .helpers import publish_batches, site_config, until
from .test_alarm_db import Rig, rig  # noqa: F401 - fixture
from .test_alarm_delivery import Hook, Listener, _daemon, _stop


async def test_incident_timeline_follows_the_alarm_record_not_the_stamps(rig: Rig):  # noqa: F811
    t0 = 1_700_000_000.0
    rig.now["t"] = t0 + 5  # the operator acknowledges at wall-clock time t0 + 5 ...
    await rig.change("G0", "normal", "high", t0)
    await rig.act("G0", "ack")
    await rig.change("G0", "high", "normal", t0 + 2)  # ... the return to normal is stamped with reading time
    # after an outage: raised (stamped when the daemon noticed), then the backlog's earlier reading clears it
    await rig.change("G1", "normal", "high", t0 + 30)
    await rig.change("G1", "high", "normal", t0 + 25)
    async with rig.store.pool.acquire() as conn:
        iid = await alarm_db.latest_incident_id(conn, ["G0"])
        inc = await alarm_db.get_incident(conn, iid)
        html = await incident_report_html(rig.store.alarm_records, iid)
        alarm = await alarm_db.get_alarm(conn, inc["cause_alarm_id"])
    steps = [(c["sensor"], c["from_state"], c["to_state"]) for c in inc["changes"]]
    assert steps == [("G0", "normal", "unack"), ("G0", "unack", "ack"), ("G0", "ack", "normal"),
                     ("G1", "normal", "unack"), ("G1", "unack", "rtn_unack")], steps
    seqs = [c["seq"] for c in inc["changes"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # both times kept: the reading time as stamped and the processing time
    assert [c["time"] - t0 for c in inc["changes"]] == [0, 5, 2, 30, 25]
    assert all(c["recorded_at"] > t0 + 30 for c in inc["changes"])
    # one timeline, changes and operator actions together, in the order of the record
    kinds = [(x["kind"], x.get("action") or x["to_state"]) for x in inc["timeline"]]
    assert kinds == [("change", "unack"), ("change", "ack"), ("action", "ack"), ("change", "normal"),
                     ("change", "unack"), ("change", "rtn_unack")], kinds
    assert [x["seq"] for x in inc["timeline"]] == sorted(x["seq"] for x in inc["timeline"])
    # the report lists the timeline in the same order
    rows = re.findall(r"<tr><td>(\d+)</td>", html.split('id="timeline"', 1)[1].split("</table>", 1)[0])
    assert [int(r) for r in rows] == [x["seq"] for x in inc["timeline"]]
    # and the alarm's own history (API /api/alarms/{id}) too
    assert [(c["from_state"], c["to_state"]) for c in alarm["changes"]] == [
        ("normal", "unack"), ("unack", "ack"), ("ack", "normal")]


ROBOT = site_config(n_gas=1, n_robot=1, detectors=(
    "detectors:\n  - {id: robot-h2s, type: limit, select: {kind: robot}, params: {high: 5}}\n"
    "alarms:\n  positions: [{id: east, areas: [area2]}, {id: west, areas: [area1]}]\n"))


async def test_robot_alarm_keeps_the_area_where_it_was_raised(db):
    cfg = load_config_text(ROBOT)
    store = await Store.open(db)
    try:
        ids_by_tag = await store.sync_registry(cfg.site, cfg.sensors)
        ids = np.array([ids_by_tag[s.id] for s in cfg.sensors], dtype=np.int32)
        book = ManagedAlarmBook(ids, cfg, clock=lambda: 1_700_000_100.0)
        async with store.pool.acquire() as conn:
            await alarm_db.sync_positions(conn, book.position_of_area)
        (w,) = DetectorSet(cfg).watches
        col = [s.id for s in cfg.sensors].index("R0")
        t0 = 1_700_000_000.0
        raised = book.apply([Change(w, col, t0, "normal", "high", 2.0, 2.0, (40.0, 50.0), 9.0)])  # in area1
        await store.write(None, alarm_ops=raised)
        cleared = book.apply([Change(w, col, t0 + 20, "high", "normal", 0.1, 2.0, (150.0, 50.0), 1.0)])  # in area2
        await store.write(None, alarm_ops=cleared)
        async with store.pool.acquire() as conn:
            (a,) = await alarm_db.list_alarms(conn)
            acts = await conn.fetch("SELECT area, position FROM alarm_activations")
            changes = await conn.fetch("SELECT area_id FROM alarm_changes ORDER BY seq")
        assert (a["sensor"], a["area"], a["state"]) == ("R0", "area1", "rtn_unack")
        assert [(r["area"], r["position"]) for r in acts] == [("area1", "west")]
        assert [r["area_id"] for r in changes] == ["area1", "area1"]
        (wc,) = [o for o in cleared if isinstance(o, AlarmWrite)]
        assert (wc.cause["area"], wc.cause["reading_area"]) == ("area1", "area2")
    finally:
        await store.close()


def test_clear_of_a_raise_grouped_in_a_flood_is_not_sent_alone():
    cfg = load_config_text(site_config(n_gas=2) + "notify: {webhooks: [{url: 'http://127.0.0.1:9/x'}],"
                           " console_url: 'https://console.site.example:8110/'}\n")
    m = Metrics()
    n = Notifications(cfg, m, {1: "G0", 2: "G1"})
    (_, sender), = n.senders

    def w(sid, frm, to, cause, severity="medium"):
        x = AlarmWrite("d", sid, frm, to, to != "rtn_unack", "high", severity, 1.0, cause, raised=to == "unack")
        x.alarm_id = 40 + sid
        return x

    n.offer([w(1, "normal", "unack", {"by": "detector", "incident_role": "consequence", "flood": True}),
             w(2, "normal", "unack", {"by": "detector", "incident_role": "cause", "flood": True}),
             w(1, "unack", "rtn_unack", {"by": "detector"}),  # the clear of the grouped raise
             w(2, "unack", "rtn_unack", {"by": "detector"}),
             w(1, "rtn_unack", "normal", {"by": "operator"})])
    msgs = list(sender._q)
    assert [(x["sensor"], x["to"]) for x in msgs] == [("G1", "unack"), ("G1", "rtn_unack")], msgs
    assert msgs[0]["console"] == "https://console.site.example:8110/alarms/42"
    assert m.registry.get_sample_value("plantwatch_notifications_grouped_total") == 3


@pytest.mark.slow
async def test_alarm_change_messages_carry_tag_area_value_limit_unit_and_alarm_id(tmp_path, mosquitto, db,
                                                                                 topic_prefix):
    from plantwatch.connectors.wire import encode_batch

    prefix = topic_prefix.rstrip("/")
    async with Hook() as hook, Listener(mosquitto.host, mosquitto.port, f"{prefix}/testsite/alarms/changes") as mq:
        det = ("detectors:\n"
               "  - {id: h2s-limit, type: limit, select: {kind: gas}, params: {high: 5, high_high: 10}}\n"
               f"notify:\n  backoff: 0.1\n  console_url: 'https://console.site.example:8110'\n"
               f"  webhooks:\n    - {{url: '{hook.url('/hook')}'}}\n")
        d = _daemon(tmp_path, mosquitto.host, mosquitto.port, db, prefix, det, n_gas=2)
        d.start()
        try:
            await d.wait_connected()
            now = time.time()
            await publish_batches(mosquitto.host, mosquitto.port, f"{prefix}/testsite/edge1/readings", [
                encode_batch("edge1", 0, [{"sensor": "G1", "time": now - 10, "value": 1.0}]),
                encode_batch("edge1", 1, [{"sensor": "G1", "time": now - 5, "value": 12.5}])])
            (m,) = await until(lambda: [x for x in mq.messages if x["to"] == "unack"] or None,
                               what="the raise on alarms/changes")
            conn = await asyncpg.connect(db)
            try:
                alarm_id, seq = (await conn.fetchrow(
                    "SELECT a.id, c.seq FROM alarms a JOIN alarm_changes c ON c.alarm_id = a.id"
                    " WHERE c.to_state = 'unack'")).values()
            finally:
                await conn.close()
            want = {"alarm_id": alarm_id, "seq": seq, "tag": "G1", "area": "area1", "unit": "ppm",
                    "value": 12.5, "limit": 10.0, "condition": "high_high", "detector": "h2s-limit"}
            assert {k: m.get(k) for k in want} == want, m
            (h,) = await until(lambda: [x for x in hook.received if x.get("to") == "unack"] or None,
                               what="the raise at the webhook")
            assert {k: h.get(k) for k in want} == want, h
            assert h["console"] == f"https://console.site.example:8110/alarms/{alarm_id}"
            assert d.terminate() == 0, d.log()
        finally:
            _stop(d)
