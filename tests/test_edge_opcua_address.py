"""OPC UA addressing as integrators meet it, against asyncua's own server through ``plantwatch
collect``, a real Mosquitto, the daemon and TimescaleDB: ``nsu=`` node ids follow their namespace
when a server restart renumbers the namespaces, browse paths are resolved at connect, and a path
that is not there is an error naming the missing segment while the other channels are read.
"""
from __future__ import annotations

import pytest

from .edge_helpers import CollectProcess, collect_yaml, eventually, free_tcp_port, latest, start_daemon, teardown

pytestmark = pytest.mark.slow

GAS_NS, OTHER_NS = "urn:plantwatch:test:gas", "urn:plantwatch:test:utilities"
SENSORS = ["id: GD-101, kind: gas, quantity: H2S, unit: ppm, range: [0, 100]",
           "id: GD-102, kind: gas, quantity: H2S, unit: ppm, range: [0, 100]",
           "id: GD-999, kind: gas, quantity: H2S, unit: ppm, range: [0, 100]"]


class PlantServer:
    """/Objects/Plant/GD-101/Value and GD-102/Value in the gas namespace; the utilities namespace
    has variables with the same string ids (other values). ``gas_first`` decides which of the two
    namespaces the server registers first, i.e. their indexes."""

    def __init__(self):
        self.port = free_tcp_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/plant/"
        self._server = None

    async def start(self, *, gas_first: bool, gas: dict[str, float], other: float) -> dict[str, int]:
        from asyncua import Server, ua

        srv = Server()
        await srv.init()
        srv.set_endpoint(self.url)
        srv.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        order = [GAS_NS, OTHER_NS] if gas_first else [OTHER_NS, GAS_NS]
        idx = {uri: await srv.register_namespace(uri) for uri in order}
        g, o = idx[GAS_NS], idx[OTHER_NS]
        plant = await srv.nodes.objects.add_object(g, "Plant")
        for name, value in gas.items():
            det = await plant.add_object(g, name)
            await det.add_variable(ua.NodeId(f"{name}.Value", g), "Value", value, varianttype=ua.VariantType.Double)
        util = await srv.nodes.objects.add_object(o, "Utilities")
        for name in gas:
            await util.add_variable(ua.NodeId(f"{name}.Value", o), f"{name}.Value", other,
                                    varianttype=ua.VariantType.Double)
        await srv.start()
        self._server = srv
        return idx

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None


SOURCE = """\
  - type: opcua
    id: plant
    url: {url}
    sampling_interval: 0.1
    publishing_interval: 0.2
    timeout: 2.0
    backoff_max: 1.0
    channels:
      - {{sensor: GD-101, node: "nsu={gas};s=GD-101.Value"}}
      - {{sensor: GD-102, node: /Objects/Plant/GD-102/Value}}
      - {{sensor: GD-999, node: /Objects/Plant/GD-999/Value}}
"""


async def _values(db: str, want: dict[str, float]):
    got = {k: round(v[0], 6) for k, v in (await latest(db)).items()}
    return got if all(got.get(k) == v for k, v in want.items()) else None


async def test_namespace_uris_and_browse_paths_survive_a_server_restart_that_renumbers_namespaces(
        tmp_path, mosquitto, db, topic_prefix):
    prefix = topic_prefix.rstrip("/")
    server = PlantServer()
    first = await server.start(gas_first=True, gas={"GD-101": 5.0, "GD-102": 7.0}, other=99.0)
    d = start_daemon(tmp_path, SENSORS, mosquitto, db, prefix)
    c = CollectProcess(tmp_path, collect_yaml(SOURCE.format(url=server.url, gas=GAS_NS), mosquitto=mosquitto,
                                              prefix=prefix, buffer=tmp_path / "buf.sqlite3", interval=0.2))
    try:
        await d.wait_connected()
        c.start()
        await eventually(lambda: _values(db, {"GD-101": 5.0, "GD-102": 7.0}), "readings by namespace URI and path",
                         on_fail=c.log)
        # the path that is not there: an error naming the missing segment, the other channels still read
        log = c.log()
        assert ("opcua plant: sensor GD-999: browse path /Objects/Plant/GD-999/Value: no 'GD-999' under "
                "/Objects/Plant (there: GD-101, GD-102)") in log, log
        assert "GD-999" not in await latest(db)

        # the server restarts with its namespaces in the other order: the same node id with the old
        # index is now a utilities variable (99); the collector follows the URI and the path
        await server.stop()
        second = await server.start(gas_first=False, gas={"GD-101": 6.0, "GD-102": 8.0}, other=99.0)
        assert second[GAS_NS] != first[GAS_NS] and second[OTHER_NS] == first[GAS_NS]
        await eventually(lambda: _values(db, {"GD-101": 6.0, "GD-102": 8.0}), "readings after the restart",
                         on_fail=c.log)
        assert 99.0 not in {round(v[0], 6) for v in (await latest(db)).values()}
        assert c.terminate() == 0
        assert d.terminate() == 0
    finally:
        await teardown(c, d, server)


async def test_a_namespace_uri_the_server_does_not_have_is_named():
    from asyncua import Client

    from plantwatch.connectors.edge.opcua_address import AddressError, resolve

    server = PlantServer()
    await server.start(gas_first=True, gas={"GD-101": 5.0}, other=1.0)
    try:
        async with Client(server.url) as client:
            ns = await client.get_namespace_array()
            with pytest.raises(AddressError, match="namespace 'urn:nowhere' of nsu=urn:nowhere;s=X is not on the server"):
                await resolve(client, "nsu=urn:nowhere;s=X", ns)
            nid = await resolve(client, "/Objects/Plant/GD-101/Value", ns)
            assert nid == await resolve(client, f"nsu={GAS_NS};s=GD-101.Value", ns)
            with pytest.raises(AddressError, match="no 'Plantt' under /Objects"):
                await resolve(client, "/Objects/Plantt/GD-101/Value", ns)
    finally:
        await server.stop()
