"""Which partition a collector belongs to, what each partition's session subscribes to, and the
detector state of one partition (saved by its holder, restored by the next one). See
``daemon/ingest/cluster.py``."""
from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np

from plantwatch.daemon.config.model import ClusterConfig, Config

log = logging.getLogger("plantwatch.cluster")


def partition_of(collector: str, cc: ClusterConfig | None, listed: frozenset[str] | None = None) -> int:
    if cc is None or cc.partitions == 1:
        return 0
    if cc.collectors and collector not in (listed if listed is not None else frozenset(cc.collectors)):
        return 0
    return zlib.crc32(collector.encode()) % cc.partitions


def partition_topics(cfg: Config, k: int) -> tuple[list[str], bool]:
    """Topics partition ``k``'s session subscribes to, and whether they are wildcards that also
    bring other partitions' messages (which are then acknowledged and left alone)."""
    cc = cfg.cluster
    prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
    base = f"{prefix}/{cfg.site.id}"
    if cc is None or cc.partitions == 1 or not cc.collectors or k == 0:
        return [f"{base}/+/readings", f"{base}/+/robot"], cc is not None and cc.partitions > 1
    mine = [c for c in cc.collectors if partition_of(c, cc) == k]
    return [f"{base}/{c}/{kind}" for c in mine for kind in ("readings", "robot")], False


# --- detector state of one partition ---------------------------------------------------------
def _rows_of(state: Any, n: int, sel: np.ndarray) -> Any:
    if isinstance(state, dict):
        return {k: _rows_of(v, n, sel) for k, v in state.items()}
    if isinstance(state, np.ndarray) and state.ndim >= 1 and state.shape[0] == n:
        return state[sel].copy()
    return None  # parameters and scalars stay with the instance


def _patch(cur: Any, saved: Any, n: int, sel: np.ndarray) -> Any:
    if isinstance(cur, dict) and isinstance(saved, dict):
        return {k: (_patch(v, saved[k], n, sel) if k in saved else v) for k, v in cur.items()}
    if isinstance(cur, np.ndarray) and isinstance(saved, np.ndarray) and cur.ndim >= 1 and cur.shape[0] == n:
        out = cur.copy()
        out[sel] = saved
        return out
    return cur


def partition_state(detectors, cols: np.ndarray) -> list[tuple[str, str, dict]]:
    """``(row id, fingerprint, state)`` of the sensors ``cols`` (global columns) per detector."""
    out = []
    for w in detectors.watches:
        loc = w.local[cols]
        has = loc >= 0
        sel = loc[has]
        out.append((w.cfg.id, w.fingerprint, {"cols": cols[has], "state": _rows_of(w.get_state(), len(w.cols), sel)}))
    out.append(("__last_t__", detectors.sensors_fingerprint(), {"cols": cols, "last_t": detectors.last_t[cols].copy()}))
    return out


def restore_partition(detectors, saved: dict[str, tuple[str, dict]]) -> np.ndarray:
    """Patch the saved rows into the running detectors; returns the global columns restored."""
    cols_all: list[np.ndarray] = []
    for w in detectors.watches:
        fp_state = saved.get(w.cfg.id)
        if not fp_state or fp_state[0] != w.fingerprint:
            continue
        st = fp_state[1]
        cols = np.asarray(st["cols"], dtype=np.int64)
        sel = w.local[cols]
        try:
            w.set_state(_patch(w.get_state(), st["state"], len(w.cols), sel))
        except (KeyError, ValueError) as e:
            log.warning("detector %s: partition state not usable (%s)", w.cfg.id, e)
            continue
        cols_all.append(cols)
    lt = saved.get("__last_t__")
    if lt and lt[0] == detectors.sensors_fingerprint():
        cols = np.asarray(lt[1]["cols"], dtype=np.int64)
        detectors.last_t[cols] = lt[1]["last_t"]  # the holder's, not what this instance scored before
        cols_all.append(cols)
    return np.unique(np.concatenate(cols_all)) if cols_all else np.empty(0, np.int64)


def instance_client_id(base: str, cc: ClusterConfig | None, purpose: str) -> str:
    """The MQTT client id of one of an instance's own connections (``pub``: alarm publisher,
    ``status``: site status). One instance: ``{mqtt.client_id}-{purpose}``. Several instances share
    ``mqtt.client_id`` (the partitions' sessions are ``{client_id}-p{k}``, shared on purpose: a
    session moves with its partition), so each instance's own connections carry its instance id:
    ``{mqtt.client_id}-{instance_id}-{purpose}``; two instances never knock each other off the
    broker with the same id."""
    return f"{base}-{purpose}" if cc is None else f"{base}-{cc.instance_id}-{purpose}"
