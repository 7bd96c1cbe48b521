"""Throwaway Mosquitto and PostgreSQL/TimescaleDB instances on free local ports.

Tests and ``plantwatch bench`` start their own brokers and database clusters
instead of relying on whatever happens to run on 1883/5432: a fresh CI machine
has no such services, and a developer's system services must not be touched.

Both classes work synchronously (``start()``/``stop()``, ``with``) and as async
context managers (the blocking start runs in a worker thread).  This module
has no pytest dependency on purpose: benchmarks reuse it.

Running as root: PostgreSQL refuses to run as uid 0, so its commands are run as
an unprivileged OS user (``postgres`` when it exists) via ``runuser``/``setpriv``,
with the cluster's directory owned by that user.  Mosquitto is told to stay
root (``user root``) so it can write its persistence file into a root-owned
temporary directory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "DEFAULT_PG_BIN",
    "INSTALL_HINT",
    "MosquittoInstance",
    "PostgresInstance",
    "ServiceError",
    "ServiceStartError",
    "ServiceUnavailable",
    "free_port",
    "service_user",
    "timescaledb_available",
]

DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEFAULT_MOSQUITTO = Path("/usr/sbin/mosquitto")
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


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on ``host`` that is free right now.

    The kernel picks an unused ephemeral port; there is a small window before
    the caller binds it, which is acceptable for tests on one machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:  # pragma: no cover - unreadable log
        return f"(log unreadable: {exc})"
    return "\n".join(text[-lines:]) or "(log empty)"


def _port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _is_root() -> bool:
    return os.geteuid() == 0


def _user_exists(name: str) -> bool:
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
    if not _is_root():
        return None
    if preferred:
        if not _user_exists(preferred):
            raise ServiceUnavailable(f"OS user {preferred!r} (to run PostgreSQL as) does not exist")
        return preferred
    if _user_exists("postgres"):
        return "postgres"
    if not _user_exists(FALLBACK_SERVICE_USER):
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", FALLBACK_SERVICE_USER],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0 and not _user_exists(FALLBACK_SERVICE_USER):
            raise ServiceUnavailable(
                "PostgreSQL cannot run as root and there is no `postgres` OS user; creating "
                f"system user {FALLBACK_SERVICE_USER!r} failed: {proc.stderr.strip()}"
            )
    return FALLBACK_SERVICE_USER


def _as_user(cmd: Sequence[str | os.PathLike[str]], user: str | None) -> list[str]:
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


def _chown(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def _user_can_reach(user: str | None, path: Path) -> bool:
    """Whether ``user`` can traverse every directory down to ``path`` (``test -x``)."""
    if user is None:
        return True
    proc = subprocess.run(_as_user(["test", "-x", str(path)], user), capture_output=True, check=False)
    return proc.returncode == 0


class _SyncAsyncContext:
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


# --------------------------------------------------------------------------- Mosquitto


def _mosquitto_binary(binary: str | os.PathLike[str] | None) -> Path:
    explicit = binary or os.environ.get("PLANTWATCH_MOSQUITTO")
    candidates = [explicit] if explicit else [DEFAULT_MOSQUITTO, shutil.which("mosquitto")]
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    looked = explicit or f"{DEFAULT_MOSQUITTO} and `mosquitto` on PATH"
    raise ServiceUnavailable(f"Mosquitto broker binary not found (looked for {looked}); {INSTALL_HINT}")


class MosquittoInstance(_SyncAsyncContext):
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
        if _is_root():
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
        while not _port_open(self.host, self.port):
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
        return (f"--- {self.stderr_path} ---\n{_tail(self.stderr_path)}\n"
                f"--- {self.log_path} ---\n{_tail(self.log_path)}")

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


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin(pg_bin: str | os.PathLike[str] | None) -> Path:
    explicit = pg_bin or os.environ.get("PLANTWATCH_PG_BIN")
    candidates = [Path(explicit)] if explicit else [DEFAULT_PG_BIN]
    if not explicit and (which := shutil.which("pg_ctl")):
        candidates.append(Path(which).resolve().parent)
    for cand in candidates:
        if all((cand / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres", "psql")):
            return cand
    raise ServiceUnavailable(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found in "
        f"{', '.join(map(str, candidates))}; {INSTALL_HINT}, or pass pg_bin= / set PLANTWATCH_PG_BIN"
    )


def _pg_sharedir(pg_bin: Path) -> Path | None:
    pg_config = pg_bin / "pg_config"
    if pg_config.is_file():
        proc = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return Path(proc.stdout.strip())
    # Debian layout without postgresql-server-dev: /usr/lib/postgresql/N/bin -> /usr/share/postgresql/N
    if pg_bin.parent.parent.name == "postgresql":
        return Path("/usr/share/postgresql") / pg_bin.parent.name
    return None


def _pg_major(pg_bin: Path) -> int:
    out = subprocess.run([str(pg_bin / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:  # pragma: no cover
        raise ServiceUnavailable(f"cannot parse `postgres --version` output: {out!r}")
    return int(match.group(1))


def timescaledb_available(pg_bin: str | os.PathLike[str] | None = None) -> bool:
    """Whether TimescaleDB is installed for the PostgreSQL in ``pg_bin``."""
    sharedir = _pg_sharedir(_pg_bin(pg_bin))
    return sharedir is not None and (sharedir / "extension" / "timescaledb.control").is_file()


def _clean_env() -> dict[str, str]:
    """The environment minus libpq's PG* variables, which would redirect our commands."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class PostgresInstance(_SyncAsyncContext):
    """A private PostgreSQL cluster on 127.0.0.1 and a free port, trust auth, database ``plantwatch``.

    * ``timescaledb``: ``None`` preloads TimescaleDB when installed for this
      PostgreSQL, ``True`` requires it (``ServiceUnavailable`` otherwise),
      ``False`` never preloads it (plain PostgreSQL).
    * ``fast=True`` turns off fsync, synchronous_commit and full_page_writes:
      for tests only, never for benchmarks (it changes what is measured).
    * ``data_dir``: by default the cluster lives in a temporary directory that
      ``stop()`` deletes; with a ``data_dir`` the cluster persists there, is
      reused by the next start, and a server already running on it is adopted
      (and then left running by ``stop()``).
    * ``settings`` are extra ``postgresql.conf`` settings.
    """

    def __init__(
        self,
        *,
        pg_bin: str | os.PathLike[str] | None = None,
        timescaledb: bool | None = None,
        fast: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        database: str = "plantwatch",
        max_connections: int = 100,
        settings: Mapping[str, str | int | float | bool] | None = None,
        run_as: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.pg_bin = _pg_bin(pg_bin)
        self.major = _pg_major(self.pg_bin)
        sharedir = _pg_sharedir(self.pg_bin)
        installed = sharedir is not None and (sharedir / "extension" / "timescaledb.control").is_file()
        if timescaledb and not installed:
            raise ServiceUnavailable(
                f"TimescaleDB is not installed for PostgreSQL {self.major} in {self.pg_bin} "
                f"(no {sharedir}/extension/timescaledb.control); {INSTALL_HINT}"
            )
        #: True when TimescaleDB is installed and preloaded, so ``CREATE EXTENSION timescaledb`` works.
        self.timescaledb: bool = installed if timescaledb is None else bool(timescaledb)
        self.fast = fast
        self.host = LOCALHOST
        self.port = port or free_port()
        self.database = database
        self.max_connections = max_connections
        self.start_timeout = start_timeout
        self._settings = dict(settings or {})
        self._persistent = data_dir is not None
        self._data_dir = Path(data_dir).expanduser().absolute() if data_dir is not None else None
        self._run_as_arg = run_as
        self._user: str | None = None
        self._tmp: Path | None = None  # temp base (whole cluster, or only the socket dir when persistent)
        self._started = False  # we started the server (and so stop it)
        self._adopted = False  # a server was already running on data_dir
        self._atexit_registered = False

    # paths and DSNs -----------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            self._data_dir = self._tmp_dir() / "data"
        return self._data_dir

    @property
    def log_path(self) -> Path:
        return (self.data_dir / "plantwatch-server.log") if self._persistent else (self._tmp_dir() / "postgres.log")

    @property
    def socket_dir(self) -> Path:
        return self._tmp_dir() / "sock"

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/plantwatch`` (TCP)."""
        return self.dsn_for(self.database)

    @property
    def admin_dsn(self) -> str:
        """DSN of the ``postgres`` maintenance database, for CREATE/DROP DATABASE."""
        return self.dsn_for("postgres")

    @property
    def socket_dsn(self) -> str:
        """The same database over the unix socket (asyncpg and libpq accept ``?host=DIR``)."""
        return f"postgresql://postgres@/{self.database}?host={self.socket_dir}&port={self.port}"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._server_pid() is not None

    def _tmp_dir(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="plantwatch-pg-"))
            self._tmp.chmod(0o700)
            _chown(self._tmp, self._resolve_user())
        return self._tmp

    def _resolve_user(self) -> str | None:
        if self._user is None and _is_root():
            owner: str | None = None
            if self._data_dir is not None and (self._data_dir / "PG_VERSION").exists():
                uid = self._data_dir.stat().st_uid
                if uid != 0:
                    # An existing cluster must keep running as the user that owns it.
                    owner = pwd.getpwuid(uid).pw_name
            self._user = owner or service_user(self._run_as_arg)
        return self._user

    # commands -------------------------------------------------------------------
    def _run(self, cmd: Sequence[str | os.PathLike[str]], *, timeout: float, what: str,
             as_service_user: bool = True) -> subprocess.CompletedProcess[str]:
        args = _as_user(cmd, self._resolve_user()) if as_service_user else [os.fspath(c) for c in cmd]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                                  env=_clean_env(), cwd=self._tmp_dir())
        except subprocess.TimeoutExpired as exc:
            raise ServiceStartError(f"{what} timed out after {timeout:.0f} s: {' '.join(args)}\n"
                                    f"--- {self.log_path} ---\n{_tail(self.log_path)}") from exc
        if proc.returncode != 0:
            raise ServiceStartError(
                f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stdout}{proc.stderr}"
                f"--- {self.log_path} ---\n{_tail(self.log_path)}"
            )
        return proc

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with ``psql`` (no asyncio needed) and return its unaligned, tuples-only output."""
        proc = self._run([self.pg_bin / "psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1",
                          "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
                         timeout=60, what="psql", as_service_user=False)
        return proc.stdout.strip()

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` and return its DSN."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name`` (terminating its sessions, e.g. TimescaleDB's background workers)."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # configuration ------------------------------------------------------------------
    def _conf_text(self) -> str:
        settings: dict[str, str | int | float | bool] = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": self.max_connections,
            "log_line_prefix": "%m [%p] %q%u@%d ",
        }
        if self.timescaledb:
            settings.update({
                "shared_preload_libraries": "timescaledb",
                "timescaledb.telemetry_level": "off",
                # one scheduler per database with the extension: tests create many databases
                "max_worker_processes": 32,
                "timescaledb.max_background_workers": 24,
            })
        if self.fast:
            settings.update({"fsync": False, "synchronous_commit": False, "full_page_writes": False})
        settings.update(self._settings)
        lines = ["# rewritten at every start by plantwatch.connectors.services.PostgresInstance"]
        for key, value in settings.items():
            text = ("on" if value else "off") if isinstance(value, bool) else str(value)
            lines.append(f"{key} = '{text.replace(chr(39), chr(39) * 2)}'")
        return "\n".join(lines) + "\n"

    def _write_conf(self) -> None:
        user = self._resolve_user()
        conf = self.data_dir / "plantwatch.conf"
        conf.write_text(self._conf_text())
        _chown(conf, user)
        main = self.data_dir / "postgresql.conf"
        text = main.read_text()
        include = "include_if_exists = 'plantwatch.conf'"
        if include not in text:
            note = "# plantwatch: per-start settings (port, sockets, preload)"
            main.write_text(f"{text.rstrip()}\n\n{note}\n{include}\n")

    def _initdb(self) -> None:
        user = self._resolve_user()
        data = self.data_dir
        if data.exists() and any(data.iterdir()):
            raise ServiceStartError(f"{data} is not empty and holds no PostgreSQL cluster (no PG_VERSION)")
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        _chown(data, user)
        if not _user_can_reach(user, data):
            raise ServiceStartError(
                f"PostgreSQL runs as OS user {user!r} (it refuses to run as root), and that user cannot reach "
                f"{data}: every parent directory needs o+x, or choose a data directory elsewhere"
            )
        cmd: list[str | os.PathLike[str]] = [self.pg_bin / "initdb", "-D", data, "-U", "postgres", "--auth=trust",
               "--encoding=UTF8", "--no-locale"]
        if not self._persistent:
            cmd.append("--no-sync")  # throwaway cluster: durability of the initial files is irrelevant
        self._run(cmd, timeout=120, what="initdb")
        (data / "pg_hba.conf").write_text(
            "# plantwatch throwaway/dev cluster: local connections only, no passwords\n"
            "local all all trust\n"
            "host  all all 127.0.0.1/32 trust\n"
            "host  all all ::1/128 trust\n"
        )
        _chown(data / "pg_hba.conf", user)

    def _server_pid(self) -> int | None:
        """PID of a live postmaster on ``data_dir`` (from postmaster.pid), else None."""
        if self._data_dir is None:
            return None
        pidfile = self._data_dir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def _adopt(self) -> None:
        """Use a server that already runs on our persistent data_dir (e.g. left by a killed process)."""
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        # postmaster.pid: pid, datadir, start time, port, socket dir, listen address, shmem, status
        self.port = int(lines[3])
        if len(lines) > 5 and lines[5].strip() and lines[5].strip() not in ("*", self.host):
            raise ServiceStartError(
                f"a PostgreSQL server not started by plantwatch already runs on {self.data_dir} "
                f"(listening on {lines[5].strip()!r}); stop it first"
            )
        if len(lines) > 4 and lines[4].strip():
            self._tmp = Path(lines[4].strip()).parent
        self._adopted = True

    def start(self) -> None:
        """initdb if needed, then ``pg_ctl -w start`` and create the database."""
        if self._started or self._adopted:
            return
        try:
            self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def _start(self) -> None:
        if self._persistent:
            version_file = self.data_dir / "PG_VERSION"
            if version_file.exists():
                on_disk = int(version_file.read_text().strip())
                if on_disk != self.major:
                    raise ServiceStartError(
                        f"{self.data_dir} holds a PostgreSQL {on_disk} cluster but the server binaries in "
                        f"{self.pg_bin} are PostgreSQL {self.major}: dump and re-create it, or delete it"
                    )
            if self._server_pid() is not None:
                self._adopt()
                self._ensure_database()
                return
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._start_server()
        if not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        self._ensure_database()

    def _start_server(self) -> None:
        user = self._resolve_user()
        self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _chown(self.socket_dir, user)
        self._write_conf()
        if not self.log_path.exists():
            self.log_path.touch(mode=0o600)
            _chown(self.log_path, user)
        self._run([self.pg_bin / "pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-w",
                   "-t", str(int(self.start_timeout)), "-s", "start"],
                  timeout=self.start_timeout + 30, what="pg_ctl start")
        self._started = True

    def _ensure_database(self) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if exists != "1":
            self.psql(f'CREATE DATABASE "{self.database}"')

    def _stop_server(self, mode: str) -> None:
        if not self._started:
            return
        self._started = False
        if self._server_pid() is None:
            return
        try:
            self._run([self.pg_bin / "pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "-t", "60", "-s", "stop"],
                      timeout=90, what="pg_ctl stop")
        except ServiceStartError:
            pid = self._server_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise

    def restart(self, *, hard: bool = False) -> None:
        """Stop and start on the same port and data.

        ``hard=True`` stops with ``-m immediate`` (no checkpoint, WAL recovery at the next start), as after a crash.
        """
        if self._adopted:
            raise ServiceError("cannot restart a server this object adopted rather than started")
        self._stop_server("immediate" if hard else "fast")
        self._start_server()

    def halt(self, *, hard: bool = False) -> None:
        """Stop the server but keep its data: :meth:`start` brings it back on the same port (an
        outage of any length, for fault tests). ``hard=True`` stops it with ``-m immediate``."""
        self._stop_server("immediate" if hard else "fast")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._server_pid()

    def stop(self) -> None:
        """Stop the server we started (fast shutdown) and delete the temporary directory.

        A persistent ``data_dir`` is kept; an adopted server is left running.
        """
        try:
            self._stop_server("fast")
        finally:
            if self._tmp is not None and not self._adopted:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
                if not self._persistent:
                    self._data_dir = None
            self._adopted = False

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def __repr__(self) -> str:
        return (f"PostgresInstance(PostgreSQL {self.major}, {self.host}:{self.port}, "
                f"timescaledb={self.timescaledb}, fast={self.fast}, running={self.running})")
