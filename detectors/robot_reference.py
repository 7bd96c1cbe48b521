"""Site-wide reference of a robot channel: the slowly varying normal shared by every place.

Ambient temperature follows the day, a whole site's gas background rises with an inversion: such
changes move every place of a route together. :class:`SiteReference` keeps, per channel, the last
``window`` place visits' estimates of the common level (each reading minus its place's learned
offset); their median is the channel's **reference**. ``robot_baseline`` subtracts it before
judging a reading, so only what is specific to a place alarms, and places learn their offset
relative to it (they never stay stuck on yesterday's ambient).

The reference itself is watched for a **site-wide shift**: one value per ``site_interval`` seconds
goes into a ring of ``site_ring`` values (about a day by default); the reference's deviation from
that ring's median, in robust sigmas (floored like the place scores), starts ``site_shift`` at
``site_threshold`` and clears below ``site_threshold × clear_ratio``. The ring learns shifted
values too, so a lasting change becomes the normal after about half the ring (12 h by default);
the daily cycle, spread over the ring, stays below the threshold.

Pure numpy; all state is in arrays (see :meth:`arrays`).
"""
from __future__ import annotations

import numpy as np

from .rowstats import nanmedian_rows

MAD_TO_SIGMA = 1.4826


class SiteReference:
    def __init__(self, n: int, window: int, site_ring: int, site_interval: float, site_warmup: int):
        self.window, self.site_ring = window, site_ring
        self.site_interval, self.site_warmup = site_interval, site_warmup
        self.rbuf = np.full((n, max(window, 1)), np.nan)
        self.rpos = np.zeros(n, dtype=np.int64)
        self.rcell = np.full(n, -1, dtype=np.int64)  # cell of the last visit entered
        self.rlast = np.full(n, -np.inf)
        self.ref = np.zeros(n)
        self.sbuf = np.full((n, site_ring), np.nan)
        self.spos = np.zeros(n, dtype=np.int64)
        self.slast = np.full(n, -np.inf)
        self.smed = np.full(n, np.nan)
        self.sscale = np.full(n, np.nan)
        self.site_on = np.zeros(n, dtype=bool)

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything learned (attribute name -> array)."""
        return {k: getattr(self, k) for k in ("rbuf", "rpos", "rcell", "rlast", "ref", "sbuf", "spos",
                                               "slast", "smed", "sscale", "site_on")}

    @property
    def enabled(self) -> bool:
        return self.window > 0

    def observe(self, idx: np.ndarray, t: np.ndarray, level: np.ndarray, cell: np.ndarray,
                min_interval: float) -> None:
        """Enter one estimate of the common level per place visit (``level`` = reading minus its
        place's offset; NaN: the reading had no place baseline)."""
        if not self.enabled:
            return
        ok = np.isfinite(level) & ((cell != self.rcell[idx]) | (t - self.rlast[idx] >= min_interval))
        if not ok.any():
            return
        i = idx[ok]
        self.rbuf[i, self.rpos[i] % self.window] = level[ok]
        self.rpos[i] += 1
        self.rcell[i] = cell[ok]
        self.rlast[i] = t[ok]
        self.ref[i] = nanmedian_rows(self.rbuf[i])

    def site(self, idx: np.ndarray, t: np.ndarray, floor: np.ndarray, z_of, threshold: float | None,
             clear_ratio: float) -> np.ndarray:
        """Site-shift score of each channel after this batch (0 until judged); updates ``site_on``."""
        zs = np.zeros(len(idx))
        if not self.enabled or threshold is None:
            return zs
        full = self.rpos[idx] >= self.window  # a whole window of visits behind the reference
        add = full & (t - self.slast[idx] >= self.site_interval)
        if add.any():
            i = idx[add]
            self.sbuf[i, self.spos[i] % self.site_ring] = self.ref[i]
            self.spos[i] += 1
            self.slast[i] = t[add]
            med = nanmedian_rows(self.sbuf[i])
            with np.errstate(invalid="ignore"):
                mad = nanmedian_rows(np.abs(self.sbuf[i] - med[:, None]))
            self.smed[i], self.sscale[i] = med, MAD_TO_SIGMA * mad
        judged = full & (self.spos[idx] >= self.site_warmup)
        z = z_of(self.ref[idx], self.smed[idx], np.maximum(self.sscale[idx], floor))
        zs = np.where(judged & np.isfinite(z), z, 0.0)
        on = self.site_on[idx]
        self.site_on[idx] = np.where(on, zs >= threshold * clear_ratio, zs >= threshold)
        return zs
