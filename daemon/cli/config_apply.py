"""``plantwatch config apply FILE``: check the changed config here, then signal the running daemon
(SIGHUP to the pid in ``state.data_dir``/plantwatch.pid, the same as ``systemctl reload
plantwatch``) and wait for what it did: applied, or refused as a whole and why."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape


def apply(path: str, timeout: float, out: Console, err: Console) -> int:
    from plantwatch.daemon.config import reload as reloading
    from plantwatch.daemon.config.model import ConfigError, config_hash, load_config

    try:
        cfg = load_config(path)
    except ConfigError as e:
        err.print(f"[red]{escape(str(e))}[/red]\nnothing was applied", highlight=False)
        return 2
    digest = config_hash(Path(path).read_text(encoding="utf-8"))
    pid_file = reloading.pid_path(cfg)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        err.print(f"no running daemon for {path}: {pid_file} not found (start it with plantwatch run --config"
                  f" {path}; state.data_dir must be the same)", highlight=False)
        return 1
    before = reloading.read_outcome(cfg)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        err.print(f"no running daemon for {path}: process {pid} of {pid_file} is gone", highlight=False)
        return 1
    except PermissionError:
        err.print(f"not allowed to signal the daemon (process {pid}): run as its user, or systemctl reload"
                  " plantwatch", highlight=False)
        return 1
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        now = reloading.read_outcome(cfg)
        if now is not None and now != before:
            if now.get("ok") and now.get("hash") == digest:
                out.print(escape(now["message"]), highlight=False)
                return 0
            err.print(f"[red]{escape(str(now.get('message')))}[/red]", highlight=False)
            return 1
        time.sleep(0.2)
    err.print(f"the daemon (process {pid}) did not answer within {timeout:g} s; see its log", highlight=False)
    return 1
