"""Which partition a collector belongs to, what each partition's session subscribes to, and the
detector state of one partition (saved by its holder, restored by the next one). See
``daemon/ingest/cluster.py``."""
from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np

from plantwatch.connectors.sparkplug import topic as sptopic

from plantwatch.daemon.config.model import ClusterConfig, Config
from plantwatch.daemon.config.sensors import Sensor

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
    return Partitioner(cfg).topics(k)


def sparkplug_nodes(cfg: Config) -> dict[str, str]:
    """The Sparkplug B nodes the config maps metrics of (``group/node`` -> itself), and each mapped
    sensor's node (sensor id -> ``group/node``)."""
    out: dict[str, str] = {}
    for m in cfg.sparkplug.metrics if cfg.sparkplug else []:
        group, node = m.source.split("/")[:2]
        out[m.sensor] = f"{group}/{node}"
    return out


class Partitioner:
    """Which partition a collector or a Sparkplug B node (``group/node``) belongs to, and what
    each partition's session subscribes to. A collector: ``crc32(collector) % partitions`` (not
    listed in ``cluster.collectors`` when that list is given: partition 0). A Sparkplug node the
    config maps metrics of: ``crc32("group/node") % partitions``; any other node (``by_name``):
    partition 0."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.cc = cfg.cluster
        self.listed = frozenset(self.cc.collectors) if self.cc else frozenset()
        self.sensor_node = sparkplug_nodes(cfg)
        self.nodes = frozenset(self.sensor_node.values())

    def part_of(self, key: str) -> int:
        """The partition of a collector id, or of a Sparkplug node ``group/node``."""
        if "/" not in key:
            return partition_of(key, self.cc, self.listed)
        if self.cc is None or self.cc.partitions == 1 or key not in self.nodes:
            return 0
        return zlib.crc32(key.encode()) % self.cc.partitions

    def part_of_sensor(self, s: Sensor) -> int:
        node = self.sensor_node.get(s.id)
        return self.part_of(node) if node is not None else self.part_of(self.cfg.collector_of(s))

    def topics(self, k: int) -> tuple[list[str], bool]:
        cfg, cc = self.cfg, self.cc
        prefix = cfg.mqtt.topic_prefix if cfg.mqtt else "plantwatch"
        base = f"{prefix}/{cfg.site.id}"
        several = cc is not None and cc.partitions > 1
        if not several or not cc.collectors or k == 0:
            out, shared = [f"{base}/+/readings", f"{base}/+/robot"], several
        else:
            mine = [c for c in cc.collectors if partition_of(c, cc) == k]
            out, shared = [f"{base}/{c}/{kind}" for c in mine for kind in ("readings", "robot")], False
        sp = cfg.sparkplug
        if sp is None:
            return out, shared
        if not several or (k == 0 and sp.by_name):  # every node of the groups (unmapped ones are partition 0's)
            return out + [sptopic.subscription(g) for g in sp.groups], shared or several
        for key in sorted(n for n in self.nodes if self.part_of(n) == k):
            group, node = key.split("/")
            out += [f"{sptopic.NAMESPACE}/{group}/+/{node}", f"{sptopic.NAMESPACE}/{group}/+/{node}/+"]
        return out, shared

    def primary_hosts(self) -> dict[str, str]:
        """With ``cluster`` and ``sparkplug.host_id``: the host id each mapped Sparkplug node must
        name as its primary host (``group/node`` -> ``{host_id}-p{k}``); empty otherwise."""
        sp = self.cfg.sparkplug
        if sp is None or not sp.host_id or self.cc is None or self.cc.partitions == 1:
            return {}
        return {n: f"{sp.host_id}-p{self.part_of(n)}" for n in sorted(self.nodes)}

    def mine(self, k: int):  # noqa: ANN201 - a predicate on topics
        """Whether a message on a topic is partition ``k``'s to store (the others a wildcard
        brings are only acknowledged)."""
        def mine(topic: str) -> bool:
            t = sptopic.parse(topic)
            if t is not None:
                return self.part_of(f"{t.group}/{t.node}") == k
            parts = topic.rsplit("/", 2)
            return not (len(parts) == 3 and self.part_of(parts[1]) != k)
        return mine


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
