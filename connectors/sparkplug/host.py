"""The Sparkplug 3.0 host application's STATE (``spBv1.0/STATE/<host_id>``): how a primary host
tells edge nodes it is there.

* Each MQTT connection of the host gets a timestamp (milliseconds, UTC, increasing). Its CONNECT
  carries a Will: the retained OFFLINE STATE ``{"online": false, "timestamp": T}`` at QoS 1.
* After subscribing (its own STATE topic included) the host publishes the retained ONLINE STATE
  ``{"online": true, "timestamp": T}`` at QoS 1, with the same ``T`` as the Will.
* Before it disconnects on purpose it publishes the OFFLINE STATE itself (same ``T``), since a
  Will is not sent on a clean disconnect.
* Edge nodes act on a STATE only when its timestamp is not older than the last one they saw: a
  late Will of an earlier connection cannot take a newer ONLINE down. When the host reads an
  OFFLINE STATE of its own host id while it is connected (another connection's Will, or a
  retained one), it publishes its ONLINE again.

Pure: no I/O. The intake (``daemon/ingest/intake.py``) publishes what this says.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from .topic import NAMESPACE

STATE_QOS = 1


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"


def is_state(topic: str) -> bool:
    return topic.startswith(f"{NAMESPACE}/STATE/")


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()


def read_state(payload: bytes) -> tuple[bool, int] | None:
    """``(online, timestamp)`` of a STATE payload; None when it is not one."""
    try:
        d = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("online"), bool) or not isinstance(d.get("timestamp"), int):
        return None
    return d["online"], d["timestamp"]


@dataclass(slots=True)
class HostState:
    """The STATE of one host id over successive connections."""

    host_id: str
    timestamp: int = 0  # of the current (or last) connection, ms

    @property
    def topic(self) -> str:
        return state_topic(self.host_id)

    def next_connection(self, now: float | None = None) -> tuple[str, bytes]:
        """A new connection's timestamp (strictly later than the previous one's) and its Will."""
        ms = int((time.time() if now is None else now) * 1000)
        self.timestamp = max(ms, self.timestamp + 1)
        return self.topic, state_payload(False, self.timestamp)

    def online(self) -> bytes:
        return state_payload(True, self.timestamp)

    def offline(self) -> bytes:
        return state_payload(False, self.timestamp)

    def answer(self, payload: bytes) -> bytes | None:
        """What to publish after reading ``payload`` on this host id's own STATE topic while
        connected: the ONLINE STATE again when it says OFFLINE; None otherwise."""
        st = read_state(payload)
        if st is None or st[0]:
            return None
        return self.online()
