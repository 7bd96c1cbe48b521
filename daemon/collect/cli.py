"""``plantwatch collect``: run the edge collector, or ``plantwatch collect certs`` to make its OPC UA
application instance certificate.

    plantwatch collect --config collect.yaml [--site site.yaml]
    plantwatch collect certs --config collect.yaml [--uri URI] [--days N] [--force]
    plantwatch collect certs --pki DIR --uri URI

``certs`` writes ``own/cert.der`` and ``own/key.pem`` into the PKI folder of every OPC UA source
with security (or into ``--pki``), creates ``trusted/`` and ``rejected/``, and prints what to
install on the server: the certificate file, its application URI and thumbprint.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch collect",
                                description="edge collector: read Modbus / OPC UA devices, publish readings "
                                            "(store and forward); 'plantwatch collect certs' makes its OPC UA "
                                            "certificate",
                                epilog="environment: PLANTWATCH_MQTT_PASSWORD (the broker password when collect.yaml "
                                       "has none)")
    p.add_argument("--config", required=True, help="collect config (YAML; see docs/edge.md)")
    p.add_argument("--site", help="the site config: refuse to start when the channels disagree with it")
    return p


#: the parser of ``plantwatch collect`` as every passthrough command names it (``certs`` has its own)
_parser = _run_parser


def _certs_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plantwatch collect certs",
                                description="create the collector's OPC UA application instance certificate and key "
                                            "in its PKI folder, and print what to install on the server")
    p.add_argument("--config", help="collect config: the PKI folder and application URI of its OPC UA sources")
    p.add_argument("--pki", help="PKI folder (instead of --config)")
    p.add_argument("--uri", help="application URI (default: the source's application_uri, else "
                                 "urn:<host>:plantwatch:collect:<collector>)")
    p.add_argument("--days", type=int, default=730, help="validity in days (default 730)")
    p.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    return p


def _targets(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """(PKI folder, application URI) to make a certificate for."""
    from plantwatch.connectors.edge.opcua_trust import default_application_uri

    if args.pki:
        if not args.uri:
            raise ValueError("--pki needs --uri (the application URI the server will see)")
        return [(Path(args.pki), args.uri)]
    if not args.config:
        raise ValueError("give --config FILE (its OPC UA sources' PKI folder) or --pki DIR --uri URI")
    from plantwatch.daemon.collect.config import CollectConfig, load_collect_config_text

    text = Path(args.config).read_text()
    cfg: CollectConfig = _load_without_own_files(load_collect_config_text, text, args.config)
    out: dict[Path, str] = {}
    for s in cfg.sources:
        if s.type == "opcua" and s.security.mode != "None":
            out.setdefault(s.security.pki, args.uri or s.security.application_uri
                           or default_application_uri(cfg.collector))
    if not out:
        raise ValueError(f"{args.config} has no OPC UA source with security mode Sign or SignAndEncrypt")
    return list(out.items())


def _load_without_own_files(load, text: str, source: str):
    """The config, where the missing own certificate (what ``certs`` is about to make) is no error."""
    from plantwatch.daemon.config.model import ConfigError

    try:
        return load(text, source)
    except ConfigError as e:
        if all("plantwatch collect certs makes" in p for p in e.problems):
            from plantwatch.daemon.collect.config import CollectConfig
            from plantwatch.daemon.config.loader import load_yaml

            located = load_yaml(text, source)
            cfg = CollectConfig.model_validate(located.data)
            base = Path(source).resolve().parent
            return cfg.model_copy(update={"sources": [s.resolve_paths(base) for s in cfg.sources]})
        raise


def certs(argv: list[str]) -> int:
    from plantwatch.connectors.edge.opcua_trust import Pki, describe, make_own_certificate
    from plantwatch.daemon.config.model import ConfigError

    args = _certs_parser().parse_args(argv)
    try:
        targets = _targets(args)
        for folder, uri in targets:
            pki = Pki(folder)
            der = asyncio.run(make_own_certificate(pki, uri, days=args.days, force=args.force))
            print(f"wrote {pki.own_certificate} and {pki.own_key} (application URI {uri})\n"
                  f"  certificate: {describe(der)}\n"
                  f"On the OPC UA server, trust this client: copy {pki.own_certificate} into the server's trusted "
                  "client certificates (its PKI folder's trusted/certs, or accept it in the server's rejected list "
                  "after the collector's first attempt). The server must accept the application URI above.\n"
                  f"Then trust the server here: put its certificate into {pki.trusted}/ (or pin it with "
                  f"server_certificate); an unknown server's certificate lands in {pki.rejected}/ at the first "
                  "connect.")
    except ConfigError as e:
        print(e)
        return 2
    except (ValueError, OSError) as e:
        print(f"plantwatch collect certs: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["certs"]:
        return certs(argv[1:])
    args = _run_parser().parse_args(argv)
    from plantwatch.daemon.collect.runner import main as run

    return run(args.config, args.site)


if __name__ == "__main__":
    sys.exit(main())
