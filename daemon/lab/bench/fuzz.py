"""Coverage-guided fuzzing of the two decoders that read untrusted bytes off MQTT.

    python -m plantwatch.daemon.lab.bench.fuzz                       # both targets, 10^6 inputs each
    python -m plantwatch.daemon.lab.bench.fuzz wire --runs 200000    # one target
    python -m plantwatch.daemon.lab.bench.fuzz --json out.json

Targets (each in a subprocess of its own: libFuzzer ends the process it runs in):

* ``wire``: a wire-format message through ``daemon.validate.validate`` (``connectors/wire.py``'s
  decoder and the registry checks) for one of three topics (fixed instruments, a robot, transfer
  declarations; the input's first byte chooses), against a small site.
* ``sparkplug``: a Sparkplug B message through ``SparkplugIngest.handle`` (the protobuf decoder,
  the node/device sessions with their births, aliases and sequence numbers, the metric → sensor
  mapping) for one of eight topics of one node and one device; the sessions carry over from one
  input to the next, as on a live broker.

A finding is any exception that escapes the target, or a result that breaks what the daemon
relies on: a reading accepted with a non-finite time or value, outside its sensor's range or with
an unknown column; arrays of different lengths; a dead letter with an undocumented reason or with
text the database cannot store (NUL, lone surrogates). Findings are grouped by kind and place,
counted, and kept with the first input that caused them (hex) — the run goes on after one.
Engine: atheris (libFuzzer) with the plantwatch modules instrumented; seeds are valid messages.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

TARGETS = ("wire", "sparkplug")
NOW = 1_790_000_000.0

#: reason codes the daemon documents for dead letters (README, docs/sparkplug.md)
WIRE_REASONS = {"oversized", "invalid_utf8", "malformed_json", "bad_envelope", "bad_version", "bad_topic",
                "collector_mismatch", "wrong_type", "non_finite", "unknown_sensor", "wrong_kind", "wrong_collector",
                "missing_position", "bad_area", "duplicate_key", "bad_time", "future_time", "too_old", "out_of_range",
                "bad_transfer"}

SITE = """site:
  id: fz
  areas:
    - {id: a1, bounds: [0, 0, 100, 100], collector: edge1}
sensors:
  - {id: G0, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a1}
  - {id: G1, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a1}
  - {id: P0, kind: pressure, unit: bar, range: [-1, 40], area: a1}
  - {id: TK1, kind: level, unit: m3, range: [0, 1000], area: a1}
  - {id: R0, kind: robot, quantity: H2S, unit: ppm, range: [0, 100], area: a1, collector: robot1}
  - {id: S0, kind: gas, quantity: H2S, unit: ppm, range: [0, 100], area: a1}
  - {id: S1, kind: gas, quantity: CH4, unit: '%LEL', range: [0, 100], area: a1}
sparkplug:
  groups: [plant]
  by_name: true
  metrics:
    - {source: plant/node1, metric: Gas/H2S, sensor: S0}
    - {source: plant/node1/dev1, metric: Gas/CH4, sensor: S1}
detectors:
  - {id: stale, type: stale, select: {areas: [a1]}, params: {timeout: 60}}
"""

WIRE_TOPICS = ("pw/fz/edge1/readings", "pw/fz/robot1/robot", "pw/fz/transfers/declared")
SP_TOPICS = tuple(f"spBv1.0/plant/{t}" for t in ("NBIRTH/node1", "NDATA/node1", "DBIRTH/node1/dev1", "DDATA/node1/dev1",
                                                   "NDEATH/node1", "DDEATH/node1/dev1", "NCMD/node1", "STATE/node1"))


class Finding(Exception):
    pass


def _storable(text: str, what: str) -> None:
    from plantwatch.connectors import storable

    why = storable.text_problem(text, 1_000_000)
    if why is not None:
        raise Finding(f"{what} {why}")


def _check_validated(v, reg, reasons: set[str] | None) -> None:
    import numpy as np

    n = len(v.col)
    if not (len(v.t) == len(v.value) == len(v.quality) == n):
        raise Finding("accepted arrays of different lengths")
    if n:
        if (v.col < 0).any() or (v.col >= len(reg.db_id)).any():
            raise Finding("accepted a reading with an unknown sensor column")
        if not (np.isfinite(v.t).all() and np.isfinite(v.value).all()):
            raise Finding("accepted a non-finite time or value")
        if ((v.value < reg.range_min[v.col]) | (v.value > reg.range_max[v.col])).any():
            raise Finding("accepted a value outside its sensor's range")
        if not np.isin(v.quality, (0, 1, 2)).all():
            raise Finding("accepted an unknown quality code")
    if v.x is not None and (len(v.x) != n or not (np.isfinite(v.x).all() and np.isfinite(v.y).all())):
        raise Finding("accepted a robot reading without a finite position")
    for dl in v.rejected:
        if reasons is not None and dl.reason not in reasons:
            raise Finding(f"undocumented dead-letter reason {dl.reason!r}")
        _storable(dl.detail, "dead-letter detail")
        _storable(dl.topic, "dead-letter topic")
        if dl.collector is not None:
            _storable(dl.collector, "dead-letter collector")
        if not isinstance(dl.payload, bytes):
            raise Finding("dead-letter payload is not bytes")


def _setup(target: str):
    """Import (instrumented, under atheris) and build the target's one-input function."""
    from plantwatch.daemon.config.model import load_config_text

    cfg = load_config_text(SITE.replace("sparkplug:", "mqtt: {topic_prefix: pw}\nsparkplug:"), "fuzz-site.yaml")
    from plantwatch.daemon.ingest.validate import Registry

    reg = Registry.build(cfg, {s.id: i + 1 for i, s in enumerate(cfg.sensors)})
    if target == "wire":
        from plantwatch.daemon.ingest.validate import validate

        def one(data: bytes) -> None:
            topic = WIRE_TOPICS[data[0] % len(WIRE_TOPICS)] if data else WIRE_TOPICS[0]
            v = validate(topic, data[1:], cfg, reg, NOW)
            _check_validated(v, reg, WIRE_REASONS)
            if v.transfer is not None and not (math.isfinite(v.transfer.quantity) and v.transfer.end >= v.transfer.start):
                raise Finding("accepted a transfer with a non-finite quantity or an end before its start")
        return one
    from prometheus_client import CollectorRegistry

    from plantwatch.daemon.ingest.sparkplug import SparkplugIngest

    state = {"ingest": SparkplugIngest(cfg, reg, CollectorRegistry()), "n": 0}

    def one_sp(data: bytes) -> None:
        state["n"] += 1
        if state["n"] % 5000 == 0:  # fresh sessions now and then, so births are seen again
            state["ingest"] = SparkplugIngest(cfg, reg, CollectorRegistry())
        topic = SP_TOPICS[data[0] % len(SP_TOPICS)] if data else SP_TOPICS[0]
        h = state["ingest"].handle(topic, data[1:], NOW)
        _check_validated(h.validated, reg, None)
        if len(h.stale) and ((h.stale < 0).any() or (h.stale >= len(reg.db_id)).any()):
            raise Finding("a DEATH made an unknown sensor column stale")
    return one_sp


def seeds(target: str) -> list[bytes]:
    if target == "wire":
        import msgspec

        good = {"v": 1, "collector": "edge1", "seq": 3, "sent": NOW,
                "readings": [{"sensor": "G0", "time": NOW - 5, "value": 1.5},
                             {"sensor": "P0", "time": "2026-09-21T10:00:00+00:00", "value": 3.0, "quality": "uncertain"}]}
        robot = {"v": 1, "collector": "robot1", "seq": 0, "readings": [
            {"sensor": "R0", "time": NOW - 1, "value": 0.2, "x": 10.5, "y": 20.0, "area": "a1"}]}
        transfer = {"tank": "TK1", "start": NOW - 60, "end": NOW, "quantity": 12.5, "unit": "m3", "by": "ann", "reference": "wo-1"}
        return [b"\x00" + msgspec.json.encode(good), b"\x01" + msgspec.json.encode(robot),
                b"\x02" + msgspec.json.encode(transfer),
                b"\x00" + json.dumps(good | {"readings": good["readings"] + [{"sensor": "G1", "time": NOW, "value": float("nan")}]}).encode(),
                b'\x00{"v":1,"collector":"edge1","seq":1,"readings":[[[]]],"sent":1}']
    from plantwatch.connectors.sparkplug import sparkplug_b_pb2 as pb

    def payload(seq: int, metrics: list[dict]) -> bytes:
        p = pb.Payload(timestamp=int(NOW * 1000), seq=seq)
        for m in metrics:
            p.metrics.add(**m)
        return p.SerializeToString()

    ts = int((NOW - 1) * 1000)
    nbirth = payload(0, [{"name": "bdSeq", "datatype": 8, "long_value": 0, "timestamp": ts},
                         {"name": "Gas/H2S", "alias": 1, "datatype": 9, "float_value": 1.5, "timestamp": ts},
                         {"name": "S1", "alias": 2, "datatype": 3, "int_value": 4, "timestamp": ts}])
    ndata = payload(1, [{"alias": 1, "datatype": 9, "float_value": 2.5, "timestamp": ts}])
    dbirth = payload(2, [{"name": "Gas/CH4", "alias": 3, "datatype": 10, "double_value": 7.0, "timestamp": ts}])
    ddata = payload(3, [{"alias": 3, "datatype": 10, "double_value": 8.0, "timestamp": ts}])
    ndeath = payload(0, [{"name": "bdSeq", "datatype": 8, "long_value": 0}])
    return [b"\x00" + nbirth, b"\x01" + ndata, b"\x02" + dbirth, b"\x03" + ddata, b"\x04" + ndeath, b"\x05" + ddata]


# --- worker: one target under libFuzzer -----------------------------------------------------------
def worker(target: str, runs: int, seed: int, findings_path: str, corpus: str, max_len: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["plantwatch"]):
        one = _setup(target)
    found: dict[str, dict] = {}
    count = {"n": 0}

    def record(kind: str, where: str, data: bytes) -> None:
        key = f"{kind} @ {where}"
        f = found.setdefault(key, {"kind": kind, "where": where, "count": 0, "first_input_hex": data[:512].hex()})
        f["count"] += 1
        if f["count"] == 1 or f["count"] % 1000 == 0:
            Path(findings_path).write_text(json.dumps(list(found.values()), indent=1))

    def test_one(data: bytes) -> None:
        count["n"] += 1
        try:
            one(data)
        except Finding as e:
            record(f"invariant: {e}", target, data)
        except Exception as e:  # noqa: BLE001 - every escaping exception is a finding, recorded and counted
            tb = traceback.extract_tb(e.__traceback__)
            here = next((f for f in reversed(tb) if "plantwatch" in f.filename or "/daemon/" in f.filename
                         or "/connectors/" in f.filename), tb[-1])
            record(f"{type(e).__name__}: {str(e)[:200]}", f"{Path(here.filename).name}:{here.lineno} ({here.name})", data)

    Path(findings_path).write_text("[]")
    atheris.Setup(["fuzz", f"-runs={runs}", f"-seed={seed}", f"-max_len={max_len}", "-print_final_stats=1",
                   "-rss_limit_mb=4096", corpus], test_one)
    atheris.Fuzz()


def run_target(target: str, runs: int, seed: int, workdir: Path, max_len: int) -> dict:
    corpus = workdir / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds(target)):
        (corpus / f"seed{i}").write_bytes(s)
    findings = workdir / f"findings-{target}.json"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "plantwatch.daemon.lab.bench.fuzz", "--worker", target, "--runs", str(runs),
                        "--seed", str(seed), "--findings", str(findings), "--corpus", str(corpus), "--max-len", str(max_len)],
                       capture_output=True, text=True)
    el = time.monotonic() - t0
    out = p.stdout + p.stderr
    m = re.search(r"Done (\d+) runs in (\d+) second", out)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", out)
    execs = int(m.group(1)) if m else None
    return {"target": target, "inputs": execs, "seconds": el, "exit_code": p.returncode,
            "coverage": {"edges": int(cov[-1][0]), "features": int(cov[-1][1])} if cov else None,
            "corpus_files": len(list(corpus.iterdir())),
            "findings": json.loads(findings.read_text()) if findings.exists() else None,
            "log_tail": out[-1500:] if execs is None else ""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plantwatch.daemon.lab.bench.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", metavar="TARGET", help=f"{' and/or '.join(TARGETS)} (default both)")
    ap.add_argument("--runs", type=int, default=1_000_000, help="inputs per target (default 10^6)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=4096, help="longest input (bytes)")
    ap.add_argument("--json", metavar="FILE", help="write the counts and findings as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--findings", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bad = [t for t in args.targets if t not in TARGETS]
    if bad:
        ap.error(f"unknown target(s) {', '.join(bad)}; known: {', '.join(TARGETS)}")
    if args.worker:
        worker(args.worker, args.runs, args.seed, args.findings, args.corpus, args.max_len)
        return 0
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install -c deploy/dev/constraints.txt -e '.[fuzz]'", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="plantwatch-fuzz-"))
    results = []
    for t in args.targets or TARGETS:
        r = run_target(t, args.runs, args.seed, workdir, args.max_len)
        results.append(r)
        n = len(r["findings"] or [])
        print(f"{t}: {r['inputs'] if r['inputs'] is not None else '?'} inputs in {r['seconds']:.0f} s, "
              f"coverage {r['coverage']}, {n} distinct finding(s)" + (f"\n{r['log_tail']}" if r["log_tail"] else ""))
        for f in r["findings"] or []:
            print(f"  {f['count']:>8} × {f['kind']}  at {f['where']}\n           first input: {f['first_input_hex'][:160]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "seed": args.seed, "results": results,
                                               "python": sys.version.split()[0], "pid": os.getpid()}, indent=1))
    ok = all(r["inputs"] is not None for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
