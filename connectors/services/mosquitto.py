"""A private Mosquitto broker on a free local port, with persistence (tests and benchmarks).

Running as root, Mosquitto is told to stay root (``user root``) so it can write its persistence
file into a root-owned temporary directory.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .process import (INSTALL_HINT, LOCALHOST, ServiceStartError, ServiceUnavailable, SyncAsyncContext, free_port, is_root,
                      log_tail, port_open)

DEFAULT_MOSQUITTO = Path("/usr/sbin/mosquitto")


def _mosquitto_binary(binary: str | os.PathLike[str] | None) -> Path:
    explicit = binary or os.environ.get("PLANTWATCH_MOSQUITTO")
    candidates = [explicit] if explicit else [DEFAULT_MOSQUITTO, shutil.which("mosquitto")]
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    looked = explicit or f"{DEFAULT_MOSQUITTO} and `mosquitto` on PATH"
    raise ServiceUnavailable(f"Mosquitto broker binary not found (looked for {looked}); {INSTALL_HINT}")


class MosquittoInstance(SyncAsyncContext):
    """A private Mosquitto 2.x broker on 127.0.0.1 and a free port, with persistence.

    The defaults are chosen for ingest tests: a persistent session may queue up
    to a million messages (``max_queued_messages``) instead of Mosquitto's 1000,
    up to 1000 QoS 1 messages may be in flight per client, and the persistence
    file is written every second (``autosave_interval 1``) so that crash tests
    (``restart(hard=True)``) lose at most about a second of queued messages.
    ``options`` overrides or adds ``mosquitto.conf`` settings.
    """

    def __init__(
        self,
        *,
        binary: str | os.PathLike[str] | None = None,
        port: int | None = None,
        options: Mapping[str, str | int | bool] | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.binary = _mosquitto_binary(binary)
        self.host = LOCALHOST
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._options = dict(options or {})
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # paths -----------------------------------------------------------------
    @property
    def dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="plantwatch-mosquitto-"))
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.dir / "mosquitto.log"

    @property
    def stderr_path(self) -> Path:
        return self.dir / "mosquitto.stderr"

    @property
    def config_path(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def persistence_dir(self) -> Path:
        return self.dir / "persistence"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # config ------------------------------------------------------------------
    def _config_text(self) -> str:
        settings: dict[str, str | int | bool] = {
            "allow_anonymous": True,
            "persistence": True,
            "persistence_location": f"{self.persistence_dir}/",  # mosquitto wants the trailing slash
            "autosave_interval": 1,
            "max_inflight_messages": 1000,
            "max_queued_messages": 1_000_000,
            "max_queued_bytes": 0,
            "set_tcp_nodelay": True,
            "log_dest": f"file {self.log_path}",
            "log_timestamp_format": "%Y-%m-%dT%H:%M:%S",
            "connection_messages": True,
        }
        if is_root():
            # Otherwise mosquitto drops to user `mosquitto`, which cannot write our root-owned temp dir.
            settings["user"] = "root"
        settings.update(self._options)
        lines = ["# written by plantwatch.connectors.services.MosquittoInstance",
                 f"listener {self.port} {self.host}"]
        for key, value in settings.items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            lines.append(f"{key} {text}")
        return "\n".join(lines) + "\n"

    # lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return
        self.persistence_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config_text())
        with self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test runner must not kill it before teardown
            )
        if not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        deadline = time.monotonic() + self.start_timeout
        while not port_open(self.host, self.port):
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise ServiceStartError(f"mosquitto exited with code {code} during start-up.\n{self._logs()}")
            if time.monotonic() > deadline:
                self._terminate(signal.SIGKILL)
                raise ServiceStartError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} "
                    f"within {self.start_timeout:.0f} s.\n{self._logs()}"
                )
            time.sleep(0.02)

    def _logs(self) -> str:
        return (f"--- {self.stderr_path} ---\n{log_tail(self.stderr_path)}\n"
                f"--- {self.log_path} ---\n{log_tail(self.log_path)}")

    def _terminate(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=self.stop_timeout)

    def kill(self) -> None:
        """SIGKILL the broker, as in a crash: messages since the last autosave are lost."""
        self._terminate(signal.SIGKILL)

    def restart(self, *, hard: bool = False) -> None:
        """Stop and start again on the same port with the same persistence file.

        ``hard=False`` sends SIGTERM (mosquitto saves its persistence file);
        ``hard=True`` sends SIGKILL, as in a crash.
        """
        self._terminate(signal.SIGKILL if hard else signal.SIGTERM)
        self.start()

    def halt(self, *, hard: bool = False) -> None:
        """Stop the broker but keep its directory: :meth:`start` brings it back on the same
        port with the same persistence file (an outage of any length, for reconnect tests)."""
        self._terminate(signal.SIGKILL if hard else signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after ``stop_timeout``) and delete the temp directory."""
        self._terminate(signal.SIGTERM)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def __repr__(self) -> str:
        return f"MosquittoInstance({self.url}, running={self.running})"
