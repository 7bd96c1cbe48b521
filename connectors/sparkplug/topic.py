"""Sparkplug B topic namespace: ``spBv1.0/{group}/{type}/{edge_node}[/{device}]``."""
from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "spBv1.0"
NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})


@dataclass(frozen=True, slots=True)
class SpTopic:
    group: str
    type: str  # NBIRTH, NDATA, ... (never STATE: host application topics are not parsed)
    node: str
    device: str | None = None

    @property
    def source(self) -> str:
        """``group/node`` or ``group/node/device``: the key of the mapping in the config."""
        return f"{self.group}/{self.node}" + (f"/{self.device}" if self.device else "")


def parse(topic: str) -> SpTopic | None:
    """The parts of an edge-node or device topic; None for anything else (STATE, garbage)."""
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or not all(parts[1:]):
        return None
    _, group, kind, node, *dev = parts
    if len(parts) == 4 and kind in NODE_TYPES:
        return SpTopic(group, kind, node)
    if len(parts) == 5 and kind in DEVICE_TYPES:
        return SpTopic(group, kind, node, dev[0])
    return None


def node_command(group: str, node: str) -> str:
    return f"{NAMESPACE}/{group}/NCMD/{node}"


def subscription(group: str) -> str:
    return f"{NAMESPACE}/{group}/#"
