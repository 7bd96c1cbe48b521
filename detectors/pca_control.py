"""PCA process monitoring on whole rows: Hotelling's T² and SPE (Q) for benchmark evaluation.

The row-at-a-time form of :mod:`.pca_monitor` used by the TEP and SKAB evaluations, where every
variable of a row arrives together (TEP's 52 variables, SKAB's 8 channels) and the model is fitted
once on a given normal set; the daemon runs the registered ``pca_monitor`` group detector, which
shares these control limits and refits on a sliding window of live rows.

Interface (streaming, causal)::

    mon = PCAMonitor(n_components=9, alpha=0.99)
    mon.fit(X_normal)             # (n_samples, n_vars) of normal operation only
    t2, spe = mon.score_rows(X)   # each row scored on its own with the fitted model
    alarm = mon.alarm(t2, spe)    # T² > T²_lim or SPE > SPE_lim

``score_rows`` uses only the fitted model and the row itself (optionally an EWMA of past rows,
``smooth``), so feeding rows one at a time gives the same result as a batch. Limits follow the
literature (Chiang, Russell & Braatz 2001; Yin et al. 2012): T² with the F distribution, SPE with
Jackson-Mudholkar, both at confidence ``alpha``; ``limit_scale`` widens both.

With ``smooth`` the rows are autocorrelated and the textbook limits no longer hold; ``calibrate``
then rescales both limits so that exactly that quantile of the fitted (normal) rows' combined
score sits on the limit: empirical control limits, still from normal data only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


# the control limits are the registered group detector's, so that both monitors agree
from .pca_monitor import spe_limit, t2_limit  # noqa: E402,F401


@dataclass
class PCAMonitor:
    """T²/SPE monitor. ``n_components`` is a count, or a fraction of variance to keep if < 1."""

    n_components: float = 9
    alpha: float = 0.99
    limit_scale: float = 1.0
    smooth: float = 0.0  # EWMA factor on the standardised rows before projection (0 = none)
    calibrate: float | None = None  # quantile of the training rows' score put on the limit
    mean_: np.ndarray = field(init=False, repr=False)
    std_: np.ndarray = field(init=False, repr=False)
    P_: np.ndarray = field(init=False, repr=False)
    eig_: np.ndarray = field(init=False, repr=False)
    t2_lim: float = field(init=False, default=float("nan"))
    spe_lim: float = field(init=False, default=float("nan"))
    _ewma: np.ndarray | None = field(init=False, default=None, repr=False)

    def fit(self, X: np.ndarray) -> "PCAMonitor":
        X = np.asarray(X, dtype=np.float64)
        n = len(X)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0, ddof=1)
        self.std_ = np.where(std > 1e-12, std, 1.0)
        Z = (X - self.mean_) / self.std_
        if self.smooth:
            Z = self._ewma_rows(Z, reset=True)
        cov = np.cov(Z, rowvar=False)
        eig, vec = np.linalg.eigh(cov)
        order = np.argsort(eig)[::-1]
        eig, vec = np.clip(eig[order], 0, None), vec[:, order]
        a = self._n_keep(eig)
        self.P_, self.eig_ = vec[:, :a], eig
        self.t2_lim = t2_limit(a, n, self.alpha)
        self.spe_lim = spe_limit(eig[a:], self.alpha)
        self._ewma = None
        if self.calibrate is not None:
            q = float(np.quantile(self.score(*self.score_rows(X)), self.calibrate))
            self.t2_lim, self.spe_lim = self.t2_lim * q, self.spe_lim * q
            self._ewma = None
        self.t2_lim *= self.limit_scale
        self.spe_lim *= self.limit_scale
        return self

    def _n_keep(self, eig: np.ndarray) -> int:
        if self.n_components >= 1:
            return int(min(self.n_components, len(eig) - 1))
        frac = np.cumsum(eig) / eig.sum()
        return int(min(np.searchsorted(frac, self.n_components) + 1, len(eig) - 1))  # keep a residual

    def _ewma_rows(self, Z: np.ndarray, reset: bool = False) -> np.ndarray:
        out = np.empty_like(Z)
        prev = None if reset else self._ewma
        lam = self.smooth
        for i, z in enumerate(Z):
            prev = z if prev is None else lam * prev + (1 - lam) * z
            out[i] = prev
        if not reset:
            self._ewma = prev
        return out

    def reset(self) -> None:
        """Forget the smoothing state (start of a new, unrelated run)."""
        self._ewma = None

    def score_rows(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T², SPE) of each row, in order; causal (a row never sees later rows)."""
        Z = (np.atleast_2d(np.asarray(X, dtype=np.float64)) - self.mean_) / self.std_
        if self.smooth:
            Z = self._ewma_rows(Z)
        T = Z @ self.P_
        lam = np.maximum(self.eig_[: self.P_.shape[1]], 1e-12)
        t2 = (T * T / lam).sum(axis=1)
        R = Z - T @ self.P_.T
        spe = (R * R).sum(axis=1)
        return t2, spe

    def alarm(self, t2: np.ndarray, spe: np.ndarray) -> np.ndarray:
        return (t2 > self.t2_lim) | (spe > self.spe_lim)

    def score(self, t2: np.ndarray, spe: np.ndarray) -> np.ndarray:
        """One combined score: the larger of T² and SPE relative to their limits (alarm if > 1)."""
        return np.maximum(t2 / self.t2_lim, spe / max(self.spe_lim, 1e-12))
