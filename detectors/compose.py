"""Composition: an alarm that needs several detectors (or sensors) to agree, k-of-n in a window.

Cuts false alarms of single detectors: "two neighbouring gas sensors both high within 60 s",
"the statistical score and the limit on the same sensor". Not a registered detector, on purpose:
a detector consumes *readings* of sensors; a composition consumes the *condition codes* other
detectors produce (after their own deadbands and delays), so it sits after them in the daemon's
pipeline and has its own config list. Making it a detector would mean feeding codes back in as
fake readings and would tie one composition to one detector's sensor selection.

Votes
-----
Input ``i`` (a detector id, optionally restricted to some of its conditions) *votes* for sensor
``s`` while it holds ``s`` in a matching condition, and for ``within`` seconds after that
condition ended. For each sensor ("anchor") the composer counts votes over its scope:

* ``scope: sensor``: the anchor itself; ``count: inputs`` (the only choice) = how many inputs
  vote for it. "limit and robust_zscore agree on TF-H2S-01".
* ``scope: neighbourhood``: the anchor and its neighbours from the sensor registry (made
  symmetric: if A lists B, B's neighbourhood holds A); ``count: sensors`` (default) = how many
  of those sensors have a vote from any input, or ``count: inputs`` = how many inputs vote for
  any of them.
* ``scope: area``: like neighbourhood with every sensor of the anchor's area.

The composite condition holds on an anchor while the anchor itself has a vote and the count is
at least ``require``; so an incident seen by two neighbouring sensors raises the composite on
both (each is confirmed by the other), and a silent neighbour is never put in alarm.

The daemon's side::

    comp = Composer(cfg, config.sensor_infos(), {d.id: REGISTRY[d.type].CONDITIONS for d in dets})
    out = comp.feed(detector_id, global_idx, t, code)   # after each detector Output (local
                                                         # columns mapped to global sensor idx)
    out = comp.tick(now)                                 # expiry of votes without readings
    # each Output (global sensor idx, t, score=count, code 0/1) goes to an EventTracker of the
    # composition, exactly as a detector's; its alarm severity is cfg.severity.

Usually the input detectors are then configured not to raise alarms of their own (events only),
and the composition raises the alarm. ``CompositionConfig.check`` validates references against
the detectors of a config (for the config loader's cross-reference pass).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import Output, SensorInfo


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CompositionInput(_Model):
    detector: str = Field(min_length=1, max_length=64, description="id of a configured detector")
    #: conditions that vote (default: every non-normal condition of that detector)
    conditions: list[str] | None = Field(None, min_length=1)


class CompositionConfig(_Model):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    inputs: list[CompositionInput] = Field(min_length=1)
    require: int = Field(2, ge=1, le=1000, description="votes needed (k of n)")
    within: float = Field(60.0, ge=0, le=86400, description="seconds a vote still counts after its condition ended")
    scope: Literal["sensor", "neighbourhood", "area"] = "sensor"
    count: Literal["inputs", "sensors"] | None = Field(None, description="what is counted; default by scope")
    condition: str = Field("confirmed", pattern=r"^[a-z][a-z0-9_]*$", description="name of the composite condition")
    severity: Literal["low", "medium", "high", "critical"] = "high"

    @model_validator(mode="after")
    def _check(self):
        ids = [i.detector for i in self.inputs]
        dup = sorted({d for d in ids if ids.count(d) > 1})
        if dup:
            raise ValueError(f"inputs: detector {dup[0]!r} listed twice (list its conditions once instead)")
        if self.count_mode == "sensors" and self.scope == "sensor":
            raise ValueError("count 'sensors' needs scope 'neighbourhood' or 'area' (scope 'sensor' has one sensor)")
        if self.count_mode == "inputs" and self.require > len(self.inputs):
            raise ValueError(f"require ({self.require}) exceeds the number of inputs ({len(self.inputs)})")
        return self

    @property
    def count_mode(self) -> str:
        return self.count or ("inputs" if self.scope == "sensor" else "sensors")

    def check(self, conditions: Mapping[str, Sequence[str]]) -> list[str]:
        """Problems with references, given each configured detector id's CONDITIONS."""
        out = []
        for k, inp in enumerate(self.inputs):
            if inp.detector not in conditions:
                out.append(f"inputs[{k}].detector: unknown detector {inp.detector!r}")
                continue
            known = list(conditions[inp.detector])[1:]
            for c in inp.conditions or []:
                if c not in known:
                    out.append(f"inputs[{k}].conditions: detector {inp.detector!r} has no condition {c!r} "
                               f"(its conditions: {', '.join(known)})")
        return out


class Composer:
    """Evaluates one composition over all sensors of the site (global sensor indices)."""

    def __init__(self, cfg: CompositionConfig, sensors: Sequence[SensorInfo],
                 conditions: Mapping[str, Sequence[str]]):
        problems = cfg.check(conditions)
        if problems:
            raise ValueError(f"composition {cfg.id!r}: " + "; ".join(problems))
        self.cfg = cfg
        self.CONDITIONS = ("normal", cfg.condition)
        self.sensors = tuple(sensors)
        S = len(self.sensors)
        self.inputs = {inp.detector: i for i, inp in enumerate(cfg.inputs)}
        self.match: list[np.ndarray] = []  # per input: does code k vote?
        for inp in cfg.inputs:
            names = list(conditions[inp.detector])
            want = set(inp.conditions or names[1:])
            self.match.append(np.array([k > 0 and n in want for k, n in enumerate(names)], dtype=bool))
        A = np.eye(S, dtype=bool)
        if cfg.scope == "neighbourhood":
            pos = {s.id: k for k, s in enumerate(self.sensors)}
            for a, s in enumerate(self.sensors):
                for nb in s.neighbours:
                    if nb in pos:
                        A[a, pos[nb]] = A[pos[nb], a] = True
        elif cfg.scope == "area":
            area = np.array([s.area for s in self.sensors], dtype=object)
            A = area[:, None] == area[None, :]
        self.A = A
        self.until = np.full((len(cfg.inputs), S), -np.inf)  # a vote counts while t <= until
        self.code = np.zeros(S, dtype=np.int8)

    def _votes(self, t: float) -> np.ndarray:
        return self.until >= t

    def _evaluate(self, anchors: np.ndarray, t: float) -> Output:
        V = self._votes(t)  # (I, S)
        A = self.A[anchors]  # (m, S)
        if self.cfg.count_mode == "inputs":
            count = (V.astype(np.int64) @ A.T.astype(np.int64) > 0).sum(axis=0)
        else:
            count = A.astype(np.int64) @ V.any(axis=0).astype(np.int64)
        own = V[:, anchors].any(axis=0)
        code = ((count >= self.cfg.require) & own).astype(np.int8)
        self.code[anchors] = code
        return Output(anchors.astype(np.int64), np.full(len(anchors), float(t)), count.astype(np.float64), code)

    def feed(self, detector: str, idx, t, code) -> Output | None:
        """Condition codes of one detector Output (global sensor indices); None if not an input."""
        i = self.inputs.get(detector)
        if i is None:
            return None
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return None
        t = np.asarray(t, dtype=np.float64)
        code = np.asarray(code, dtype=np.int64)
        m = self.match[i]
        votes = np.where((code >= 0) & (code < len(m)), m[np.clip(code, 0, len(m) - 1)], False)
        was = np.isposinf(self.until[i, idx])
        ended = was & ~votes
        self.until[i, idx[votes]] = np.inf
        self.until[i, idx[ended]] = t[ended] + self.cfg.within
        anchors = np.flatnonzero(self.A[idx].any(axis=0))
        return self._evaluate(anchors, float(np.max(t)))

    def tick(self, now: float) -> Output | None:
        """Re-evaluate the anchors in the composite condition (votes expire with time)."""
        anchors = np.flatnonzero(self.code != 0)
        if not len(anchors):
            return None
        return self._evaluate(anchors, float(now))

    def get_state(self) -> dict[str, Any]:
        return {"until": self.until.copy(), "code": self.code.copy()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.until = np.array(state["until"], dtype=np.float64)
        self.code = np.array(state["code"], dtype=np.int8)
