"""The faults of one daemon instance and its services, each with a limit crossing injected while
it lasts. Every fault function does the fault, injects the crossing, ends the fault (restart,
start, SIGCONT, resume) and returns what happened; the runner then times the recovery."""
from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from plantwatch.daemon.lab.bench.env import Daemon

from plantwatch.daemon.lab.faults.rig import Rig, signal_tree, wait_exit


@dataclass
class Event:
    fault: str
    rep: int
    t_fault: float  # the fault began
    t_restored: float  # the fault ended (service back, process restarted, stall lifted)
    t_recovered: float | None = None  # the store caught up again
    crossings: list[int] = field(default_factory=list)  # sensors injected
    notes: list[str] = field(default_factory=list)
    phase: int = 0

    @property
    def recovery(self) -> float | None:
        return None if self.t_recovered is None else max(0.0, self.t_recovered - self.t_restored)

    def as_dict(self) -> dict:
        return {"fault": self.fault, "phase": self.phase, "rep": self.rep, "t_fault": self.t_fault, "t_restored": self.t_restored,
                "t_recovered": self.t_recovered, "recovery": self.recovery, "outage": self.t_restored - self.t_fault,
                "crossings": self.crossings, "notes": self.notes}


@dataclass
class Single:
    """The one daemon under test (restarted by the faults that stop it)."""

    rig: Rig
    d: Daemon
    down: float = 1.0  # seconds a killed daemon stays down (a service manager's restart delay)
    grace: float = 60.0  # seconds a SIGTERM may take before the run calls it a hang


FaultFn = Callable[[Single, int, float], Awaitable[Event]]


def _ev(name: str, rep: int) -> Event:
    return Event(name, rep, time.time(), 0.0)


async def kill9(s: Single, rep: int, _: float) -> Event:
    ev = _ev("kill9", rep)
    await asyncio.to_thread(s.d.kill)
    ev.crossings.append(s.rig.inject())
    await asyncio.sleep(s.down)
    s.d.start()
    ev.t_restored = time.time()
    return ev


async def _broker(s: Single, rep: int, hard: bool, name: str) -> Event:
    ev = _ev(name, rep)
    await asyncio.to_thread(s.rig.svc.broker.halt, hard=hard)
    ev.crossings.append(s.rig.inject())
    await asyncio.sleep(1.0)
    await asyncio.to_thread(s.rig.svc.broker.start)
    ev.t_restored = time.time()
    return ev


async def broker_restart(s: Single, rep: int, _: float) -> Event:
    return await _broker(s, rep, False, "broker-restart")


async def broker_kill(s: Single, rep: int, _: float) -> Event:
    return await _broker(s, rep, True, "broker-kill")


async def db_stop(s: Single, rep: int, seconds: float) -> Event:
    ev = _ev("db-stop", rep)
    await asyncio.to_thread(s.rig.svc.pg.halt)
    await asyncio.sleep(seconds / 3)
    ev.crossings.append(s.rig.inject())
    await asyncio.sleep(ev.t_fault + seconds - time.time())
    await asyncio.to_thread(s.rig.svc.pg.start)
    ev.t_restored = time.time()
    return ev


async def db_freeze(s: Single, rep: int, seconds: float) -> Event:
    ev = _ev("db-freeze", rep)
    pid = s.rig.svc.pg.pid
    if pid is None:
        ev.notes.append("the database was not running")
        ev.t_restored = time.time()
        return ev
    n = signal_tree(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds / 3)
        ev.crossings.append(s.rig.inject())
        await asyncio.sleep(ev.t_fault + seconds - time.time())
    finally:
        signal_tree(pid, signal.SIGCONT)
    ev.notes.append(f"{n} database processes stopped")
    ev.t_restored = time.time()
    return ev


async def cut_copy(s: Single, rep: int, wait: float) -> Event:
    ev = _ev("cut-copy", rep)
    ev.crossings.append(s.rig.inject())  # the next unit carries it: the cut may well hit its COPY
    armed = s.rig.db_proxy.arm_cut()
    try:
        size = await asyncio.wait_for(armed, max(wait, 30.0))
        ev.notes.append(f"cut after {size:,} bytes of a COPY")
    except asyncio.TimeoutError:
        s.rig.db_proxy.disarm()
        ev.notes.append("no COPY went through the proxy: nothing was cut")
    ev.t_fault = ev.t_restored = time.time()  # the proxy takes new connections at once
    return ev


async def net_stall(s: Single, rep: int, seconds: float) -> Event:
    ev = _ev("net-stall", rep)
    s.rig.broker_proxy.stall()
    try:
        await asyncio.sleep(seconds / 3)
        ev.crossings.append(s.rig.inject())
        await asyncio.sleep(ev.t_fault + seconds - time.time())
    finally:
        s.rig.broker_proxy.resume()
    ev.t_restored = time.time()
    return ev


async def sigterm(s: Single, rep: int, _: float) -> Event:
    ev = _ev("sigterm", rep)
    s.d.proc.send_signal(signal.SIGTERM)
    ev.crossings.append(s.rig.inject())
    rc = await asyncio.to_thread(wait_exit, s.d, s.grace)
    if rc is None:
        ev.notes.append(f"still running {s.grace:.0f} s after SIGTERM: killed")
        await asyncio.to_thread(s.d.kill)
    else:
        ev.notes.append(f"exit code {rc} after {time.time() - ev.t_fault:.1f} s")
    await asyncio.sleep(s.down)
    s.d.start()
    ev.t_restored = time.time()
    return ev


@dataclass(frozen=True)
class Fault:
    name: str
    label: str
    fn: FaultFn
    reps: int = 1
    seconds: float = 0.0  # outage length (for those that have one)


def catalogue(*, quick: bool, outage: float | None, kills: int | None) -> list[Fault]:
    """The faults in the order they run; ``outage`` caps every outage, ``quick`` shortens all."""
    def dur(full: float) -> float:
        d = 5.0 if quick else full
        return min(d, outage) if outage else d

    k = kills if kills is not None else (1 if quick else 5)
    return [
        Fault("kill9", f"daemon kill -9 ×{k}", kill9, reps=k),
        Fault("broker-restart", f"broker restart ×{1 if quick else 3}", broker_restart, reps=1 if quick else 3),
        Fault("broker-kill", "broker kill -9", broker_kill),
        Fault("db-stop", f"database stopped {dur(60):g} s", db_stop, seconds=dur(60)),
        Fault("db-freeze", f"database frozen {dur(30):g} s (SIGSTOP)", db_freeze, seconds=dur(30)),
        Fault("cut-copy", "connection cut mid-COPY", cut_copy, seconds=30.0),
        Fault("net-stall", f"broker↔daemon stalled {dur(30):g} s", net_stall, seconds=dur(30)),
        Fault("sigterm", "daemon SIGTERM and restart", sigterm),
    ]
