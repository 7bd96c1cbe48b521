"""README stays short and every link in it, and in the guides it leads to, resolves: to a file
of the repository, and for a #fragment to a heading of that file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"^(https?|mailto):", t)]


@pytest.mark.parametrize("doc", ["README.md", "docs/operations.md", "docs/config.md", "docs/architecture.md",
                                 "docs/benchmarks.md", "docs/evaluation.md", "deploy/README.md", "docs/edge.md"])
def test_every_link_resolves(doc):
    src = REPO / doc
    for target in links(src):
        file, _, fragment = target.partition("#")
        dest = (src.parent / file).resolve() if file else src
        assert dest.exists(), f"{doc}: link to {target}: no such file"
        if fragment:
            assert fragment in _anchors(dest), f"{doc}: link to {target}: no such heading in {dest.name}"


def test_readme_is_short_and_keeps_the_two_commands_and_the_screenshot():
    text = README.read_text()
    assert len(text.splitlines()) < 150
    assert ("bash deploy/dev/demo.sh   # the demo: a simulated site, embedded broker and database, about a minute\n"
            "bash deploy/dev/test.sh   # the whole test suite against a real Mosquitto and a real TimescaleDB\n") in text
    assert "![console](docs/screenshots/console-demo-leak.png)" in text  # written by tests/test_demo_keep.py
    for guide in ("docs/operations.md", "docs/config.md", "docs/architecture.md", "docs/benchmarks.md",
                  "docs/evaluation.md"):
        assert f"]({guide})" in text, guide
