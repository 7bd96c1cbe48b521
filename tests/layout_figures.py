"""The layout's figures: lines per folder, the largest files, import circles, reverse imports
between rooms, SQL outside connectors/, ``hasattr`` checks, broad exception handlers, and the
``duplicates`` summary.

Run from the repository root: ``python -m tests.layout_figures`` (``--no-duplicates`` skips the
``duplicates`` tool). It reads files only and imports nothing of plantwatch; tests/test_layout.py
holds the rules on the same import graph.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"daemon": "plantwatch.daemon", "connectors": "plantwatch.connectors",
            "detectors": "plantwatch.detectors"}
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b|pool\.acquire|\.fetch\(|\.fetchrow\(|\.fetchval\(")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for daemon/, connectors/ and detectors/."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST, typing: bool):
    """Every import statement, at any depth (functions too); ``if TYPE_CHECKING:`` blocks only
    when ``typing`` (they never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node) and not typing:
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: set[str], *, typing: bool = False) -> set[str]:
    """The modules of ours that ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``
    when ``sub`` is a module, else as ``pkg``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in _import_nodes(tree, typing):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                up = package.split(".")
                up = up[: len(up) - (node.level - 1)]
                base = ".".join([*up, base]) if base else ".".join(up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph(root: Path = ROOT, *, typing: bool = False) -> dict[str, set[str]]:
    mods = modules(root)
    return {name: imports_of(name, path, set(mods), typing=typing) for name, path in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def room(module: str, root: Path = ROOT) -> str:
    """``connectors``, ``detectors``, a folder of daemon/ (``daemon.ingest``) or one of daemon/'s
    top-level modules (``daemon.service``)."""
    parts = module.split(".")[1:]
    if parts[0] != "daemon" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def room_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for a, bs in edges.items():
        out[room(a)]
        for b in bs:
            if room(a) != room(b):
                out[room(a)].add(room(b))
    return dict(out)


def reverse_imports(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """connectors -> daemon, detectors -> daemon or connectors."""
    return sorted((a, b) for a, bs in edges.items() for b in bs
                  if (a.split(".")[1] == "connectors" and b.split(".")[1] == "daemon")
                  or (a.split(".")[1] == "detectors" and b.split(".")[1] in ("daemon", "connectors")))


def sql_lines(root: Path = ROOT) -> dict[str, int]:
    """Lines of SQL or of the raw pool in daemon/ (file -> count): connectors/ owns them."""
    sql: dict[str, int] = defaultdict(int)
    for p in sorted((root / "daemon").rglob("*.py")):
        for line in p.read_text().splitlines():
            if SQL.search(line):
                sql[str(p.relative_to(root))] += 1
    return dict(sql)


def driver_imports(root: Path = ROOT) -> list[str]:
    """The daemon/ files that import the database driver (at any depth): the daemon speaks to
    the store, and catches its errors (connectors/errors.py), never the driver's."""
    found = []
    for p in sorted((root / "daemon").rglob("*.py")):
        for node in _import_nodes(ast.parse(p.read_text()), True):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n == "asyncpg" or n.startswith("asyncpg.") for n in names):
                found.append(str(p.relative_to(root)))
                break
    return found


def short(m: str) -> str:
    return m.removeprefix("plantwatch.")


def main() -> None:
    root = ROOT
    mods = modules(root)
    edges = graph(root, typing=True)
    print("## Lines per folder")
    per: dict[str, int] = defaultdict(int)
    for path in mods.values():
        rel = path.relative_to(root)
        n = len(path.read_text().splitlines())
        per[rel.parts[0] + "/"] += n
        for depth in range(2, len(rel.parts)):
            per["/".join(rel.parts[:depth]) + "/"] += n
        if len(rel.parts) == 2 and rel.parts[0] == "daemon":
            per["daemon/ (top level files)"] += n
    for folder in sorted(per):
        print(f"  {per[folder]:6d}  {folder}")
    top = [p for p in (root / "daemon").glob("*.py")]
    print(f"  files at daemon/'s top level: {len(top)}")
    print("## 10 largest files")
    sizes = sorted(((len(p.read_text().splitlines()), str(p.relative_to(root))) for p in mods.values()),
                   reverse=True)
    for n, p in sizes[:10]:
        print(f"  {n:6d}  {p}")
    for label, g in (("all imports, TYPE_CHECKING included", edges),
                     ("imports that run (TYPE_CHECKING left out)", graph(root))):
        print(f"## Import circles between modules ({label})")
        found = circles(g)
        for comp in found:
            print("  " + " <-> ".join(short(m) for m in comp))
        print(f"  total: {len(found)}")
    print("## Import circles between rooms (daemon/ folders and top-level modules, connectors, detectors)")
    found = circles(room_graph(graph(root)))
    for comp in found:
        print("  " + " <-> ".join(comp))
    print(f"  total: {len(found)}")
    print("## Reverse imports")
    rev = reverse_imports(edges)
    for a, b in rev:
        print(f"  {short(a)} -> {short(b)}")
    print(f"  total: {len(rev)}")
    print("## SQL / pool use in daemon/ (lines)")
    sql = sql_lines(root)
    for p in sorted(sql):
        print(f"  {sql[p]:4d}  {p}")
    print(f"  total: {sum(sql.values())} lines in {len(sql)} files")
    print("## daemon/ files importing the database driver")
    drivers = driver_imports(root)
    for p in drivers:
        print(f"  {p}")
    print(f"  total: {len(drivers)}")
    print("## Broad checks in daemon/ connectors/ detectors/")
    counts: dict[str, int] = defaultdict(int)
    for p in mods.values():
        text = p.read_text()
        counts["hasattr("] += text.count("hasattr(")
        counts["suppress(Exception)"] += text.count("suppress(Exception)")
        counts["except Exception"] += len(re.findall(r"except Exception\b", text))
    for k, v in counts.items():
        print(f"  {v:4d}  {k}")
    if "--no-duplicates" not in sys.argv and shutil.which("duplicates"):
        print("## duplicates --most 20")
        out = subprocess.run(["duplicates", "--most", "20"], capture_output=True, text=True, cwd=root).stdout
        print("\n".join("  " + line for line in out.splitlines()))


if __name__ == "__main__":
    main()
