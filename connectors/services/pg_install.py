"""Where PostgreSQL's server binaries and TimescaleDB are installed on this machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .process import INSTALL_HINT, ServiceUnavailable

DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_bin_dir(pg_bin: str | os.PathLike[str] | None) -> Path:
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


def pg_sharedir(pg_bin: Path) -> Path | None:
    pg_config = pg_bin / "pg_config"
    if pg_config.is_file():
        proc = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return Path(proc.stdout.strip())
    # Debian layout without postgresql-server-dev: /usr/lib/postgresql/N/bin -> /usr/share/postgresql/N
    if pg_bin.parent.parent.name == "postgresql":
        return Path("/usr/share/postgresql") / pg_bin.parent.name
    return None


def pg_major(pg_bin: Path) -> int:
    out = subprocess.run([str(pg_bin / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:  # pragma: no cover
        raise ServiceUnavailable(f"cannot parse `postgres --version` output: {out!r}")
    return int(match.group(1))


def timescaledb_available(pg_bin: str | os.PathLike[str] | None = None) -> bool:
    """Whether TimescaleDB is installed for the PostgreSQL in ``pg_bin``."""
    sharedir = pg_sharedir(pg_bin_dir(pg_bin))
    return sharedir is not None and (sharedir / "extension" / "timescaledb.control").is_file()


def clean_env() -> dict[str, str]:
    """The environment minus libpq's PG* variables, which would redirect our commands."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
