"""Optional stages of ``pca_monitor`` around the PCA model: drift high-pass, row smoothing, limits
calibrated on normal rows, widened limits. Each stage is a parameter, off by default, so that a
site's config (and its backtest) shows every change between the textbook monitor and the one run.

* ``detrend_t`` (null: off): channels whose trend over the training rows has a t statistic above
  this are *drifting* (see :mod:`.trend_highpass`); the model sees them as their deviation from a
  slow EWMA baseline (factor ``detrend_beta``), which runs on every row from the group's first.
  The first ``detrend_settle`` training rows are left out of the fit while the baseline settles.
* ``smooth`` (0: off): EWMA factor on the standardised rows before projection (``z̄ = s z̄ + (1-s) z``);
  slow faults show sooner, single-row noise less. The smoothed state starts on the training rows.
* ``calibrate`` (null: off): after the fit, both limits are rescaled so that this quantile of the
  training rows' score sits on the limit (1.0: the largest). Use it with ``smooth``, under which
  the textbook limits no longer hold: empirical control limits, still from normal rows only.
* ``limit_scale`` (1): both limits multiplied by this after calibration; with ``clear_ratio`` it
  is the hysteresis of the decision (raise at ``limit_scale`` times the calibrated limit, clear
  below ``clear_ratio * limit_scale`` times it).

With any stage on, a member whose training standard deviation is at most ``min_scale`` is scaled
by 1 (sensor units), and a residual space is always kept (at most ``members - 1`` components).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from .group import GroupParams
from .pca_limits import spe_limit, t2_limit
from .trend_highpass import TrendHighPass, TrendHighPassParams


class PCAStageParams(GroupParams):
    detrend_t: float | None = Field(None, gt=0, le=1e6,
                                    description="trend t statistic over the training rows above which a member is "
                                                "high-passed; null: no drift stage")
    detrend_beta: float = Field(0.997, gt=0, lt=1, description="EWMA factor of the drifting members' slow baseline")
    detrend_settle: int = Field(50, ge=0, le=100_000,
                                description="training rows left out of the fit while the baseline settles")
    smooth: float = Field(0.0, ge=0, lt=1, description="EWMA factor on the standardised rows; 0: no smoothing")
    calibrate: float | None = Field(None, gt=0, le=1,
                                    description="quantile of the training rows' score put on the limit; null: "
                                                "textbook limits")
    limit_scale: float = Field(1.0, gt=0, le=1e6, description="both limits multiplied by this (after calibrate)")

    @property
    def staged(self) -> bool:
        return (self.detrend_t is not None or self.smooth > 0 or self.calibrate is not None
                or self.limit_scale != 1.0)

    @model_validator(mode="after")
    def _settle(self):
        if self.detrend_t is not None and self.detrend_settle > self.min_rows - 3:
            raise ValueError(f"detrend_settle ({self.detrend_settle}) must be below min_rows - 2 ({self.min_rows - 2})")
        return self


def drifting_members(raw: np.ndarray, p: PCAStageParams) -> np.ndarray:
    """Which members drift over the training rows ``raw`` (bool per member)."""
    if p.detrend_t is None:
        return np.zeros(raw.shape[1], dtype=bool)
    params = TrendHighPassParams(min_trend_t=p.detrend_t, beta=p.detrend_beta, settle=p.detrend_settle)
    return TrendHighPass(params).fit(raw).drifting


def model_rows(X: np.ndarray, n: int, drift: np.ndarray) -> np.ndarray:
    """Prepared rows (raw members, then their high-passed values) → the rows the model sees."""
    return np.where(drift, X[..., n:], X[..., :n]) if X.shape[-1] > n else X


def ewma_rows(Z: np.ndarray, s: float) -> np.ndarray:
    """EWMA of the rows of ``Z``, started at its first row."""
    out = np.empty_like(Z)
    prev = Z[0]
    for i, z in enumerate(Z):
        prev = z if i == 0 else s * prev + (1 - s) * z
        out[i] = prev
    return out


def fit_staged(X: np.ndarray, p: PCAStageParams, n: int) -> dict:
    """Fit the PCA model with the stages on prepared training rows ``X`` (oldest first)."""
    drift = drifting_members(X[:, :n], p)
    M = model_rows(X, n, drift)
    if p.detrend_t is not None:
        M = M[min(p.detrend_settle, len(M) - 2):]
    m, d = M.shape
    mean = M.mean(axis=0)
    std = M.std(axis=0, ddof=1)
    std = np.where(std > p.min_scale, std, 1.0)
    Z = (M - mean) / std
    if p.smooth > 0:
        Z = ewma_rows(Z, p.smooth)
    lam, vec = np.linalg.eigh(np.atleast_2d(np.cov(Z, rowvar=False)))
    order = np.argsort(lam)[::-1]
    lam, vec = np.clip(lam[order], 0.0, None), vec[:, order]
    if p.components is not None:  # type: ignore[attr-defined]
        a = p.components  # type: ignore[attr-defined]
    else:
        a = int(np.searchsorted(np.cumsum(lam) / max(lam.sum(), 1e-300), p.variance) + 1)  # type: ignore[attr-defined]
    a = max(1, min(a, d - 1))
    P, lam_a = vec[:, :a].copy(), np.maximum(lam[:a], 1e-12)
    t2_lim = t2_limit(a, m, p.alpha)  # type: ignore[attr-defined]
    spe_lim = max(spe_limit(lam[a:], p.alpha, p.spe_limit), 1e-12)  # type: ignore[attr-defined]
    if p.calibrate is not None:
        sc = Z @ P
        t2 = np.sum(sc * sc / lam_a, axis=1)
        e = Z - sc @ P.T
        q = float(np.quantile(np.maximum(t2 / t2_lim, np.sum(e * e, axis=1) / spe_lim), p.calibrate))
        t2_lim, spe_lim = t2_lim * q, spe_lim * q
    t2_lim, spe_lim = t2_lim * p.limit_scale, max(spe_lim * p.limit_scale, 1e-12)
    return {"mean": mean, "std": std, "P": P, "lam": lam_a, "lim": np.array([t2_lim, spe_lim, float(m), float(a)]),
            "drift": drift, "ewma": Z[-1].copy() if p.smooth > 0 else np.full(d, np.nan)}
