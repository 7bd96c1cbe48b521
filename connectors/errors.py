"""plantwatch's own store errors. The daemon catches these, never a class of the driver.

* :class:`StoreRefused`: the database refused the data itself (PostgreSQL classes 22, 23 and 54,
  and the driver's encoding errors). No retry can fix it: the write path splits the unit and
  quarantines what is refused.
* :class:`StoreUnavailable`: the database is not there (refused, lost, shutting down, not
  answering in time). A pause: the caller retries, or answers 503.

Both keep the driver's error as ``__cause__`` and its class name in ``kind``, and print as
``"<driver class>: <message>"`` so logs and dead letters name what the database said.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

#: write failures caused by the data itself: PostgreSQL's classes 22 (data exception), 23
#: (integrity constraint violation) and 54 (program limit exceeded, e.g. an index row too large),
#: and the driver's encoding errors (asyncpg's client-side DataError is a ValueError; a datetime
#: out of range an OverflowError)
DRIVER_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError,
                  ValueError, OverflowError, TypeError)

#: a database that is not there (refused, lost, shutting down, not answering in time)
DRIVER_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.InternalClientError, asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
                      asyncpg.CrashShutdownError)


class StoreError(Exception):
    """A store operation failed; ``kind`` is the driver's error class name."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.kind = type(cause).__name__
        self.message = str(cause)

    @property
    def timed_out(self) -> bool:
        """The driver gave up waiting for an answer (a timeout, not a refusal)."""
        return isinstance(self.__cause__, TimeoutError)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


class StoreRefused(StoreError):
    """The database refused the data itself; retrying cannot help."""


class StoreUnavailable(StoreError):
    """The database is not there or does not answer; try again later."""


@contextmanager
def refusals() -> Iterator[None]:
    """Turn the driver's refusals of the data into :class:`StoreRefused` (for write paths)."""
    try:
        yield
    except DRIVER_REFUSED as e:
        raise StoreRefused(e) from e


@contextmanager
def availability() -> Iterator[None]:
    """Turn the driver's unavailability errors into :class:`StoreUnavailable` (for reads)."""
    try:
        yield
    except DRIVER_UNAVAILABLE as e:
        raise StoreUnavailable(e) from e


@contextmanager
def driver_errors() -> Iterator[None]:
    """Turn any other error of the driver into :class:`StoreError` (around :func:`availability`)."""
    try:
        yield
    except asyncpg.PostgresError as e:
        raise StoreError(e) from e
