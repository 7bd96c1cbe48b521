"""The house's rooms import downward only (README "Architecture"): connectors/ and detectors/
never import the daemon, detectors/ imports nothing else of ours, daemon/'s rooms form layers,
and no modules import each other in a circle. Read from the source (ast), nothing is imported."""
from __future__ import annotations

from tests.layout_figures import (ROOT, circles, driver_imports, graph, modules, reverse_imports, room, room_graph, short,
                                  sql_lines)

#: daemon/'s rooms from the top down: a room imports only rooms on lower lines (or connectors/
#: and detectors/). A folder or top-level module not listed here fails: give it its place.
LAYERS: list[set[str]] = [
    {"daemon.cli"},                                  # the command line: parse, call, print
    {"daemon.lab"},                                  # demo, backtest, bench, evaluation, faults, simulator
    {"daemon.collect", "daemon.runtime"},            # the edge collector; the daemon process
    {"daemon.service"},                              # the Daemon: wires the rooms together
    {"daemon.ingest"},                               # readings in: validate, split, store, detect
    {"daemon.alarms"},                               # the alarm book, its API, publishing, reports
    {"daemon.broker_session", "daemon.detection"},
    {"daemon.metrics", "daemon.exits"},
    {"daemon.config"},                               # the typed config: imports nothing of daemon/
]

#: a module longer than this is split by what it does (a reader finds a thing by its file's name)
LONGEST = 400
#: modules still longer, each to be split by whoever changes it next; the list only shrinks (a new
#: long module fails)
LONG_LEFT: set[str] = set()


def test_modules_stay_small():
    long = {str(p.relative_to(ROOT)) for p in modules().values() if len(p.read_text().splitlines()) > LONGEST}
    assert long - LONG_LEFT == set()
    assert LONG_LEFT - long == set(), "split: take it off LONG_LEFT (the list only shrinks)"


def test_sql_and_the_driver_stay_in_connectors():
    """The daemon asks the store (connectors/) and catches plantwatch's store errors
    (connectors/errors.py); the benchmark and fault rigs in lab/ read their databases through
    connectors/rig_db.py: no SQL, no raw pool, no driver import anywhere in daemon/."""
    assert sql_lines() == {}
    assert driver_imports() == []


def test_the_checker_sees_sql_and_a_driver_import(tmp_path):
    (tmp_path / "daemon" / "lab").mkdir(parents=True)
    (tmp_path / "daemon" / "lab" / "rig.py").write_text(
        "def f():\n    import asyncpg\n    return 'SELECT count(*) FROM readings'\n")
    (tmp_path / "daemon" / "ok.py").write_text("# select the sensors, insert nothing\n")
    assert sql_lines(tmp_path) == {"daemon/lab/rig.py": 1}
    assert driver_imports(tmp_path) == ["daemon/lab/rig.py"]


def test_no_reverse_imports():
    edges = graph(typing=True)
    assert [f"{short(a)} -> {short(b)}" for a, b in reverse_imports(edges)] == []
    detectors = {short(b) for a, bs in edges.items() if room(a) == "detectors" for b in bs if room(b) != "detectors"}
    assert detectors == set()


def test_daemon_rooms_import_downward():
    level = {r: i for i, layer in enumerate(LAYERS) for r in layer}
    edges = graph()
    rooms = room_graph(edges)
    unplaced = sorted(r for r in rooms if r.startswith("daemon.") and r not in level)
    assert unplaced == [], "daemon/ rooms missing from LAYERS"
    upward = sorted(f"{short(a)} -> {short(b)}" for a, bs in edges.items() for b in bs
                    if room(a) in level and room(b) in level and level[room(b)] <= level[room(a)]
                    and room(a) != room(b))
    assert upward == []
    assert circles(rooms) == []


def test_no_import_circles_between_modules():
    assert [[short(m) for m in comp] for comp in circles(graph())] == []


def test_no_circles_even_through_type_only_imports():
    """Imports under ``if TYPE_CHECKING:`` never run, but a circle they close is still two modules
    that need each other: type against a protocol of the lower one instead."""
    assert [[short(m) for m in comp] for comp in circles(graph(typing=True))] == []


def test_the_checker_sees_a_circle_and_a_reverse_import():
    edges = {"plantwatch.daemon.ingest.a": {"plantwatch.daemon.alarms.b"},
             "plantwatch.daemon.alarms.b": {"plantwatch.daemon.ingest.a"},
             "plantwatch.connectors.c": {"plantwatch.daemon.config.model"}}
    assert circles(edges) == [["plantwatch.daemon.alarms.b", "plantwatch.daemon.ingest.a"]]
    assert circles(room_graph(edges)) == [["daemon.alarms", "daemon.ingest"]]
    assert reverse_imports(edges) == [("plantwatch.connectors.c", "plantwatch.daemon.config.model")]
