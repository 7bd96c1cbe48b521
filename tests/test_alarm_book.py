"""Alarm states from detector transitions (the daemon-side ISA-18.2 rules)."""
from __future__ import annotations

import numpy as np

from plantwatch.connectors.store import AlarmWrite, EventEnd, EventStart
from plantwatch.daemon.alarms.book import AlarmBook
from plantwatch.daemon.config.model import load_config_text
from plantwatch.daemon.detection import Change, DetectorSet

from .helpers import site_config

CFG = load_config_text(site_config(n_gas=2))
W = DetectorSet(CFG).watches[0]


def ch(old, new, t=1.0, col=0):
    return Change(W, col, t, old, new, 7.0, 9.0)


def writes(ops):
    return [o for o in ops if isinstance(o, AlarmWrite)]


def test_raise_escalate_clear():
    book = AlarmBook(np.array([11, 12], dtype=np.int32))
    ops = book.apply([ch("normal", "high")])
    assert [type(o) for o in ops] == [EventStart, AlarmWrite]
    (w,) = writes(ops)
    assert (w.from_state, w.to_state, w.active, w.severity, w.raised, w.sensor_id) == ("normal", "unack", True, "high", True, 11)
    ops = book.apply([ch("high", "high_high", 2.0)])
    assert [type(o) for o in ops] == [EventEnd, EventStart, AlarmWrite]
    (w,) = writes(ops)
    assert (w.to_state, w.condition, w.severity) == ("unack", "high_high", "critical")
    (w,) = writes(book.apply([ch("high_high", "normal", 3.0)]))
    assert (w.from_state, w.to_state, w.active, w.cleared, w.severity) == ("unack", "rtn_unack", False, True, "critical")
    assert w.cause["peak_score"] == 9.0


def test_acknowledged_alarm_realarms_when_worse_and_clears_to_normal():
    book = AlarmBook(np.array([11, 12], dtype=np.int32))
    book.apply([ch("normal", "high")])
    book.alarms[("h2s-limit", 11)].state = "ack"  # operator acknowledged
    (w,) = writes(book.apply([ch("high", "high_high")]))
    assert (w.from_state, w.to_state, w.raised, w.cause["reason"]) == ("ack", "unack", True, "worsened")
    book.alarms[("h2s-limit", 11)].state = "ack"
    (w,) = writes(book.apply([ch("high_high", "high")]))  # better: stays acknowledged
    assert w.to_state == "ack"
    (w,) = writes(book.apply([ch("high", "normal")]))
    assert w.to_state == "normal"


def test_returned_unacknowledged_alarm_raised_again():
    book = AlarmBook(np.array([11, 12], dtype=np.int32))
    book.apply([ch("normal", "high"), ch("high", "normal")])
    (w,) = writes(book.apply([ch("normal", "high")]))
    assert (w.from_state, w.to_state, w.raised) == ("rtn_unack", "unack", True)


def test_shelved_alarm_is_tracked_not_shown():
    book = AlarmBook(np.array([11, 12], dtype=np.int32))
    book.load([{"detector_id": "h2s-limit", "sensor_id": 12, "state": "shelved", "active": False,
                "condition": "normal", "severity": "high"}])
    (w,) = writes(book.apply([ch("normal", "high", col=1)]))
    assert (w.to_state, w.active) == ("shelved", True)
    assert book.counts_by_severity()["high"] == 0
