"""``plantwatch grafana push`` and ``plantwatch grafana render``: plantwatch's dashboards for a
Grafana, through its HTTP API (push) or as files for its provisioning (render)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

USAGE = ("usage: plantwatch grafana {push,render} ...\n\n"
         "plantwatch's dashboards, data sources and alert rules for a Grafana.\n\n"
         "  push     create or update the folder, data sources, dashboards and alert rules in a Grafana\n"
         "  render   write the dashboards with the site's console URL and time zone, for file provisioning\n\n"
         "(plantwatch grafana push --help, plantwatch grafana render --help)")


def console_url_of(config_path: str) -> str | None:
    """Where the config says operators reach the console: ``notify.console_url``, else the API's
    own address (None without an ``api:`` section)."""
    from plantwatch.daemon.config.model import load_config

    cfg = load_config(config_path, check_files=False)
    if cfg.notify.console_url:
        return cfg.notify.console_url
    return cfg.api.url if cfg.api is not None else None


def render_parser() -> argparse.ArgumentParser:
    from plantwatch.connectors.grafana_files import DEFAULT_TIMEZONE

    ap = argparse.ArgumentParser(prog="plantwatch grafana render",
                                 description="Write plantwatch's dashboards into a folder for Grafana's file"
                                             " provisioning, linking to the site's console and in its time zone.")
    ap.add_argument("--out", required=True, help="folder to write the dashboards' JSON files into")
    ap.add_argument("--config", help="site config: the console URL is its notify.console_url, else its api address")
    ap.add_argument("--console-url", help="the console's URL (instead of --config)")
    ap.add_argument("--timezone", default=DEFAULT_TIMEZONE,
                    help="utc (the default, like the console, CLI and reports), browser (the viewer's) or an IANA"
                         " name such as Europe/Berlin")
    ap.add_argument("--dir", help="the dashboards/ folder (default: the installed one, or PLANTWATCH_DASHBOARDS_DIR)")
    return ap


def render_main(argv: Sequence[str]) -> int:
    from plantwatch.connectors.grafana_files import GrafanaPushError, render
    from plantwatch.daemon.config.model import ConfigError

    args = render_parser().parse_args(argv)
    try:
        url = args.console_url or (console_url_of(args.config) if args.config else None)
        files = render(args.out, console_url=url, timezone=args.timezone, root=args.dir)
    except (ConfigError, GrafanaPushError, OSError) as e:
        print(f"plantwatch grafana render: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(files)} dashboards in {args.out} (console {url or 'at the dashboards default'},"
          f" time zone {args.timezone})")
    return 0


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["push"]:
        from plantwatch.connectors import grafana

        return grafana.main(list(argv[1:]))
    if argv[:1] == ["render"]:
        return render_main(list(argv[1:]))
    print(USAGE, file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2
