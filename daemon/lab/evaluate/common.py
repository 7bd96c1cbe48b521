"""Shared helpers of the evaluation runners: their command line, streaming detectors over
columns, CSV, tables."""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from plantwatch.detectors import SensorInfo, create


class DataFolderError(Exception):
    """The ``--data`` folder is not laid out like the benchmark (a file missing, nothing to score)."""


def run_main(argv: Sequence[str] | None, *, name: str, doc: str | None, data: str, out: str, config: str,
             evaluate: Callable[[argparse.Namespace, dict | None], object],
             options: Sequence[tuple[str, str]] = ()) -> int:
    """The command line of every evaluation runner: ``--data`` (required), ``--out``, the
    runner's own ``options`` ((flag, help) pairs) and ``--config`` (a JSON file), then
    ``evaluate(args, config)``. A config the runner refuses (a ``ValueError``: bad detector
    parameters, an unknown mode) is one line on stderr and exit code 2, no traceback; so is a
    ``--data`` folder the runner cannot use (:class:`DataFolderError`)."""
    ap = argparse.ArgumentParser(prog=f"plantwatch eval {name}", description=doc.replace("``", "") if doc else None)
    ap.add_argument("--data", required=True, help=data)
    ap.add_argument("--out", help=out)
    for flag, text in options:
        ap.add_argument(flag, help=text)
    ap.add_argument("--config", help=config)
    a = ap.parse_args(argv)
    cfg = json.loads(Path(a.config).read_text()) if a.config else None
    try:
        evaluate(a, cfg)
    except DataFolderError as e:
        print(f"plantwatch eval {name}: --data {a.data}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"plantwatch eval {name}: {a.config or 'default preset'}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


def sensors(names: Sequence[str], kind: str = "benchmark") -> list[SensorInfo]:
    """Sensor descriptions for benchmark columns (no engineering range is known)."""
    return [SensorInfo(id=n, kind=kind, unit="", range_min=float("nan"), range_max=float("nan"), area="eval")
            for n in names]


def stream_columns(
    name: str,
    params: Mapping[str, Any],
    values: Sequence[np.ndarray],
    times: Sequence[np.ndarray],
    ids: Sequence[str],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run one detector over several series at once, one sensor column per series.

    Step k feeds the k-th reading of every series that has one, in a single ``update`` call (the
    daemon's "round" of distinct sensors), so each series sees exactly its own past: causal.
    Returns per-series (score, code) arrays.
    """
    det = create(name, params, sensors(ids))
    n = len(values)
    lengths = np.array([len(v) for v in values])
    order = np.argsort(-lengths, kind="stable")  # longest first: active columns are a prefix
    width = int(lengths.max()) if n else 0
    X = np.full((n, width), np.nan)
    T = np.zeros((n, width))
    for r, j in enumerate(order):
        X[r, : lengths[j]] = values[j]
        T[r, : lengths[j]] = times[j]
    score = np.zeros((n, width))
    code = np.zeros((n, width), dtype=np.int8)
    sorted_len = lengths[order]
    for k in range(width):
        m = int(np.searchsorted(-sorted_len, -k, side="left"))  # series with length > k
        idx = order[:m]
        out = det.update(idx, T[:m, k], X[:m, k])
        score[:m, k] = out.score
        code[:m, k] = out.code
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.arange(n)
    return ([score[inv[j], : lengths[j]] for j in range(n)], [code[inv[j], : lengths[j]] for j in range(n)])


def write_series_csv(path: Path, index_name: str, index: Iterable[Any], score: np.ndarray,
                     alarm: np.ndarray, extra: Mapping[str, np.ndarray] | None = None) -> None:
    """One row per reading: ``index_name, score, alarm`` (+ extra columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([index_name, "score", "alarm", *extra])
        cols = [np.asarray(v) for v in extra.values()]
        for i, (ix, s, a) in enumerate(zip(index, score, alarm)):
            w.writerow([ix, f"{float(s):.6g}", int(bool(a)), *[c[i] for c in cols]])


def table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title)
    for h in header:
        t.add_column(str(h), justify="right" if h not in ("detector", "file", "fault", "profile", "task") else "left")
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.1f}"
    return "" if v is None else str(v)


def console() -> Console:
    return Console()


class Timer:
    """Wall-clock seconds of a ``with`` block."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
