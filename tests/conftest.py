from __future__ import annotations

import os
from pathlib import Path

import pytest


def _datasets() -> Path | None:
    env = os.environ.get("PLANTWATCH_DATASETS")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "datasets"
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared benchmark folder (``shared/datasets`` beside or above the repository)."""
    d = _datasets()
    if d is None:
        pytest.skip("shared/datasets not found (set PLANTWATCH_DATASETS)")
    return d
