"""Live updates for the operator console: Server-Sent Events on ``GET /api/stream``.

After every committed alarm change the daemon calls :meth:`ConsolePush.changed`; each open
stream then sends ``event: alarms`` (the console fetches the summary again) within ``PING``
seconds at most, usually at once. With no change a ``ping`` goes out every ``PING`` seconds, so
the console can tell a quiet plant from a dead connection: it shows "connection lost" when
neither arrived for a few seconds or the stream broke (daemon stopped, network down).
"""
from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

#: seconds between keep-alive pings of an idle stream
PING = 1.0
#: a change may be announced before its commit (daemon/alarms/release.py waits at most
#: alarms.publish_wait): the streams are told once more this much later
AGAIN = 0.6


class ConsolePush:
    def __init__(self) -> None:
        self.version = 0
        self._changed = asyncio.Event()

    def changed(self, *, again: bool = True) -> None:
        """An alarm change was decided (called on the daemon's event loop, usually after its
        commit; once more ``AGAIN`` seconds later for one announced before it)."""
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()
        if again:
            asyncio.get_running_loop().call_later(AGAIN, lambda: self.changed(again=False))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        seen = -1
        try:
            while True:
                if self.version != seen:
                    seen = self.version
                    await resp.write(f"event: alarms\ndata: {json.dumps({'version': seen})}\n\n".encode())
                else:
                    await resp.write(f"event: ping\ndata: {time.time():.3f}\n\n".encode())
                waiter = self._changed
                try:
                    await asyncio.wait_for(waiter.wait(), PING)
                except TimeoutError:
                    pass
        except ConnectionResetError:  # the console went away: nothing to answer
            return resp
