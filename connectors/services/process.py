"""What the throwaway services share: their errors, free ports, log tails, the OS user a service
runs as when we are root, and the ``with`` / ``async with`` mixin around ``start()``/``stop()``."""

from __future__ import annotations

import asyncio
import os
import pwd
import random
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

INSTALL_HINT = "install it with `sudo bash deploy/dev/install-services.sh` (Debian bookworm)"
LOCALHOST = "127.0.0.1"
# Used when running as root and no `postgres` OS user exists (e.g. the embedded
# PostgreSQL on a machine without a system PostgreSQL).
FALLBACK_SERVICE_USER = "plantwatch"


class ServiceError(RuntimeError):
    """Base class for failures of the throwaway services."""


class ServiceUnavailable(ServiceError):
    """A binary, extension or OS user the service needs is missing on this machine."""


class ServiceStartError(ServiceError):
    """The service was found but did not start (or stop) in time; the message has its log tail."""


#: where :func:`free_port` looks: below the kernel's ephemeral range (``ip_local_port_range``)
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_pick = random.SystemRandom()


def _server_ports() -> tuple[int, int] | None:
    """Ports below the kernel's ephemeral range (20,000 of them at most), or None when that range
    cannot be read or starts too low."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (max(1024, low - 20_000), low - 1) if low - 1 > 2048 else None


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on ``host`` that is free right now, for a server to listen on.

    It is taken below the kernel's ephemeral range: the kernel gives ports of that range to every
    outgoing connection, so a port it picked (``bind(0)``) could be taken by another process's
    client socket before the server bound it ("Address already in use", seen with three test
    workers). A random port below the range can only collide with another server's pick.
    """
    ports = _server_ports()
    for _ in range(200 if ports else 0):
        port = _pick.randint(*ports)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:  # in use (or in TIME_WAIT): try another
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:  # pragma: no cover - unreadable log
        return f"(log unreadable: {exc})"
    return "\n".join(text[-lines:]) or "(log empty)"


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_root() -> bool:
    return os.geteuid() == 0


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def service_user(preferred: str | None = None) -> str | None:
    """The OS user PostgreSQL runs as: ``None`` (the current user) unless we are root.

    As root: ``preferred`` if given, else ``postgres`` if it exists, else a
    system user ``plantwatch`` that is created on first use.
    """
    if not is_root():
        return None
    if preferred:
        if not user_exists(preferred):
            raise ServiceUnavailable(f"OS user {preferred!r} (to run PostgreSQL as) does not exist")
        return preferred
    if user_exists("postgres"):
        return "postgres"
    if not user_exists(FALLBACK_SERVICE_USER):
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", FALLBACK_SERVICE_USER],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0 and not user_exists(FALLBACK_SERVICE_USER):
            raise ServiceUnavailable(
                "PostgreSQL cannot run as root and there is no `postgres` OS user; creating "
                f"system user {FALLBACK_SERVICE_USER!r} failed: {proc.stderr.strip()}"
            )
    return FALLBACK_SERVICE_USER


def as_user(cmd: Sequence[str | os.PathLike[str]], user: str | None) -> list[str]:
    """Prefix ``cmd`` so that it runs as ``user`` (no-op when ``user`` is None)."""
    args = [os.fspath(c) for c in cmd]
    if user is None:
        return args
    runuser = shutil.which("runuser") or ("/usr/sbin/runuser" if Path("/usr/sbin/runuser").exists() else None)
    if runuser:
        return [runuser, "-u", user, "--", *args]
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--init-groups", *args]
    raise ServiceUnavailable("running PostgreSQL as root needs `runuser` or `setpriv` (Debian package util-linux)")


def chown(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def user_can_reach(user: str | None, path: Path) -> bool:
    """Whether ``user`` can traverse every directory down to ``path`` (``test -x``)."""
    if user is None:
        return True
    proc = subprocess.run(as_user(["test", "-x", str(path)], user), capture_output=True, check=False)
    return proc.returncode == 0


class SyncAsyncContext:
    """Mixin: ``with`` and ``async with`` around ``start()``/``stop()``."""

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
