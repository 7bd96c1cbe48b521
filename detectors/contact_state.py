"""State of a contact: relay outputs of gas-detector controllers, alarm contacts, ESD status.

A contact reading is 1.0 (closed, on, true) or 0.0 (open, off, false), as ``plantwatch collect``
publishes coils, discrete inputs and register bits. Safety contacts are usually wired fail-safe
(normally closed, energised): an *open* contact is the alarm -- the relay dropped, or the wire broke.
``alarm_when`` says which state is abnormal (``open`` by default; ``closed`` for a contact that
closes on alarm). Each change into that state is an alarm of its own, with the detector's
severity (the ``severity`` of the detector entry sets its priority); it clears when the contact
returns, after ``off_delay``. A reading is taken as closed at 0.5 and above, so a contact read as
a scaled value still works; NaN keeps the state in force.

Score: 1 in the alarm state, 0 otherwise. Decision: :class:`~.decide.BandDecider` on the state.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from .base import MEASUREMENTS, Detector, SensorInfo, debounce
from .decide import BandDecider, Decider
from .registry import register


class ContactStateParams(debounce()):  # on_delay: contact bounce; off_delay: back in the normal state
    alarm_when: Literal["open", "closed"] = Field("open", description="the contact state that is the alarm: open (reading 0, fail-safe wiring) or closed (reading 1)")


@register
class ContactStateDetector(Detector):
    name = "contact_state"
    Params = ContactStateParams
    CONDITIONS = ("normal", "contact_alarm")
    SEVERITY = {"contact_alarm": "high"}
    #: an uncertain contact is still a contact; a bad one is not judged (the stale detector is)
    JUDGES = MEASUREMENTS

    @classmethod
    def example_params(cls):
        return {"alarm_when": "open", "on_delay": 1.0}

    @classmethod
    def example_sensors(cls, n: int = 4):
        return [SensorInfo(id=f"c{i}", kind="contact", unit="", range_min=0.0, range_max=1.0, area="A")
                for i in range(n)]

    def make_decider(self) -> Decider:
        p: ContactStateParams = self.params
        return BandDecider(self.n, [0.5], [0, 1], on_delay=p.on_delay, off_delay=p.off_delay)

    def evaluate_many(self, idx, t, x):
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            closed = x >= 0.5
        alarm = ~closed if self.params.alarm_when == "open" else closed
        signal = np.where(np.isnan(x), np.nan, alarm.astype(np.float64))
        return np.where(np.isnan(signal), 0.0, signal), signal

    def score_many(self, idx, t, x):
        return self.evaluate_many(idx, t, x)[0]
