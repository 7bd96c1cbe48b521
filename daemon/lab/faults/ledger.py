"""Simulated collectors that keep a ledger of every reading they publish.

A process of its own (so that its CPU is not the orchestrator's, which also runs the TCP proxies)
plays ``collectors`` edge collectors, each with its own MQTT client (paho, QoS 1, reconnecting on
its own like a collector does) and ``per_collector`` sensors. Every ``period`` seconds (a *tick*)
each collector publishes one wire-format batch with one reading per sensor, all stamped with the
tick's scheduled time ``t0 + k * period``: a reading is identified by (sensor, tick), which is
(sensor, time) in the database, and the ledger records per tick when it was published and the
phase (fault) the run was in, and per message whether the broker acknowledged it (PUBACK).

Limit crossings are injected on request (:meth:`LedgerPublisher.inject`): a sensor reads ``value``
for ``ticks`` ticks, then its normal value again; the ledger records each one.
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from plantwatch.daemon.lab.bench.env import _tag, base_value
from plantwatch.daemon.lab.bench.load import WireBatch, WireReading  # the wire format, encoded fast


@dataclass
class LedgerSpec:
    host: str
    port: int
    prefix: str
    site: str
    collectors: int
    per_collector: int
    rate: float  # readings per second over all collectors
    out: str  # where the ledger (.npz) is written
    client_prefix: str = "faults-edge"
    seed: int = 1

    @property
    def n_sensors(self) -> int:
        return self.collectors * self.per_collector

    @property
    def period(self) -> float:
        return self.n_sensors / self.rate


def collector_id(c: int) -> str:
    return f"edge{c:03d}"


@dataclass
class Ledger:
    """What the collectors published. Keys of readings: ``tick * n_sensors + sensor index``."""

    t0: float
    period: float
    collectors: int
    per_collector: int
    tick_pub: np.ndarray  # wall time each tick's messages were handed to the clients
    tick_phase: np.ndarray  # phase number during which each tick was published
    acked: np.ndarray  # (ticks, collectors) bool: the broker acknowledged the message
    inj_sensor: np.ndarray  # injected crossings: sensor index, first and last tick, value
    inj_k0: np.ndarray
    inj_k1: np.ndarray
    inj_value: np.ndarray

    @property
    def n_sensors(self) -> int:
        return self.collectors * self.per_collector

    @property
    def ticks(self) -> int:
        return len(self.tick_pub)

    def time_of(self, k: np.ndarray | int) -> np.ndarray | float:
        return np.round(self.t0 + np.asarray(k) * self.period, 6)

    def tick_of(self, t: np.ndarray) -> np.ndarray:
        return np.rint((t - self.t0) / self.period).astype(np.int64)

    def save(self, path: str | Path) -> None:
        np.savez(path, t0=self.t0, period=self.period, collectors=self.collectors, per_collector=self.per_collector,
                 tick_pub=self.tick_pub, tick_phase=self.tick_phase, acked=self.acked, inj_sensor=self.inj_sensor,
                 inj_k0=self.inj_k0, inj_k1=self.inj_k1, inj_value=self.inj_value)

    @classmethod
    def load(cls, path: str | Path) -> "Ledger":
        z = np.load(path)
        return cls(float(z["t0"]), float(z["period"]), int(z["collectors"]), int(z["per_collector"]),
                   z["tick_pub"], z["tick_phase"], z["acked"], z["inj_sensor"], z["inj_k0"], z["inj_k1"], z["inj_value"])


def _run(spec: LedgerSpec, phase, stop, cmds, ready, results) -> None:  # noqa: PLR0915 - one loop
    import paho.mqtt.client as mqtt

    clients = []
    for c in range(spec.collectors):
        cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{spec.client_prefix}-{c}", clean_session=True)
        cl.max_inflight_messages_set(1000)
        cl.max_queued_messages_set(0)  # unbounded: a collector keeps what the broker has not acknowledged
        cl.reconnect_delay_set(0.2, 1.0)
        cl.connect_async(spec.host, spec.port, keepalive=30)
        cl.loop_start()
        clients.append(cl)
    deadline = time.monotonic() + 30
    while not all(cl.is_connected() for cl in clients) and time.monotonic() < deadline:
        time.sleep(0.02)
    topics = [f"{spec.prefix}/{spec.site}/{collector_id(c)}/readings" for c in range(spec.collectors)]
    per = spec.per_collector
    tags = [[_tag(c * per + j) for j in range(per)] for c in range(spec.collectors)]
    base = [np.array([base_value(c * per + j) for j in range(per)]) for c in range(spec.collectors)]
    noise = np.random.default_rng(spec.seed).normal(0.0, 0.02, size=(1024, per))
    enc = msgspec.json.Encoder()
    period = spec.period
    tick_pub: list[float] = []
    tick_phase: list[int] = []
    infos: list = []
    injections: list[tuple[int, int, int, float]] = []
    active: dict[int, list] = {}  # sensor -> [ticks left, value, record index]
    ready.set()
    t0 = round(time.time() + 0.05, 3)
    k = 0
    while not stop.is_set():
        target = t0 + k * period
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
        while True:
            try:
                cmd = cmds.get_nowait()
            except queue.Empty:
                break
            _, sensor, ticks, value = cmd
            active[sensor] = [ticks, value, len(injections)]
            injections.append((sensor, k, k + ticks - 1, value))
        t_read = round(target, 6)
        ph = phase.value
        for c in range(spec.collectors):
            vals = (base[c] + noise[k % 1024]).tolist()
            for s, st in list(active.items()):
                if s // per == c:
                    vals[s % per] = st[1]
                    st[0] -= 1
                    if st[0] <= 0:
                        del active[s]
            body = enc.encode(WireBatch(1, collector_id(c), k, [WireReading(tg, t_read, v) for tg, v in zip(tags[c], vals)], time.time()))
            info = clients[c].publish(topics[c], body, qos=1)
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                info.rc = mqtt.MQTT_ERR_SUCCESS  # queued: paho sends it when the client has reconnected
            infos.append(info)
        tick_pub.append(time.time())
        tick_phase.append(ph)
        k += 1
    t_end = time.time()
    # a collector keeps what the broker has not acknowledged: give the clients time to deliver it
    deadline = time.monotonic() + 120
    for info in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not info.is_published():
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError):  # paho: not queued / not connected; counted as unacknowledged
                pass
    acked = np.array([i.is_published() for i in infos], dtype=bool).reshape(-1, spec.collectors) if infos else \
        np.zeros((0, spec.collectors), dtype=bool)
    for cl in clients:
        cl.loop_stop()
        cl.disconnect()
    inj = np.array(injections, dtype=np.float64).reshape(-1, 4)
    ledger = Ledger(t0, period, spec.collectors, per, np.array(tick_pub), np.array(tick_phase, dtype=np.int16), acked,
                    inj[:, 0].astype(np.int64), inj[:, 1].astype(np.int64), inj[:, 2].astype(np.int64), inj[:, 3])
    ledger.save(spec.out)
    results.put({"ticks": k, "sent": k * spec.n_sensors, "t_start": t0, "t_end": t_end,
                 "acked": int(acked.sum()) * per, "late_max": float(max((p - (t0 + i * period) for i, p in enumerate(tick_pub)),
                                                                         default=0.0))})


class LedgerPublisher:
    """The collectors' process. ``phase`` labels what is published from now on."""

    def __init__(self, spec: LedgerSpec):
        ctx = mp.get_context("spawn")
        self.spec = spec
        self._phase = ctx.Value("i", 0, lock=False)
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._cmds = ctx.Queue()
        self._results = ctx.Queue()
        self.proc = ctx.Process(target=_run, args=(spec, self._phase, self._stop, self._cmds, self._ready, self._results),
                                daemon=True)

    def start(self, timeout: float = 60) -> "LedgerPublisher":
        self.proc.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the simulated collectors did not start")
        return self

    def set_phase(self, p: int) -> None:
        self._phase.value = p

    def inject(self, sensor: int, *, ticks: int, value: float) -> None:
        """From the next tick on, ``sensor`` reads ``value`` for ``ticks`` ticks."""
        self._cmds.put(("inject", sensor, ticks, value))

    def finish(self, timeout: float = 300) -> tuple[dict, Ledger]:
        """Stop publishing, let the clients deliver what is unacknowledged; the summary and the ledger."""
        self._stop.set()
        res = self._results.get(timeout=timeout)
        self.proc.join(30)
        return res, Ledger.load(self.spec.out)

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
