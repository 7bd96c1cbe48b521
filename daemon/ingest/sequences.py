"""Per-collector batch sequence numbers: gaps (batches lost between a collector and the broker),
counted per *episode* of one counter.

A collector numbers its batches 0, 1, 2 ... An episode is one run of that counter. For a batch with
``seq`` after the collector's last ``last``:

* ``seq == last + 1``: the next batch;
* ``last + 1 < seq <= last + 1 + max_jump``: ``seq - last - 1`` batches are missing (a gap of this
  episode, counted in ``plantwatch_sequence_gaps_total{collector}`` and ``collectors.gaps``);
* ``seq > last + 1 + max_jump``: not that many lost batches but a counter that restarted elsewhere
  (or a forged number): a *restart* (``collectors.restarts``, logged), the episode ends and the
  counter is re-based at ``seq``; no gap is counted across it;
* ``seq <= last``: a batch delivered again (the broker redelivers what was not acknowledged; a
  collector re-sends what it had no PUBACK for) when it is at most ``redelivery`` behind and not
  newer than the last one (its ``sent``); otherwise the collector's counter went backwards: a
  restart, re-based at ``seq``.

The state is kept in the ``collectors`` table as it is after each message in arrival order (the
true last ``seq``, not the greatest), so it survives a daemon restart and a partition hand-over.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SeqState:
    last: int
    sent: float | None = None  # the ``sent`` of the batch numbered ``last`` (None: not sent)
    episode_gaps: int = 0  # batches missing in the current episode


@dataclass(slots=True)
class SeqStep:
    """What one message did to its collector's sequence (None fields: a message without one)."""

    gap: int = 0
    restart: bool = False
    state: SeqState | None = None  # the collector's state after this message (a copy)
    order: int = 0  # arrival order across units and restarts (microseconds, strictly increasing)


class Sequences:
    def __init__(self, max_jump: int, redelivery: int, on_gap=None, on_restart=None):
        self.max_jump = max_jump
        self.redelivery = redelivery
        self.on_gap = on_gap  # (collector, n) -> None: the metric
        self.on_restart = on_restart  # (collector, kind) -> None
        self.state: dict[str, SeqState] = {}
        self._order = 0

    def restore(self, rows: dict[str, SeqState | tuple | int]) -> None:
        """The state stored for these collectors (at start, or on taking a partition over):
        ``(last, sent, episode_gaps, order)`` as ``Store.last_sequences`` gives it, or just ``last``."""
        for c, st in rows.items():
            if isinstance(st, int):
                st = SeqState(st)
            elif isinstance(st, tuple):
                if len(st) > 3:  # continue above the stored arrival order (another instance's clock)
                    self._order = max(self._order, int(st[3]))
                st = SeqState(int(st[0]), st[1], int(st[2]))
            self.state[c] = st

    def next_order(self) -> int:
        self._order = max(time.time_ns() // 1000, self._order + 1)
        return self._order

    def observe(self, collector: str | None, seq: int | None, sent: float | None) -> SeqStep:
        if collector is None or seq is None:
            return SeqStep()
        st = self.state.get(collector)
        step = SeqStep(order=self.next_order())
        if st is None:
            st = self.state[collector] = SeqState(seq, sent)
        elif seq > st.last:
            missing = seq - st.last - 1
            if missing > self.max_jump:
                self._restart(collector, st, seq, sent, step,
                              f"jumped forward by {missing + 1} (more than ingest.max_seq_jump = {self.max_jump})")
            else:
                if missing:
                    step.gap = missing
                    st.episode_gaps += missing
                    if self.on_gap is not None:
                        self.on_gap(collector, missing)
                st.last, st.sent = seq, sent
        else:
            newer = sent is not None and st.sent is not None and sent > st.sent
            if newer or st.last - seq > self.redelivery:
                self._restart(collector, st, seq, sent, step, f"went back from {st.last} to {seq}")
            # else: delivered again; the counter stays where it was
        step.state = SeqState(st.last, st.sent, st.episode_gaps)
        return step

    def _restart(self, collector: str, st: SeqState, seq: int, sent: float | None, step: SeqStep, how: str) -> None:
        log.warning("collector %s: sequence %s: a restart of its counter (or a forged number), not lost batches;"
                    " the episode that ended had %d missing batch(es); counting again from %d",
                    collector, how, st.episode_gaps, seq)
        step.restart = True
        if self.on_restart is not None:
            self.on_restart(collector)
        st.last, st.sent, st.episode_gaps = seq, sent, 0
