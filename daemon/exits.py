"""How ``plantwatch run`` ends, as exit codes a service manager can act on.

* 0 — stopped on request, everything received committed and acknowledged;
* 1 — a stage crashed (logged with its traceback): restart it;
* 2 — it cannot start as configured (a bad config, a port already in use): one clear line;
* 3 — a graceful stop gave up after ``ingest.shutdown_grace`` seconds, leaving messages
  unacknowledged (the broker delivers them again to the next run; nothing is lost);
* 130 — a second signal ended it at once.
"""
from __future__ import annotations

EXIT_CRASHED = 1
EXIT_CONFIG = 2
EXIT_GRACE_EXCEEDED = 3
EXIT_SECOND_SIGNAL = 130


class StartupError(Exception):
    """The daemon cannot start as configured; the message is one line that says why."""


class GraceExceeded(Exception):
    """The graceful stop did not finish within ``ingest.shutdown_grace`` seconds."""
