"""The daemon's rooms are wired at construction: no back-reference set afterwards, no field of a
collaborator written from outside, no private attribute of another object read (ast only)."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import plantwatch.daemon as daemon_pkg
from plantwatch.daemon.alarms.service import AlarmIntake, AlarmManagement
from plantwatch.daemon.ingest.cluster import ClusterRunner
from plantwatch.daemon.ingest.partitioning import ClusterPartitioning, Partitioning
from plantwatch.daemon.ingest.pipeline import Pipeline

DAEMON = Path(daemon_pkg.__file__).parent
#: the daemon's runtime: what runs inside the daemon process
RUNTIME = [DAEMON / "service.py", DAEMON / "detection.py", *sorted((DAEMON / "ingest").glob("*.py")),
           *sorted((DAEMON / "alarms").glob("*.py"))]
#: the modules that wire or drive the pipeline: they must not write its fields
WIRING = [DAEMON / "service.py", DAEMON / "ingest" / "cluster.py"]


def _private_reads(text: str) -> list[str]:
    return [ast.unparse(n) for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
            and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))]


def _foreign_writes(text: str) -> list[str]:
    """Assignments to an attribute of anything but ``self`` (``p.active = ...``, ``self.pipeline.x = ...``)."""
    out = []
    for n in ast.walk(ast.parse(text)):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            for e in t.elts if isinstance(t, ast.Tuple) else [t]:
                if isinstance(e, ast.Attribute) and not (isinstance(e.value, ast.Name) and e.value.id == "self"):
                    out.append(ast.unparse(e))
    return out


def _in(files: list[Path], check) -> list[str]:
    return [f"{f.relative_to(DAEMON)}: {x}" for f in files for x in check(f.read_text())]


def test_runtime_reads_no_private_attribute_of_another_object():
    assert _in(RUNTIME, _private_reads) == []


def test_no_pipeline_field_is_written_from_outside():
    assert _in(WIRING, _foreign_writes) == []


def test_the_checks_see_what_they_look_for():
    text = "p.active = 1\nself.pipeline.on_commit = f\nif p._tick_changes: pass\nself._ok = 2\n"
    assert _foreign_writes(text) == ["p.active", "self.pipeline.on_commit"]
    assert _private_reads(text) == ["p._tick_changes"]


def test_alarm_management_gets_book_and_intake_at_construction():
    params = inspect.signature(AlarmManagement).parameters
    assert {"book", "intake"} <= set(params)
    assert "bind" not in vars(AlarmManagement)
    for name in ("submit_alarm_ops", "health"):  # the pipeline is an AlarmIntake
        assert list(inspect.signature(getattr(Pipeline, name)).parameters)[1:] == \
            list(inspect.signature(getattr(AlarmIntake, name)).parameters)[1:]


def test_pipeline_gets_partitioning_at_construction():
    params = inspect.signature(Pipeline).parameters
    assert {"partitioning", "on_commit"} <= set(params)
    assert issubclass(ClusterPartitioning, Partitioning)
    # the cluster's runner gets what it uses at construction, not the daemon
    assert "daemon" not in inspect.signature(ClusterRunner).parameters
    assert {"parts", "store", "intake"} <= set(inspect.signature(ClusterRunner).parameters)
    single = Partitioning()  # single mode: every sensor held here, no fence, publish at once
    assert (single.col_part, single.active, single.fence_of(object())) == (None, None, None)
    assert single.may_publish(object()) is True
