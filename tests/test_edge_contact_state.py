"""The contact_state detector: an opening (or closing) contact is an alarm of its own, with delays."""
from __future__ import annotations

import numpy as np

from plantwatch.detectors import create
from plantwatch.detectors.contact_state import ContactStateDetector


def _run(det, rows):
    """rows: (sensor column, time, value) one at a time; the condition code after each."""
    out = []
    for i, t, x in rows:
        o = det.update(np.array([i]), np.array([float(t)]), np.array([float(x)]))
        out.append(int(o.code[0]))
    return out


def test_an_open_contact_is_an_alarm_and_a_closed_one_clears_it():
    det = create("contact_state", {}, ContactStateDetector.example_sensors(2))
    assert det.CONDITIONS[1] == "contact_alarm" and det.SEVERITY["contact_alarm"] == "high"
    assert _run(det, [(0, 1, 1), (1, 1, 1), (0, 2, 0), (1, 2, 1), (0, 3, np.nan), (0, 4, 1)]) == [0, 0, 1, 0, 1, 0]


def test_alarm_when_closed_and_delays():
    det = create("contact_state", {"alarm_when": "closed", "on_delay": 2.0, "off_delay": 1.0},
                 ContactStateDetector.example_sensors(1))
    # closes at t=10: alarm only once it stayed closed 2 s; a bounce (t=20) is ridden out
    codes = _run(det, [(0, 0, 0), (0, 10, 1), (0, 11, 1), (0, 12, 1), (0, 13, 0), (0, 13.5, 0), (0, 14, 0),
                       (0, 20, 1), (0, 20.5, 0), (0, 30, 0)])
    assert codes == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]


def test_scaled_readings_count_as_closed_from_one_half():
    det = create("contact_state", {}, ContactStateDetector.example_sensors(1))
    assert _run(det, [(0, 1, 0.49), (0, 2, 0.5), (0, 3, 0.1), (0, 4, 0.97)]) == [1, 0, 1, 0]
