"""``plantwatch failover``: the same as ``plantwatch faults --cluster`` (three instances, see cluster.py)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from plantwatch.daemon.lab.faults import build_parser, run

    args = build_parser("plantwatch failover").parse_args(["--cluster", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
