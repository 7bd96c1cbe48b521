"""OPC UA addresses of channels, resolved on the server at every connect.

A channel's ``node`` is one of:

* a node id with a namespace index, ``ns=2;s=GasPanel.H2S_01`` or ``ns=3;i=1001``: used as is;
* a node id with a namespace URI, ``nsu=urn:vendor:gas;s=GD-101.Value``: the index of that URI in
  the server's namespace array, read at every connect -- a server restart that renumbers its
  namespaces does not move the channel to another namespace's node;
* a browse path, ``/Objects/Plant/GD-101/Value``: browse names from the root, each segment
  ``Name`` (any namespace) or ``ns:Name`` (that namespace index); resolved at every connect, with
  an error naming the first segment that is not there.
"""
from __future__ import annotations

from typing import Any


class AddressError(Exception):
    """A channel's node cannot be found on this server (the message names what is missing)."""


def check_syntax(node: str) -> str:
    """``node`` if it is a node id or a browse path; ValueError otherwise."""
    from asyncua import ua

    if node.startswith("/"):
        segments = node.strip("/").split("/")
        if not node.strip("/") or any(not s for s in segments):
            raise ValueError(f"browse path {node!r} has an empty segment (e.g. /Objects/Plant/GD-101/Value)")
        return node
    try:
        ua.NodeId.from_string(node)
    except Exception:  # asyncua raises plain ValueError/UaStringParsingError variants
        raise ValueError(f"not an OPC UA node id or browse path: {node!r} (e.g. ns=2;s=Name, "
                         "nsu=urn:vendor:plant;s=Name or /Objects/Plant/GD-101/Value)") from None
    return node


async def resolve(client: Any, node: str, namespaces: list[str]) -> Any:
    """The NodeId of ``node`` on the connected server (``namespaces``: its namespace array)."""
    from asyncua import ua

    if node.startswith("/"):
        return await _browse(client, node)
    nid = ua.NodeId.from_string(node)
    if not (isinstance(nid, ua.ExpandedNodeId) and nid.NamespaceUri):
        return nid
    uri = nid.NamespaceUri
    if uri not in namespaces:
        raise AddressError(f"namespace {uri!r} of {node} is not on the server (its namespaces: "
                           f"{', '.join(namespaces)})")
    return ua.NodeId(nid.Identifier, namespaces.index(uri), nid.NodeIdType)


async def _browse(client: Any, path: str) -> Any:
    node = client.nodes.root
    done = ""
    for seg in path.strip("/").split("/"):
        ns, _, name = seg.rpartition(":") if seg.split(":", 1)[0].isdigit() else ("", "", seg)
        children = await node.get_children_descriptions()
        hits = [c for c in children if c.BrowseName.Name == name
                and (not ns or c.BrowseName.NamespaceIndex == int(ns))]
        where = done or "/"
        if not hits:
            there = ", ".join(sorted(c.BrowseName.Name for c in children)[:20]) or "nothing"
            raise AddressError(f"browse path {path}: no {seg!r} under {where} (there: {there})")
        if len(hits) > 1:
            raise AddressError(f"browse path {path}: {seg!r} under {where} is ambiguous (namespaces "
                               f"{sorted(h.BrowseName.NamespaceIndex for h in hits)}): write it ns:{name}")
        node = client.get_node(hits[0].NodeId)
        done += "/" + seg
    return node.nodeid
