"""The detector protocol.

One detector *instance* watches many sensors at once: its state is a set of numpy arrays with
one slot per sensor ("column"), so the daemon scores a whole batch of readings with a few
vectorised operations instead of a Python loop per reading.

The shape follows river's anomaly detectors, widened from one value to a column of sensors:

* ``score_many(idx, t, x)`` scores readings using only what was learned before them
  (higher = more anomalous); it never changes state.
* ``learn_many(idx, t, x)`` updates the learned state.
* ``update(idx, t, x)`` is what the daemon calls: score, decide, then learn from the readings
  that were not flagged (as river's ``ThresholdFilter(protect_anomaly_detector=True)``), so an
  ongoing incident does not become the new normal.
* The decision is a separate object (:mod:`.decide`) turning scores into a condition code per
  reading, with deadband and on/off delays.
* ``observe_many(idx, t, x, learn)`` (optional) sees *every* reading, flagged or not, for state
  that is bookkeeping rather than a model of normal: the previous value, a running exposure
  integral, a control-chart statistic, a ring of recent readings. ``learn`` marks the readings
  the model of normal may learn from; a detector that needs the pre-update bookkeeping to
  learn (a jump detector learns from ``x - previous``) does both here, in the right order.
* ``evaluate_many(idx, t, x)`` (optional) returns the score *and* the signal the decider
  classifies, for detectors with several conditions that one score cannot tell apart (TWA vs.
  STEL vs. IDLH, rising vs. falling): the default is ``(score_many(...), x)``.
* ``tick(now)`` lets time-driven detectors (stale data) emit conditions without a reading.
* ``get_state()`` / ``set_state()`` save and restore everything learned, so a restart does
  not lose warm-up.

Calling convention: within one call ``idx`` holds *distinct* sensor columns (the daemon splits a
batch into rounds so that a sensor appears at most once per round) and every reading of a sensor
is newer than the ones it has seen before. Readings that are not newer are ignored by the
daemon before they get here (redelivered MQTT messages after a crash).

Which readings a detector judges is declared, not decided by the daemon: every reading has a
class (:data:`READING_CLASSES`, from its quality and the wire format's ``flag``) and a detector
gets only the classes in its ``JUDGES``. Good readings by default; limit-type detectors also
judge uncertain and over-range readings, the out-of-range detector signal failures too. An
over-range reading arrives as at least the top of the sensor's measuring range (the true value is
at or above full scale), a signal failure as NaN (there is no measurement). ``OVER_RANGE`` names
the condition a reading at or above full scale raises at once, without the on-delay.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, create_model

from .decide import Decider


#: Reading classes, by code: the daemon routes each reading to the detectors that judge its class.
#: ``good``, ``uncertain``, ``bad``: the reading's quality; ``over_range``: the instrument reads at
#: or above its full scale (the wire format's ``flag``, a loop current above 20.5 mA, or a value at
#: or above the top of the sensor's range), whatever its quality; ``signal_failure``: no
#: measurement at all (a loop current below 3.6 mA: wire break, dead transmitter).
READING_CLASSES: tuple[str, ...] = ("good", "uncertain", "bad", "over_range", "signal_failure")
#: what instruments say: judged by limit-type detectors
MEASUREMENTS: frozenset[str] = frozenset({"good", "uncertain", "over_range"})


class DetectorParams(BaseModel):
    """Base of every detector's parameter model: unknown keys are an error, and so are NaN and
    infinite numbers (YAML's ``.nan`` / ``.inf`` would otherwise silently disable a threshold)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


#: what the debounce parameters mean (docs/detectors.md says it per detector)
ON_DELAY = "seconds a condition must persist before alarming"
OFF_DELAY = "seconds a condition must be gone before it clears"
CLEAR_RATIO = "a held condition clears below clear_ratio times its limit"


def debounce(*, on_delay: float | None = 0.0, off_delay: float | None = 0.0, clear_ratio: float | None = None,
             longest: int = 3600, longest_on: int | None = None, off_text: str = OFF_DELAY) -> type[DetectorParams]:
    """The debounce block of a detector's parameters, declared once: a detector's ``Params``
    subclass the model this returns. ``on_delay`` and ``off_delay`` are their defaults (None: the
    detector has no such parameter), at most ``longest`` seconds (``longest_on`` for ``on_delay``
    where that differs); ``clear_ratio`` (hysteresis: a held condition clears below this fraction
    of its limit) only where a default is given. The decision stages take them as they are
    (detectors/decide.py)."""
    fields: dict[str, Any] = {}
    if on_delay is not None:
        fields["on_delay"] = (float, Field(on_delay, ge=0, le=longest_on or longest, description=ON_DELAY))
    if off_delay is not None:
        fields["off_delay"] = (float, Field(off_delay, ge=0, le=longest, description=off_text))
    if clear_ratio is not None:
        fields["clear_ratio"] = (float, Field(clear_ratio, gt=0, le=1, description=CLEAR_RATIO))
    return create_model("Debounce", __base__=DetectorParams, **fields)


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """What a detector may know about the sensors it watches (from the registry)."""

    id: str
    kind: str
    unit: str
    range_min: float
    range_max: float
    area: str
    x: float = float("nan")
    y: float = float("nan")
    neighbours: tuple[str, ...] = ()
    #: the edge collector that publishes the sensor ("" unknown): stale and comm_lost group by it
    collector: str = ""


@dataclass(slots=True)
class Output:
    """Per-reading result of :meth:`Detector.update` / :meth:`Detector.tick`.

    ``code`` is the condition in force for the reading's sensor after this reading (0 = normal,
    otherwise an index into the detector's ``CONDITIONS``); ``score`` is the anomaly score.
    """

    idx: np.ndarray  # int64 sensor columns
    t: np.ndarray  # float64 Unix seconds
    score: np.ndarray  # float64
    code: np.ndarray  # int8


class Detector(ABC):
    """Base class of all detectors. Subclasses set ``name``, ``Params`` and ``CONDITIONS``."""

    name: ClassVar[str]
    Params: ClassVar[type[DetectorParams]]
    #: condition names by code; CONDITIONS[0] is always "normal"
    CONDITIONS: ClassVar[tuple[str, ...]] = ("normal", "anomaly")
    #: default alarm severity per condition name (config may override)
    SEVERITY: ClassVar[Mapping[str, str]] = {"anomaly": "medium"}
    #: conditions about the whole site rather than the place of the reading (robot channels): the
    #: daemon does not place such an alarm where the reading was taken
    SITE_LEVEL: ClassVar[tuple[str, ...]] = ()
    #: readings per sensor before scores are trusted (0 = none needed)
    warmup: int = 0
    #: True when each sensor's output depends only on that sensor's own readings. The conformance
    #: suite then checks that scoring N sensors in one call equals scoring them one call each.
    #: Detectors that compare sensors with each other (neighbour_drift, multivariate models)
    #: set it False and are exempt from that one check.
    univariate: ClassVar[bool] = True
    #: True for detectors that judge the instrument rather than the process (stale, flatline,
    #: fault codes, out of range, drift against neighbours): their alarms never make a process
    #: alarm a consequence in incident grouping (daemon/alarms/lifecycle.py).
    SENSOR_HEALTH: ClassVar[bool] = False
    #: The reading classes (:data:`READING_CLASSES`) this detector judges; the daemon passes it no
    #: others. Good readings only by default: a statistical model must not learn from calibration
    #: gas or a clamped full-scale value. Limit-type detectors judge every measurement
    #: (:data:`MEASUREMENTS`), since an uncertain or over-range gas reading is still gas.
    JUDGES: ClassVar[frozenset[str]] = frozenset({"good"})
    #: The condition a reading at or above the top of its sensor's measuring range raises at once
    #: (no on-delay: the instrument is over range, the true value may be far higher); None: the
    #: reading is decided like any other. See :meth:`over_range`.
    OVER_RANGE: ClassVar[str | None] = None

    # --- optional capabilities: declared here, overridden where supported ----------------------
    # The daemon (daemon/detection.py) reads these flags and calls these methods on every
    # detector; the defaults do nothing. tests/test_detector_conformance.py checks that a flag
    # and its methods agree for every registered detector.
    #: :meth:`update` takes each reading's site position as ``pos=`` (an (n, 2) array or None)
    needs_position: ClassVar[bool] = False
    #: the model can be fitted away from scoring: with ``defer_refit`` set, the daemon runs
    #: :meth:`refit_data` jobs in a worker thread and hands back :meth:`install_model`
    DEFERS_REFIT: ClassVar[bool] = False
    #: :meth:`declare_transfer` is meaningful (the detector tracks a tank's inventory)
    TAKES_TRANSFERS: ClassVar[bool] = False
    #: :meth:`mark_stale` is meaningful (a source announced the death of some sensors)
    MARKS_STALE: ClassVar[bool] = False
    #: set True by the daemon on detectors with ``DEFERS_REFIT``: refits wait for the daemon
    defer_refit: bool = False

    @classmethod
    def absolute_levels(cls, params: DetectorParams) -> list[tuple[str, float, bool]]:
        """Absolute alarm levels in the watched sensors' own units, as ``(parameter, value,
        upper)`` (``upper``: the condition is raised above the value). Config checking refuses
        levels outside a watched sensor's measuring range: readings beyond it are rejected, so
        such a level could never be crossed (or would always be). Relative detectors have none."""
        return []

    def __init__(self, params: DetectorParams, sensors: Sequence[SensorInfo]):
        self.params = params
        self.sensors = tuple(sensors)
        self.n = len(self.sensors)
        self.decider: Decider = self.make_decider()
        self.seen = np.zeros(self.n, dtype=np.int64)  # readings learned per sensor
        #: top of each sensor's measuring range: a reading at or above it is over range
        self.range_top = np.array([s.range_max for s in self.sensors], dtype=np.float64)

    # --- to implement -------------------------------------------------------------------------
    @abstractmethod
    def make_decider(self) -> Decider:
        """The decision stage that turns scores into condition codes."""

    @abstractmethod
    def score_many(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Scores for readings ``x`` of sensors ``idx`` at times ``t``; must not change state."""

    def learn_many(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> None:
        """Learn from readings (default: count them)."""
        self.seen[idx] += 1

    def observe_many(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray, learn: np.ndarray) -> None:
        """See every reading, flagged or not (default: nothing); called before :meth:`learn_many`.

        ``learn`` is a boolean mask over the readings: True where the reading was not flagged and
        :meth:`learn_many` will be called with it. Must not depend on the order of ``idx``.
        """

    def evaluate_many(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, Any]:
        """Score and decision signal of readings; must not change state.

        The signal is what the decider receives in place of ``x`` (default: ``x`` itself). A
        detector whose conditions need more than one number per reading returns e.g. a (K, m)
        array of ratios for :class:`~.decide.LevelsDecider`; it must then make the signal
        neutral itself where a sensor is not warm (the base class only zeroes the score).
        """
        return self.score_many(idx, t, x), x

    # --- examples for tests, docs and benchmarks ------------------------------------------------
    @classmethod
    def example_params(cls) -> dict[str, Any]:
        """A valid params dict that makes this detector do something on test data."""
        return {}

    @classmethod
    def example_sensors(cls, n: int = 4) -> list[SensorInfo]:
        """``n`` sensors this detector can watch, for tests and benchmarks.

        Default: pressure transmitters 0-100 bar in one area, each the neighbour of the next and
        the previous one (a ring). Override when the detector needs other units or ranges.
        """
        ids = [f"s{i}" for i in range(n)]
        return [SensorInfo(id=ids[i], kind="pressure", unit="bar", range_min=0.0, range_max=100.0, area="A",
                           x=float(i), y=0.0,
                           neighbours=tuple(dict.fromkeys(ids[j % n] for j in (i - 1, i + 1) if j % n != i)))
                for i in range(n)]

    # --- provided -----------------------------------------------------------------------------
    def warm(self, idx: np.ndarray) -> np.ndarray:
        """Which of the sensors ``idx`` have seen enough readings for their score to count."""
        return self.seen[idx] >= self.warmup

    def over_range(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Which readings count as over range: at or above the top of the sensor's measuring range
        (subclasses narrow it, e.g. to sensors with an upper limit)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(x, dtype=np.float64) >= self.range_top[idx]

    def forced(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray | None:
        """Conditions raised at once by a reading, whatever the decider's delays say (0: none);
        by default ``OVER_RANGE`` for over-range readings. None when there are none."""
        if self.OVER_RANGE is None:
            return None
        over = self.over_range(idx, x)
        if not over.any():
            return None
        return np.where(over, np.int8(self.CONDITIONS.index(self.OVER_RANGE)), np.int8(0))

    def _force(self, idx: np.ndarray, t: np.ndarray, code: np.ndarray, forced: np.ndarray) -> np.ndarray:
        """Put the decider into the forced conditions now (pending since ``t``), so leaving them
        takes the decider's off-delay like any other return."""
        hit = forced != 0
        if not hit.any():
            return code
        i, f = idx[hit], forced[hit]
        d = self.decider
        d.code[i] = f
        d.pending[i] = f
        d.since[i] = t[hit]
        return np.where(hit, forced, code).astype(np.int8)

    def update(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> Output:
        """Score, decide, let the detector observe every reading, then learn from what was not flagged."""
        score, signal = self.evaluate_many(idx, t, x)
        score = np.where(self.warm(idx) & np.isfinite(score), score, 0.0)
        code = self.decider.step(idx, t, score, signal)
        forced = self.forced(idx, x)
        if forced is not None:
            code = self._force(idx, t, code, forced)
        calm = code == 0
        self.observe_many(idx, t, x, calm)
        if calm.all():
            self.learn_many(idx, t, x)
        elif calm.any():
            self.learn_many(idx[calm], t[calm], x[calm])
        return Output(idx, t, score, code)

    def tick(self, now: float) -> Output | None:
        """Time-driven conditions (no reading needed). Default: none."""
        return None

    # --- optional capabilities (defaults: nothing to do) ----------------------------------------
    def restart_clock(self, now: float) -> None:
        """Readings may have been missed until ``now`` (start, reconnect); time-driven detectors
        restart their clocks. Default: nothing to do."""

    def mark_stale(self, idx: np.ndarray, now: float) -> Output | None:
        """Sensors ``idx`` are gone as of ``now`` (only with ``MARKS_STALE``); None: not judged here."""
        return None

    def declare_transfer(self, col: int | str, start: float, end: float, quantity: float) -> None:
        """A declared transfer of ``quantity`` from a tank (only with ``TAKES_TRANSFERS``).
        Default: nothing to do."""

    def column(self, sensor: int | str) -> int:
        """The column of a watched sensor, given its id or its column."""
        if isinstance(sensor, str):
            for i, s in enumerate(self.sensors):
                if s.id == sensor:
                    return i
            raise ValueError(f"sensor {sensor!r} is not watched by this detector")
        col = int(sensor)
        if not 0 <= col < self.n:
            raise ValueError(f"column {col} out of range (0..{self.n - 1})")
        return col

    @staticmethod
    def transfer_span(start: float, end: float, quantity: float) -> tuple[float, float, float]:
        """A declared transfer's start, end and quantity as floats, checked (finite, end ≥ start)."""
        start, end, quantity = float(start), float(end), float(quantity)
        if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(quantity)):
            raise ValueError("start, end and quantity must be finite numbers")
        if end < start:
            raise ValueError(f"transfer end ({end}) is before its start ({start})")
        return start, end, quantity

    def needs_refit(self) -> bool:
        """A deferred refit is due and none is in flight (only with ``DEFERS_REFIT``)."""
        return False

    def refit_data(self) -> Any:
        """A job for a deferred fit (only with ``DEFERS_REFIT``)."""
        raise NotImplementedError(f"{self.name} does not defer refits")

    def install_model(self, fitted: Any) -> bool:
        """Install a model fitted by a deferred job (only with ``DEFERS_REFIT``)."""
        raise NotImplementedError(f"{self.name} does not defer refits")

    def abandon_refit(self, token: int) -> None:
        """The deferred fit ``token`` failed (only with ``DEFERS_REFIT``)."""
        raise NotImplementedError(f"{self.name} does not defer refits")

    def get_state(self) -> dict[str, Any]:
        """Everything learned, as plain numpy arrays and scalars (picklable, comparable)."""
        state = {k: np.copy(v) for k, v in self._state_arrays().items()}
        state["seen"] = self.seen.copy()
        state.update({f"decider.{k}": v for k, v in self.decider.get_state().items()})
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (for the same sensors, in the same order)."""
        self.seen = np.array(state["seen"], dtype=np.int64)
        own = self._state_arrays()
        for k in own:
            setattr(self, k, np.array(state[k], dtype=own[k].dtype))
        self.decider.set_state({k[len("decider."):]: v for k, v in state.items() if k.startswith("decider.")})

    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Subclasses list their learned numpy attributes here (name → array)."""
        return {}

    def condition(self, code: int) -> str:
        return self.CONDITIONS[code]

    def describe(self) -> dict[str, Any]:
        """The detector and its parameters, as stored with every event."""
        return {"type": self.name, "params": self.params.model_dump(mode="json")}
