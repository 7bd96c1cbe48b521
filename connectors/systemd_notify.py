"""systemd's notification protocol (sd_notify(3)), without a library: one datagram on the unix
socket named by ``NOTIFY_SOCKET``. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.

``READY=1`` once the service does its work, ``WATCHDOG=1`` at least every ``WatchdogSec``
(``WATCHDOG_USEC``), ``RELOADING=1`` / ``READY=1`` around a config reload, ``STOPPING=1`` at a
graceful stop, ``STATUS=...`` a line ``systemctl status`` shows.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``, ...) to systemd; False when not run by systemd. An
    unreachable or full socket raises OSError at once (the caller decides: the daemon logs it
    once); it never blocks."""
    env = os.environ if env is None else env
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.setblocking(False)  # a reader that lags (a full queue) must never stall the event loop
        s.connect(addr)
        s.sendall("\n".join(fields).encode())
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``WatchdogSec``), or None without a watchdog
    for this process."""
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1e6 / 2
