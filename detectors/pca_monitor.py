"""PCA process monitoring of a sensor group: Hotelling's T² and SPE (Q) with control limits.

Catches changes in the *joint* behaviour of a group — a sensor drifting against the others, a
broken correlation (a leak making a pressure fall while the flow that should explain it does
not), an unusual combination of values that are each within their own limits.

Model (refitted on a sliding window of recent normal rows, see :mod:`.group` for rows, the
decision and the refit interface): rows are standardised with the training mean and standard
deviation; the covariance's eigenvectors give ``a`` principal components, either a fixed number
(``components``) or the fewest that explain ``variance`` of the total.

* T² = Σ tₖ²/λₖ over the retained components, limit ``a(n²−1)/(n(n−a)) F_α(a, n−a)``
  (n training rows).
* SPE = ‖z − P Pᵀ z‖², limit by Jackson–Mudholkar (default) or Box's ``g χ²_α(h)``
  from the residual eigenvalues.

The row score is ``max(T²/T²_lim, SPE/SPE_lim)``: 1.0 is the ``alpha`` (99 %) control limit.
Contributions for attribution: SPE — squared residual per member; T² — ``zⱼ (P Λ⁻¹ Pᵀ z)ⱼ``;
the statistic whose ratio is larger decides which are used.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from .group import SCORE_CAP, Z_CLIP, FittedModel, GroupDetector
from .pca_limits import spe_limit, t2_limit
from .pca_stages import PCAStageParams, fit_staged, model_rows
from .registry import register


class PCAMonitorParams(PCAStageParams):
    components: int | None = Field(None, ge=1, le=10_000,
                                   description="principal components kept; null: by explained variance")
    variance: float = Field(0.9, gt=0, lt=1, description="explained-variance fraction when components is null")
    alpha: float = Field(0.99, ge=0.5, lt=1, description="confidence level of the T² and SPE control limits")
    spe_limit: Literal["jackson_mudholkar", "box"] = Field("jackson_mudholkar", description="SPE (Q) limit method")

    @model_validator(mode="after")
    def _components(self):
        if self.components is not None and self.components >= self.min_rows:
            raise ValueError(f"components ({self.components}) must be below min_rows ({self.min_rows})")
        return self


def fit_pca(X: np.ndarray, p: "PCAMonitorParams") -> dict[str, Any]:
    m, d = X.shape
    mean = X.mean(axis=0)
    std = np.maximum(X.std(axis=0, ddof=1), p.min_scale) if m > 1 else np.ones(d)
    Z = (X - mean) / std
    lam, vec = np.linalg.eigh(Z.T @ Z / max(m - 1, 1))
    order = np.argsort(lam)[::-1]
    lam, vec = np.clip(lam[order], 0.0, None), vec[:, order]
    amax = max(1, min(d, m - 2))
    if p.components is not None:
        a = min(p.components, amax)
    else:
        frac = np.cumsum(lam) / max(lam.sum(), 1e-300)
        a = min(int(np.searchsorted(frac, p.variance) + 1), amax)
    a = max(1, min(a, int(np.sum(lam > 1e-12 * max(lam[0], 1e-300))) or 1))
    t2_lim = t2_limit(a, m, p.alpha)
    spe_lim = spe_limit(lam[a:], p.alpha, p.spe_limit) if a < d else math.inf
    # a residual space that was numerically empty in training: tolerate rounding, flag the rest
    spe_lim = max(spe_lim, 1e-9 * d)
    return {"mean": mean, "std": std, "P": vec[:, :a].copy(), "lam": np.maximum(lam[:a], 1e-12),
            "lim": np.array([t2_lim, spe_lim, float(m), float(a)])}


@register
class PCAMonitor(GroupDetector):
    name = "pca_monitor"
    Params = PCAMonitorParams

    def __init__(self, params: PCAMonitorParams, sensors):
        super().__init__(params, sensors)
        n = self.n
        self.mean = np.zeros(n)
        self.std = np.ones(n)
        self.P = np.zeros((n, 0))
        self.lam = np.zeros(0)
        self.lim = np.array([np.nan, np.nan, 0.0, 0.0])  # T² limit, SPE limit, rows fitted, components
        self.base = np.full(n, np.nan)  # drift stage: slow baseline of every member (NaN: no row yet)
        self.drift = np.zeros(n, dtype=bool)  # drift stage: members seen through their baseline
        self.ewma = np.full(n, np.nan)  # smoothing stage: smoothed standardised row (NaN: none yet)

    @classmethod
    def example_params(cls) -> dict[str, Any]:
        return {"window": 300, "min_rows": 50, "refit_every": 50, "variance": 0.9}

    @staticmethod
    def fit_model(X, params):
        if params.staged:
            return fit_staged(X, params, X.shape[1] // 2 if params.detrend_t is not None else X.shape[1])
        return fit_pca(X, params)

    def _install(self, fitted: FittedModel) -> None:
        m = fitted.model
        self.mean, self.std, self.P, self.lam, self.lim = m["mean"], m["std"], m["P"], m["lam"], m["lim"]
        if "drift" in m:
            self.drift, self.ewma = np.asarray(m["drift"], dtype=bool), np.asarray(m["ewma"], dtype=np.float64)

    def _row_width(self) -> int:
        return 2 * self.n if self.params.detrend_t is not None else self.n

    def _prepare(self, row, commit):
        """Drift stage: the members, then each one's deviation from its slow baseline."""
        if self.params.detrend_t is None:
            return row
        # the baseline and the smoothed row are set whole from complete (finite) rows: all NaN
        # before the first, all finite after it, so the first member tells
        base = self.base if math.isfinite(self.base[0]) else row
        if commit:
            b = self.params.detrend_beta
            self.base = b * base + (1 - b) * row
        return np.concatenate([row, row - base])

    @property
    def fitted(self) -> bool:
        return self.lim[2] > 0

    def _forget_model(self) -> None:
        self.P = np.zeros((self.n, 0))
        self.lam = np.zeros(0)
        self.lim = np.array([np.nan, np.nan, 0.0, 0.0])
        self.drift = np.zeros(self.n, dtype=bool)
        self.ewma = np.full(self.n, np.nan)

    def _state_arrays(self):
        return super()._state_arrays() | {"mean": self.mean, "std": self.std, "P": self.P, "lam": self.lam,
                                          "lim": self.lim, "base": self.base, "drift": self.drift,
                                          "ewma": self.ewma}

    def _stat_names(self):
        return ("t2", "t2_limit", "spe", "spe_limit")

    def statistics(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T² and SPE of raw rows (k, n) under the current model (pure; for evaluation; without the
        drift and smoothing stages)."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = np.clip((np.atleast_2d(rows) - self.mean) / self.std, -Z_CLIP, Z_CLIP)
        sc = z @ self.P
        t2 = np.sum(sc ** 2 / self.lam, axis=1)
        e = z - sc @ self.P.T
        return np.minimum(t2, SCORE_CAP), np.minimum(np.sum(e ** 2, axis=1), SCORE_CAP)

    def _score(self, row, commit=True):
        # (one row of a few members: each numpy call is a few µs, so the calls are the plain ones)
        row = model_rows(row, self.n, self.drift)
        with np.errstate(over="ignore", invalid="ignore"):
            z = (row - self.mean) / self.std
            np.minimum(np.maximum(z, -Z_CLIP, out=z), Z_CLIP, out=z)  # np.clip, NaN kept
        s_ = self.params.smooth
        if s_ > 0:
            if math.isfinite(self.ewma[0]):  # (all NaN or all finite, as the baseline)
                z = s_ * self.ewma + (1 - s_) * z
            if commit:
                self.ewma = z.copy()
        sc = self.P.T @ z
        t2 = float((sc * sc / self.lam).sum())
        e = z - self.P @ sc
        spe = float(e @ e)
        r_t2 = t2 / self.lim[0] if math.isfinite(self.lim[0]) else 0.0
        r_spe = spe / self.lim[1] if math.isfinite(self.lim[1]) else 0.0
        s = min(max(r_t2, r_spe), SCORE_CAP)
        contrib = e ** 2 if r_spe >= r_t2 else z * (self.P @ (sc / self.lam))
        return s, np.array([t2, self.lim[0], spe, self.lim[1]]), contrib

    def explain(self):
        out = super().explain()
        if out is not None:
            out["statistic"] = "spe" if out["spe"] / out["spe_limit"] >= out["t2"] / out["t2_limit"] else "t2"
        return out
