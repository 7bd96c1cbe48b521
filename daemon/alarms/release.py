"""When a decided alarm change goes out (MQTT ``alarms/changes``, webhooks).

An alarm must not wait for the historian, and a message should say which alarm it is about. A
batch of alarm changes (those of one unit) is therefore released in the order it was decided:

* as soon as its unit commits: the message then carries the alarm's database id and the change's
  audit sequence number (its place in the alarm record);
* or ``publish_wait`` seconds after it was decided if the database has not committed it by then
  (load, an outage or a stall): it goes out without its audit sequence (``seq`` null) and with
  the alarm's id if an earlier change of the same alarm was committed (else null); the journal
  keeps the change until the database has it, docs/outages.md;
* never, if the database refused its unit because this instance's lease on the partition is no
  longer current (several instances, docs/scaling.md): the partition's new holder decides again.

A later batch never overtakes an earlier one. With several instances, a batch released before its
commit goes out only while ``may_publish`` says the instance still holds the partition of each of
its changes by its own clock; otherwise it waits for the commit or the refusal.
"""
from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from plantwatch.connectors.store import AlarmWrite


@dataclass(eq=False, slots=True)
class Decided:
    """The alarm changes of one unit, decided and waiting to be released."""

    writes: list[AlarmWrite]
    due: float  # loop time after which it may go out before its commit
    committed: bool = False
    refused: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class DecidedChanges:
    def __init__(self, publish: Callable[[list[AlarmWrite]], None], may_publish: Callable[[AlarmWrite], bool],
                 wait: float):
        self._publish = publish
        self._may_publish = may_publish
        self.wait = wait
        self._queue: deque[Decided] = deque()
        self._alarm_ids: dict[tuple[str, int], int] = {}  # (detector, sensor) -> alarm id, from commits
        self.released_before_commit = 0  # changes that went out before the database had them

    def add(self, writes: list[AlarmWrite]) -> Decided:
        loop = asyncio.get_running_loop()
        d = Decided(list(writes), loop.time() + self.wait)
        d.timer = loop.call_later(self.wait, self._release)
        self._queue.append(d)
        return d

    def committed(self, d: Decided | None) -> None:
        if d is not None:
            for w in d.writes:
                if w.alarm_id is not None:
                    self._alarm_ids[(w.detector_id, w.sensor_id)] = w.alarm_id
            d.committed = True
            self._release()

    def refused(self, d: Decided | None) -> None:
        if d is not None:
            d.refused = True
            self._release()

    def pending(self) -> int:
        return sum(len(d.writes) for d in self._queue)

    def _release(self) -> None:
        now = asyncio.get_running_loop().time()
        while self._queue:
            d = self._queue[0]
            if d.refused:
                pass
            elif d.committed:
                self._publish(d.writes)
            elif now >= d.due and all(self._may_publish(w) for w in d.writes):
                self.released_before_commit += len(d.writes)
                for w in d.writes:
                    if w.alarm_id is None:
                        w.alarm_id = self._alarm_ids.get((w.detector_id, w.sensor_id))
                self._publish(d.writes)  # out: its commit (off the queue now) only teaches the alarm ids
            else:
                return
            self._queue.popleft()
            if d.timer is not None:
                d.timer.cancel()
