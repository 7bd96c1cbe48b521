"""``plantwatch eval nab|skab|tep --data DIR [--out DIR] [--config JSON]``."""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

BENCHMARKS = ("nab", "skab", "tep")

USAGE = f"usage: plantwatch eval {{{','.join(BENCHMARKS)}}} --data DIR [--out DIR] [--config JSON]"
HELP = f"""{USAGE}

Evaluate plantwatch's detectors on a public anomaly-detection benchmark (docs/evaluation.md).

benchmarks:
  nab    Numenta Anomaly Benchmark: the NAB score of the detectors
  skab   Skoltech Anomaly Benchmark: valve and pump faults on a water loop
  tep    Tennessee Eastman Process: faults of a simulated chemical plant

plantwatch eval BENCHMARK --help shows each one's options.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(HELP)
        return 0
    if not args or args[0] not in BENCHMARKS:
        print(USAGE + "\n(plantwatch eval --help)", file=sys.stderr)
        return 2
    return importlib.import_module(f"plantwatch.daemon.lab.evaluate.{args[0]}").main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
