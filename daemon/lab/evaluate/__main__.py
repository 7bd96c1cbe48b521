"""``python -m plantwatch.daemon.lab.evaluate nab|skab|tep --data DIR [--out DIR] [--config JSON]``."""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

BENCHMARKS = ("nab", "skab", "tep")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in BENCHMARKS:
        print(f"usage: python -m plantwatch.daemon.lab.evaluate {{{','.join(BENCHMARKS)}}} --data DIR [--out DIR]",
              file=sys.stderr)
        return 2
    return importlib.import_module(f"plantwatch.daemon.lab.evaluate.{args[0]}").main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
