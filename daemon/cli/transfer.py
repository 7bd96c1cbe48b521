"""``plantwatch transfer``: declare a material transfer and wait until the daemon has stored it.

The declaration goes to ``{prefix}/{site}/transfers/declared`` (QoS 1). A broker whose ACL does
not let this user publish there still acknowledges the PUBLISH (MQTT 3.1.1 has no way to say
no), so a PUBACK proves nothing. The daemon publishes a receipt on
``{prefix}/{site}/transfers/receipts`` after the transaction holding the declaration commits
(or after it refused it), keyed like the stored row; the command subscribes before publishing
and exits 0 only on a "stored" receipt. The shipped ACL (deploy/site/mosquitto/acl) has a user
``transfers`` for this.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time

import aiomqtt
from rich.console import Console

from plantwatch.connectors.mqtt import BrokerAddress, BrokerError, connected

from plantwatch.daemon.lab.backtest import parse_time
from plantwatch.daemon.config.model import ConfigError, load_config
from plantwatch.daemon.config.inventory import same_unit, tank_scale, to_quantity
from plantwatch.daemon.config.broker_options import BrokerArgumentError, add_broker_arguments, broker_from
from plantwatch.daemon.ingest.validate import message_key, transfers_topic


def add_arguments(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("--config", required=True, help="site config (for the broker and the sensor registry)")
    tr.add_argument("--tank", required=True, help="the tank's level sensor id")
    tr.add_argument("--quantity", required=True,
                    help="with its unit: '20%%' (of the tank's capacity) or '12.5 t' (the tank's capacity unit), or a"
                         " number with --unit; > 0 leaves the tank, < 0 enters it")
    tr.add_argument("--unit", help="the quantity's unit: %% or the tank's capacity unit (t, kg, m3 ...)")
    tr.add_argument("--start", help="start (ISO 8601 or Unix seconds; default now)")
    tr.add_argument("--end", help="end (default an hour after now)")
    tr.add_argument("--by", default=os.environ.get("USER", ""), help="who declares it")
    tr.add_argument("--reference", default="", help="bill of lading, work order ...")
    tr.add_argument("--username", default=os.environ.get("PLANTWATCH_MQTT_USERNAME"),
                    help="MQTT user allowed to declare transfers (default $PLANTWATCH_MQTT_USERNAME, else the"
                         " config's); its password from $PLANTWATCH_MQTT_PASSWORD")
    tr.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to wait for the daemon's receipt (default 30); without it the exit code is 1")
    add_broker_arguments(tr)


_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(\S.*?)?\s*$")


def parse_quantity(text: str, unit: str | None) -> tuple[float, str]:
    """``'20%'``, ``'12.5 t'``, or ``'20'`` with ``unit``: (quantity, unit); ValueError without a unit."""
    m = _QUANTITY.match(text)
    if m is None:
        raise ValueError(f"--quantity {text!r} is not a number with its unit (e.g. 20%, 12.5 t)")
    q, u = float(m.group(1)), m.group(2)
    if u and unit and not same_unit(u, unit):
        raise ValueError(f"--quantity {text!r} says {u!r}, --unit says {unit!r}")
    u = u or unit
    if not u or not u.strip():
        raise ValueError("a declaration needs its unit: --quantity 20% (of the tank's capacity) or"
                         " --quantity '12.5 t' (the tank's capacity unit), or --unit")
    return q, u.strip()


def receipts_topic(declared_topic: str) -> str:
    return declared_topic.rsplit("/", 1)[0] + "/receipts"


def _refused(codes) -> bool:
    return any(getattr(c, "is_failure", False) or (isinstance(c, int) and c >= 0x80) for c in codes)


async def _publish_and_wait(broker: BrokerAddress, topic: str, payload: bytes, timeout: float) -> dict | str:
    """The daemon's receipt for ``payload``, or a string saying why there is none."""
    key = message_key(topic, payload, "transfer").split(":", 1)[0]
    username = broker.username
    async with connected(broker, timeout=10) as c:
        if _refused(await c.subscribe(receipts_topic(topic), qos=1)):
            return (f"the broker does not let MQTT user {username!r} read {receipts_topic(topic)}: use a user"
                    " allowed to declare transfers (user 'transfers' in deploy/site/mosquitto/acl)")
        await c.publish(topic, payload, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for msg in c.messages:
                    try:
                        receipt = json.loads(bytes(msg.payload))
                    except (TypeError, ValueError):
                        continue
                    if isinstance(receipt, dict) and str(receipt.get("key", "")).split(":", 1)[0] == key:
                        return receipt
        except TimeoutError:
            pass
    return (f"not confirmed: no receipt from the daemon within {timeout:g} s. Either the daemon is not running"
            f" (the broker keeps the declaration for it), or MQTT user {username!r} may not publish to {topic}"
            " (the broker drops it silently)")


def declare(args: argparse.Namespace, console: Console) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        return 2
    if cfg.mqtt is None:
        console.print("[red]the config names no MQTT broker to publish the declaration to[/red]")
        return 2
    tank = next((s for s in cfg.sensors if s.id == args.tank), None)
    if tank is None or tank.kind != "level":
        console.print(f"[red]{args.tank!r} is not a level sensor of site {cfg.site.id!r}[/red]")
        return 2
    now = time.time()
    try:
        quantity, unit = parse_quantity(args.quantity, args.unit)
        start = parse_time(args.start) if args.start else now
        end = parse_time(args.end) if args.end else now + 3600
        # the daemon checks the same; checked here first, so a wrong unit is one line, not a timeout
        to_quantity(tank_scale(cfg, tank), quantity, unit, start, end, top=tank.range[1])
    except ValueError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        return 2
    body = {"tank": args.tank, "start": start, "end": end, "quantity": quantity, "unit": unit,
            "by": args.by, "reference": args.reference}
    m = cfg.mqtt
    username = args.username or m.username
    # the config's password belongs to the config's user (the daemon's); another user brings its own
    password = os.environ.get("PLANTWATCH_MQTT_PASSWORD") or (m.password if username == m.username else None)
    try:
        broker = broker_from(args, m, username=username, password=password)
    except BrokerArgumentError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        return 2
    try:
        got = asyncio.run(_publish_and_wait(broker, transfers_topic(cfg), json.dumps(body).encode(), args.timeout))
    except BrokerError as e:
        console.print(f"[red]cannot declare the transfer: {e}[/red]", highlight=False)
        return 1
    except aiomqtt.MqttError as e:
        console.print(f"[red]cannot declare the transfer: MQTT broker {broker.host}:{broker.port}: {e}[/red]",
                      highlight=False)
        return 1
    if isinstance(got, str):
        console.print(f"[red]{got}[/red]", highlight=False)
        return 1
    if got.get("status") != "stored":
        console.print(f"[red]the daemon refused the declaration: {got.get('reason')}: {got.get('detail')}[/red]",
                      highlight=False)
        return 1
    credited = ""
    if isinstance(got.get("quantity"), (int, float)) and not same_unit(str(got.get("unit", "")), unit):
        credited = f" ({abs(got['quantity']):g} {got.get('unit')})"
    print(f"declared and stored: {abs(quantity):g} {unit}{credited} {'out of' if quantity > 0 else 'into'}"
          f" {args.tank}, {body['start']:.0f}..{body['end']:.0f}", file=sys.stdout)
    return 0
