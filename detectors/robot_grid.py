"""The site grid of :mod:`.robot_baseline`: which cell a robot reading's position falls in, and
which cells lie around it (pure geometry, no state)."""
from __future__ import annotations

import numpy as np


class SiteGrid:
    """Square cells of ``cell`` metres over ``extent`` = (x0, y0, x1, y1), ``shape`` = (nx, ny)
    cells (the params' ``grid``); cell ``cy * nx + cx``."""

    def __init__(self, extent: tuple[float, float, float, float], cell: float, neighbourhood: int,
                 shape: tuple[int, int]):
        self.extent, self.cell, self.r = extent, cell, neighbourhood
        self.nx, self.ny = shape

    def cells(self, pos: np.ndarray | None, k: int) -> np.ndarray:
        """Grid cell of each of ``k`` positions (-1: no position, or outside ``extent``)."""
        if pos is None:
            return np.full(k, -1, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.float64).reshape(k, 2)
        x0, y0, x1, y1 = self.extent
        with np.errstate(invalid="ignore"):
            inside = np.isfinite(pos).all(axis=1) & (pos[:, 0] >= x0) & (pos[:, 0] < x1) & (pos[:, 1] >= y0) & (pos[:, 1] < y1)
            cx = np.where(inside, np.floor((pos[:, 0] - x0) / self.cell), 0).astype(np.int64)
            cy = np.where(inside, np.floor((pos[:, 1] - y0) / self.cell), 0).astype(np.int64)
        return np.where(inside, np.minimum(cy, self.ny - 1) * self.nx + np.minimum(cx, self.nx - 1), -1)

    def neighbours(self, cell: np.ndarray) -> np.ndarray:
        """Cells within ``neighbourhood`` cells of each cell, own cell first, shape (m, K); -1 off the grid."""
        nx, ny, r = self.nx, self.ny, self.r
        d = np.arange(-r, r + 1)
        dx, dy = (a.ravel() for a in np.meshgrid(d, d))
        order = np.argsort(np.abs(dx) + np.abs(dy), kind="stable")  # own cell first
        dx, dy = dx[order], dy[order]
        cx, cy = cell % nx, cell // nx
        gx, gy = cx[:, None] + dx, cy[:, None] + dy
        ok = (cell[:, None] >= 0) & (gx >= 0) & (gx < nx) & (gy >= 0) & (gy < ny)
        return np.where(ok, gy * nx + gx, -1)

    def centre(self, c: int) -> tuple[float, float]:
        """Site coordinates of the middle of cell ``c``."""
        return (self.extent[0] + (c % self.nx + 0.5) * self.cell, self.extent[1] + (c // self.nx + 0.5) * self.cell)
