"""``plantwatch inventory --config site.yaml``: each tank's balance as configured, and the smallest
loss rate it can find.

For every tank watched by an ``inventory_balance`` detector: capacity and unit, whether it is
temperature-compensated, the residual's uncertainty before any noise is learned (the instrument's
``accuracy``; the noise learned online adds to it) and the minimum detectable loss rate within
6 h and within the reconciliation period (docs/security.md). A tank with ``accuracy`` 0 is listed
as not assessable: its uncertainty is only known once the daemon has learned its noise.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from plantwatch.detectors.inventory_balance import minimum_detectable_rate

from plantwatch.daemon.config.model import ConfigError, load_config
from plantwatch.daemon.config.inventory import tank_scale
from plantwatch.daemon.detection import Watch


def report(cfg, horizon: float) -> list[str]:
    lines = [f"{'tank':<16} {'detector':<16} {'capacity':>12} {'compensated':>11} {'sigma':>10}"
             f" {'min loss/h in ' + format(horizon / 3600, 'g') + ' h':>18} {'min loss/h before re-basing':>28}"]
    found = False
    for d in cfg.detectors:
        if d.type != "inventory_balance" or not d.enabled:
            continue
        cols = cfg.watched(d)
        w = Watch(d, cols, cfg)
        det = w.detector
        p = det.params
        for j, c in enumerate(cols):
            s = cfg.sensors[c]
            if s.kind != "level":
                continue
            found = True
            sc = tank_scale(cfg, s)
            unit = sc.quantity_unit
            cap = f"{sc.capacity:g} {unit}" if sc.capacity is not None else f"{s.range[1]:g} {s.unit}"
            comp = "yes" if det.tcol[j] >= 0 and det.beta[j] > 0 else "no"
            sigma = float(det.sigma_of(np.array([j]))[0])
            if det.acc[j] <= 0:
                lines.append(f"{s.id:<16} {d.id:<16} {cap:>12} {comp:>11} {'unknown':>10} {'(set accuracy)':>18} {'':>28}")
                continue
            mdl = minimum_detectable_rate(sigma, p.bucket, p.k, p.h, horizon)
            slow = minimum_detectable_rate(sigma, p.bucket, p.k, p.h, p.reconcile)
            lines.append(f"{s.id:<16} {d.id:<16} {cap:>12} {comp:>11} {sigma:>10.4g} {mdl:>13.4g} {unit:<4}"
                         f" {slow:>23.4g} {unit:<4}")
    if not found:
        lines.append("(no tank is watched by an inventory_balance detector)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="plantwatch inventory", description=__doc__.split("\n\n")[0].replace("``", ""))
    ap.add_argument("--config", required=True, help="site config")
    ap.add_argument("--horizon", type=float, default=6.0, help="hours within which a loss must be found (default 6)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, check_files=False)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print("\n".join(report(cfg, args.horizon * 3600.0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
