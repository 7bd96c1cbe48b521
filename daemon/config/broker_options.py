"""Broker options shared by the commands that publish or subscribe on their own
(``plantwatch transfer``, ``simulate``, ``demo --mqtt``): where the broker is and how to speak
TLS to it, defaulting to the config's ``mqtt`` section."""
from __future__ import annotations

import argparse
import os

from plantwatch.connectors.mqtt import BrokerAddress
from plantwatch.connectors.tls import ClientTls, check_files


def add_broker_arguments(p: argparse.ArgumentParser, *, broker: bool = True) -> None:
    if broker:
        p.add_argument("--broker", metavar="HOST:PORT",
                       help="MQTT broker (default: the config's mqtt.host and mqtt.port)")
    p.add_argument("--tls-ca", metavar="PEM", help="TLS to the broker: the CA that signed its certificate"
                   " (default: the config's mqtt.tls.ca_file when the config names the broker)")
    p.add_argument("--tls-cert", metavar="PEM", help="client certificate (brokers that require one)")
    p.add_argument("--tls-key", metavar="PEM", help="the client certificate's key")
    p.add_argument("--tls-no-hostname-check", action="store_true",
                   help="do not check that the broker's certificate names the host (tests only)")


class BrokerArgumentError(ValueError):
    pass


def broker_from(args: argparse.Namespace, mqtt, *, username: str | None = None, password: str | None = None,
                host: str | None = None, port: int | None = None) -> BrokerAddress:
    """The broker the command talks to: ``--broker`` (or ``host``/``port``) else the config's
    ``mqtt`` (a MqttConfig or None). TLS: the config's ``mqtt.tls`` when the broker is the
    config's, with what ``--tls-*`` give in its place. Raises :class:`BrokerArgumentError` with
    one line."""
    given = getattr(args, "broker", None)
    if given:
        h, sep, p = given.rpartition(":")
        if not sep or not h or not p.isdigit():
            raise BrokerArgumentError(f"--broker {given!r}: give HOST:PORT")
        host, port = h, int(p)
    same = mqtt is not None and (host is None or host == mqtt.host) and (port is None or port == mqtt.port)
    host = host or (mqtt.host if mqtt else "127.0.0.1")
    port = port or (mqtt.port if mqtt else 1883)
    base = mqtt.tls.settings() if same and mqtt.tls is not None else None
    tls = base
    if args.tls_ca or args.tls_cert or args.tls_key or args.tls_no_hostname_check:
        if bool(args.tls_cert) != bool(args.tls_key):
            raise BrokerArgumentError("--tls-cert and --tls-key go together")
        base = base or ClientTls()
        tls = ClientTls(args.tls_ca or base.ca_file, args.tls_cert or base.cert_file, args.tls_key or base.key_file,
                        base.check_hostname and not args.tls_no_hostname_check, base.min_version)
    if tls is not None:
        problem = check_files(tls)
        if problem:
            raise BrokerArgumentError(f"TLS to the broker: {problem}")
    if password is None and username is not None:
        password = os.environ.get("PLANTWATCH_MQTT_PASSWORD")
    return BrokerAddress(host, port, username, password, tls)
