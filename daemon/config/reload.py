"""Reloading a running daemon's config (SIGHUP, ``plantwatch config apply``): what may change
without a restart, the checked candidate, the carrying of learned per-sensor state into a
detector whose sensor list changed, and the files through which ``config apply`` reaches the
daemon (its pid) and learns the outcome.

A reload applies the sensor registry, limits, detectors, compositions and the alarm settings. The
sections that hold connections or listening sockets (``site.id``, ``mqtt``, ``database``,
``metrics``, ``api``, ``cluster``, ``sparkplug``, ``state``) need a restart: a candidate that
changes one is refused as a whole, like one that does not pass ``config check``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from plantwatch.daemon.config.model import Config, ConfigError, config_hash, load_config

#: sections a reload cannot change (the daemon holds connections or sockets made from them)
RESTART_ONLY = ("mqtt", "database", "metrics", "api", "cluster", "sparkplug", "state")
PID_FILE = "plantwatch.pid"
OUTCOME_FILE = "config-reload.json"


class ReloadRefused(ValueError):
    """The candidate is not applied; the message says why (one line per problem)."""


@dataclass(frozen=True)
class Candidate:
    cfg: Config
    text: str
    digest: str


def candidate(path: str | Path, active: Config) -> Candidate:
    """The config at ``path``, checked as ``config check`` does and against what a reload may
    change; raises :class:`ReloadRefused`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        cfg = load_config(path)
    except ConfigError as e:
        raise ReloadRefused(str(e)) from None
    except OSError as e:
        raise ReloadRefused(f"{path}: {e.strerror or e}") from None
    changed = [s for s in RESTART_ONLY if _dump(getattr(cfg, s)) != _dump(getattr(active, s))]
    if cfg.site.id != active.site.id:
        changed.insert(0, "site.id")
    if changed:
        raise ReloadRefused(f"{path}: {', '.join(changed)} changed: that needs a restart (systemctl restart"
                            " plantwatch); nothing was applied")
    return Candidate(cfg, text, config_hash(text))


def _dump(section: Any) -> Any:
    return section.model_dump(mode="json") if isinstance(section, BaseModel) else section


def carry_rows(old: Any, fresh: Any, old_ids: list[str], new_ids: list[str]) -> Any:
    """The learned state ``old`` of a detector over the sensors ``old_ids``, fitted to the same
    detector over ``new_ids`` (``fresh``: its state as new): per-sensor arrays (first axis one
    row per sensor) keep the rows of the sensors both lists have and take the fresh rows of added
    sensors; arrays of another shape are kept when their shape is unchanged, else fresh."""
    if isinstance(fresh, dict) and isinstance(old, dict):
        return {k: carry_rows(old[k], v, old_ids, new_ids) if k in old else v for k, v in fresh.items()}
    if isinstance(fresh, np.ndarray) and isinstance(old, np.ndarray):
        per_sensor = (old.ndim >= 1 and fresh.ndim >= 1 and old.shape[0] == len(old_ids)
                      and fresh.shape[0] == len(new_ids) and old.shape[1:] == fresh.shape[1:])
        if per_sensor and old_ids != new_ids:
            out = fresh.copy()
            where = {s: i for i, s in enumerate(old_ids)}
            for j, s in enumerate(new_ids):
                if s in where:
                    out[j] = old[where[s]]
            return out
        return old.copy() if old.shape == fresh.shape else fresh
    return old if type(old) is type(fresh) else fresh


# --- how `plantwatch config apply` reaches the daemon --------------------------------------------

def pid_path(cfg: Config) -> Path:
    return Path(cfg.state.data_dir) / PID_FILE


def outcome_path(cfg: Config) -> Path:
    return Path(cfg.state.data_dir) / OUTCOME_FILE


def write_outcome(cfg: Config, digest: str | None, ok: bool, message: str) -> None:
    """What the last reload did, for ``config apply`` (written whole, then renamed)."""
    path = outcome_path(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"time": time.time(), "hash": digest, "ok": ok, "message": message}))
    os.replace(tmp, path)


def read_outcome(cfg: Config) -> dict | None:
    try:
        return json.loads(outcome_path(cfg).read_text())
    except (OSError, ValueError):
        return None
