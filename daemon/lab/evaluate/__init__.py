"""Evaluation of plantwatch's detectors on public labelled benchmarks (NAB, SKAB, TEP).

Each runner reads an upstream-layout data folder, feeds it row by row through the same detector
code the daemon uses (``plantwatch.detectors.create(...).update(...)`` or a multivariate
monitor's ``score_rows``), scores the output with the benchmark's published rules
(:mod:`plantwatch.detectors.scoring`) and prints the result beside the published numbers.
``eval_nab``, ``eval_skab`` and ``eval_tep`` are imported lazily so that
``python -m plantwatch.daemon.lab.evaluate.<name>`` runs cleanly.
"""
from __future__ import annotations

from typing import Any

__all__ = ["eval_nab", "eval_skab", "eval_tep"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module(f".{name[5:]}", __name__), name)
    raise AttributeError(name)
