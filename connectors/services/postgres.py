"""A private PostgreSQL (with or without TimescaleDB) cluster on a free local port (tests and
benchmarks; the embedded database of the demo builds on it).

Running as root: PostgreSQL refuses to run as uid 0, so its commands are run as an unprivileged
OS user (``postgres`` when it exists) via ``runuser``/``setpriv``, with the cluster's directory
owned by that user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .pg_install import clean_env, pg_bin_dir, pg_major, pg_sharedir
from .process import (INSTALL_HINT, LOCALHOST, ServiceError, ServiceStartError, ServiceUnavailable, SyncAsyncContext, as_user,
                      chown, free_port, is_root, log_tail, service_user, user_can_reach)


class PostgresInstance(SyncAsyncContext):
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
        self.pg_bin = pg_bin_dir(pg_bin)
        self.major = pg_major(self.pg_bin)
        sharedir = pg_sharedir(self.pg_bin)
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
            chown(self._tmp, self._resolve_user())
        return self._tmp

    def _resolve_user(self) -> str | None:
        if self._user is None and is_root():
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
        args = as_user(cmd, self._resolve_user()) if as_service_user else [os.fspath(c) for c in cmd]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                                  env=clean_env(), cwd=self._tmp_dir())
        except subprocess.TimeoutExpired as exc:
            raise ServiceStartError(f"{what} timed out after {timeout:.0f} s: {' '.join(args)}\n"
                                    f"--- {self.log_path} ---\n{log_tail(self.log_path)}") from exc
        if proc.returncode != 0:
            raise ServiceStartError(
                f"{what} failed (exit {proc.returncode}): {' '.join(args)}\n{proc.stdout}{proc.stderr}"
                f"--- {self.log_path} ---\n{log_tail(self.log_path)}"
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
        chown(conf, user)
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
        chown(data, user)
        if not user_can_reach(user, data):
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
        chown(data / "pg_hba.conf", user)

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
        chown(self.socket_dir, user)
        self._write_conf()
        if not self.log_path.exists():
            self.log_path.touch(mode=0o600)
            chown(self.log_path, user)
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
