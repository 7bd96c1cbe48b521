"""PyOD outlier models on a sensor group: ECOD, IForest, HBOS or PCA.

Catches rows (one value per member, see :mod:`.group`) that are unusual relative to the recent
normal rows, without assuming linear correlation (IForest, HBOS, ECOD look at the shape of the
joint or marginal distributions).

Each model is PyOD's own: rows are standardised with the training mean and standard deviation,
``model.fit(Z)`` on the window of recent normal rows, ``model.decision_function(z)`` to score,
``model.threshold_`` (from ``contamination``) as the limit. The row score is normalised so that
the training median maps to 0 and ``threshold_`` to 1.0:
``(decision − median_train) / (threshold_ − median_train)``.

PyOD fits are batch and slow (ECOD also re-concatenates its training set at every
``decision_function``; keep ``window`` modest), so refits are meant to run off the event loop:
``needs_refit()`` / ``refit_data()`` / ``fit_group_model(job)`` in an executor /
``install_model(fitted)``, documented in :mod:`.group`. Inline (the default) they run as soon as
they are due. The state saves the rows the current model was fitted on; ``set_state`` refits on
them (models are deterministic: IForest uses ``seed``), so a restore gives identical scores.

Attribution of a group alarm: the member with the largest standardised deviation from its
training mean.
"""
from __future__ import annotations

import warnings
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import Field

from .group import SCORE_CAP, Z_CLIP, FittedModel, GroupDetector, GroupParams, RefitJob
from .registry import register

MODELS = ("ECOD", "IForest", "HBOS", "PCA")


class PyodGroupParams(GroupParams):
    model: Literal["ECOD", "IForest", "HBOS", "PCA"] = Field("ECOD", description="PyOD model")
    contamination: float = Field(0.01, gt=0, le=0.5, description="fraction of training rows above threshold_")
    window: int = Field(1000, ge=10, le=50_000, description="normal rows kept for (re)fitting the model")
    n_estimators: int = Field(100, ge=10, le=2000, description="IForest: trees")
    n_bins: int = Field(10, ge=2, le=1000, description="HBOS: histogram bins")
    seed: int = Field(0, ge=0, description="IForest: random seed (fits are reproducible)")


def _make(p: PyodGroupParams):
    if p.model == "ECOD":
        from pyod.models.ecod import ECOD
        return ECOD(contamination=p.contamination)
    if p.model == "IForest":
        from pyod.models.iforest import IForest
        return IForest(n_estimators=p.n_estimators, contamination=p.contamination, random_state=p.seed)
    if p.model == "HBOS":
        from pyod.models.hbos import HBOS
        return HBOS(n_bins=p.n_bins, contamination=p.contamination)
    from pyod.models.pca import PCA
    return PCA(contamination=p.contamination, random_state=p.seed)


def fit_pyod(X: np.ndarray, p: PyodGroupParams) -> dict[str, Any]:
    center = X.mean(axis=0)
    scale = np.maximum(X.std(axis=0, ddof=1), p.min_scale) if len(X) > 1 else np.ones(X.shape[1])
    Z = np.clip((X - center) / scale, -Z_CLIP, Z_CLIP)
    model = _make(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(Z)
    train = np.asarray(model.decision_scores_, dtype=np.float64)
    med = float(np.median(train))
    thr = float(model.threshold_)
    span = thr - med
    if not np.isfinite(span) or span <= 1e-12 * max(1.0, abs(thr)):
        span = max(float(np.std(train)), 1e-12)
    return {"model": model, "center": center, "scale": scale, "norm": np.array([med, span, float(len(X))])}


@register
class PyodGroup(GroupDetector):
    name = "pyod_group"
    Params = PyodGroupParams

    def __init__(self, params: PyodGroupParams, sensors):
        super().__init__(params, sensors)
        self.model = None
        self.center = np.zeros(self.n)
        self.scale = np.ones(self.n)
        self.norm = np.array([0.0, 1.0, 0.0])  # median training score, threshold - median, rows
        self.fit_X = np.zeros((0, self.n))  # rows the current model was fitted on

    @classmethod
    def example_params(cls) -> dict[str, Any]:
        return {"model": "HBOS", "window": 200, "min_rows": 50, "refit_every": 100}

    @staticmethod
    def fit_model(X, params):
        return fit_pyod(X, params)

    def _install(self, fitted: FittedModel) -> None:
        m = fitted.model
        self.model, self.center, self.scale, self.norm = m["model"], m["center"], m["scale"], m["norm"]
        self.fit_X = np.array(fitted.X, dtype=np.float64)

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def _forget_model(self) -> None:
        self.model = None
        self.fit_X = np.zeros((0, self.n))

    def _state_arrays(self):
        return super()._state_arrays() | {"center": self.center, "scale": self.scale, "norm": self.norm,
                                          "fit_X": self.fit_X}

    def set_state(self, state: Mapping[str, Any]) -> None:
        super().set_state(state)
        self.model = None
        if len(self.fit_X):
            self._install(FittedModel(0, self.fit_X, fit_pyod(self.fit_X, self.params)))

    def _stat_names(self):
        return ("decision", "threshold")

    def _score(self, row, commit=True):
        with np.errstate(over="ignore", invalid="ignore"):
            z = np.clip((row - self.center) / self.scale, -Z_CLIP, Z_CLIP)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = float(np.asarray(self.model.decision_function(z[None, :]), dtype=np.float64)[0])
        if not np.isfinite(d):
            d = SCORE_CAP if np.isnan(d) or d > 0 else -SCORE_CAP
        s = float(np.clip((d - self.norm[0]) / self.norm[1], 0.0, SCORE_CAP))
        return s, np.array([d, self.norm[0] + self.norm[1]]), np.abs(z)


__all__ = ["PyodGroup", "PyodGroupParams", "RefitJob", "MODELS"]
