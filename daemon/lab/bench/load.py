"""Simulated collectors: a lean publisher process (paho, QoS 1) speaking wire format v1.

Sensors are split over collectors; each collector sends its sensors' readings in messages of
``per_message`` readings on ``{prefix}/{site}/{collector}/readings``. Every reading is stamped
with the wall-clock time at which its message is built, so ``now - reading.time`` on the far
side is publish → there latency (one machine, one clock). Runs in its own process so that the
publisher's CPU is visible and the GIL of the daemon or of the benchmark is not shared.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field

import msgspec
import numpy as np

from plantwatch.daemon.lab.bench.env import SENSORS_PER_COLLECTOR


class WireReading(msgspec.Struct):
    """One reading of the wire format (connectors/wire.py), for encoding load fast with msgspec."""
    sensor: str
    time: float
    value: float


class WireBatch(msgspec.Struct):
    """One batch of the wire format, for encoding load fast with msgspec."""
    v: int
    collector: str
    seq: int
    readings: list[WireReading]
    sent: float


@dataclass
class LoadSpec:
    host: str
    port: int
    prefix: str
    site: str
    n_sensors: int
    per_message: int = 100
    sensors_per_collector: int = SENSORS_PER_COLLECTOR  # the site config's (env.site_yaml)
    #: stop after this many readings (None: run for ``duration``)
    total: int | None = None
    duration: float | None = None
    #: readings per second to aim at (None: as fast as the broker takes them)
    rate: float | None = None
    #: limit exceedances to inject per second (values 7.0 on gas sensors, high limit 5)
    inject_per_s: float = 0.0
    inject_pool: int = 50
    seed: int = 1
    client_id: str = "bench-pub"
    #: only these collectors (partition tests); None: all
    collectors: list[int] | None = None
    seq0: int = 0
    #: keep at most this many readings published but not yet stored (a closed loop: the broker
    #: does not pile up a backlog that it then persists every second); None: open loop
    max_ahead: int | None = None
    extra: dict = field(default_factory=dict)


def collectors_of(n_sensors: int, per_collector: int) -> list[tuple[str, range]]:
    out = []
    for c, start in enumerate(range(0, n_sensors, per_collector)):
        out.append((f"edge{c:03d}", range(start, min(n_sensors, start + per_collector))))
    return out


def _run(spec: LoadSpec, q, progress=None) -> None:
    import paho.mqtt.client as mqtt

    from plantwatch.daemon.lab.bench.env import _tag, base_value

    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=spec.client_id, clean_session=True)
    cl.max_inflight_messages_set(1000)
    cl.max_queued_messages_set(0)
    cl.connect(spec.host, spec.port, keepalive=60)
    cl.loop_start()
    cols = collectors_of(spec.n_sensors, spec.sensors_per_collector)
    if spec.collectors is not None:
        cols = [cols[i] for i in spec.collectors]
    # messages: (topic, collector, tags, base values) per chunk of per_message sensors
    msgs = []
    for cid, rng_ in cols:
        topic = f"{spec.prefix}/{spec.site}/{cid}/readings"
        idx = list(rng_)
        for s in range(0, len(idx), spec.per_message):
            part = idx[s:s + spec.per_message]
            msgs.append((topic, cid, [_tag(i) for i in part], np.array([base_value(i) for i in part]),
                         [i for i in part if i % 5 < 3]))
    rng = np.random.default_rng(spec.seed)
    gas_pool = [i for i in range(min(spec.n_sensors, spec.inject_pool * 5)) if i % 5 < 3][:spec.inject_pool]
    inj_at: dict[int, float] = {}  # sensor index -> value to send at its next reading
    seq = {cid: spec.seq0 for cid, _ in cols}
    last_t = 0.0
    enc = msgspec.json.Encoder()
    sent = 0
    injected = 0
    infos = []
    t_start = time.time()
    next_inject = t_start
    inj_k = 0
    noise = rng.normal(0.0, 0.02, size=(4096, spec.per_message))
    k = 0
    done = False
    while not done:
        for topic, cid, tags, base, _gas in msgs:
            if progress is not None and spec.max_ahead is not None:
                while sent - progress.value > spec.max_ahead:
                    time.sleep(0.002)
            now = time.time()
            if spec.rate:
                ahead = sent / spec.rate - (now - t_start)
                if ahead > 0:
                    time.sleep(ahead)
                    now = time.time()
            if spec.inject_per_s and now >= next_inject and gas_pool:
                # next sensor of the pool goes high at its next reading (and back to normal after)
                s = gas_pool[inj_k % len(gas_pool)]
                inj_k += 1
                inj_at[s] = 7.0
                next_inject += 1.0 / spec.inject_per_s
            t = max(now, last_t + 2e-6)
            last_t = t
            vals = (base + noise[k % 4096, :len(base)]).tolist()
            k += 1
            if inj_at:
                for j, tag in enumerate(tags):
                    i = int(tag[1:])
                    if i in inj_at and tag[0] == "G":
                        vals[j] = inj_at.pop(i)
                        injected += 1
            body = enc.encode(WireBatch(1, cid, seq[cid], [WireReading(tg, t, v) for tg, v in zip(tags, vals)], t))
            seq[cid] += 1
            info = cl.publish(topic, body, qos=1)
            infos.append(info)
            if len(infos) >= 500:
                infos[0].wait_for_publish(30)
                infos = infos[-100:]
            sent += len(tags)
            if spec.total is not None and sent >= spec.total:
                done = True
                break
            if spec.duration is not None and now - t_start >= spec.duration:
                done = True
                break
    for info in infos:
        info.wait_for_publish(60)
    t_end = time.time()
    cl.loop_stop()
    cl.disconnect()
    q.put({"sent": sent, "t_start": t_start, "t_end": t_end, "injected": injected,
           "seq_end": max(seq.values()) if seq else 0})


class Publisher:
    def __init__(self, spec: LoadSpec):
        ctx = mp.get_context("spawn")
        self.q = ctx.Queue()
        #: readings stored so far, set by the benchmark (closed loop, ``spec.max_ahead``)
        self.progress = ctx.Value("d", 0.0, lock=False)
        self.proc = ctx.Process(target=_run, args=(spec, self.q, self.progress), daemon=True)

    def start(self) -> "Publisher":
        self.proc.start()
        return self

    def result(self, timeout: float | None = None) -> dict:
        r = self.q.get(timeout=timeout)
        self.proc.join(10)
        return r

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
