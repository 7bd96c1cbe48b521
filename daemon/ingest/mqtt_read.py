"""Reading an MQTT subscription until told to stop (``intake.py``: the single intake and each
partition's)."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Coroutine


def raise_if_cancelling() -> None:
    """Raise CancelledError when this task was asked to stop but a library swallowed the request
    (``asyncio.wait_for`` in Python 3.11 can, when what it waits for completes in the same step):
    otherwise a task group aborting on a failed sibling would wait for this task for ever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def read_until(read: Coroutine[Any, Any, None], stop: asyncio.Event, *, name: str) -> None:
    """Run the MQTT reading loop ``read`` until ``stop`` is set (or it ends), then cancel it.
    An error of the reader (the connection lost) is raised here, for the caller's reconnect;
    once this returns nothing more is read, so the caller can drain and acknowledge."""
    reader = asyncio.create_task(read, name=name)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
