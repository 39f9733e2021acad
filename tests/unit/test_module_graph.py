"""The package's seams hold: no import cycle among certbot_wazo's modules (lazy imports inside
functions count too), and the certbot-free core never imports certbot or the SSH access.

`python -m tests.unit.test_module_graph` prints the graph (module: what it imports)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "certbot_wazo"
# The transaction and what it stands on: it receives an Access, and knows nothing of certbot or
# of how a host is reached.
CORE = ("deployment", "desired", "host", "journal", "records", "files", "pair", "tls",
        "services", "discovery", "listeners", "overrides", "hosts", "directories", "wazoconfig",
        "releases", "nginxconf", "errors", "failpoints", "access", "ledger")


def graph() -> dict[str, set[str]]:
    """Each module of the package, and the package's modules it imports (at any depth of its
    code: lazy imports in functions and TYPE_CHECKING imports are dependencies too)."""
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = path.stem
        tree = ast.parse(path.read_text())
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "certbot_wazo":
                    found.update(alias.name for alias in node.names)
                elif node.module.startswith("certbot_wazo."):
                    found.add(node.module.split(".")[1])
                elif node.module.split(".")[0] in ("certbot", "acme"):
                    found.add("<certbot>")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("certbot_wazo."):
                        found.add(alias.name.split(".")[1])
                    elif alias.name.split(".")[0] in ("certbot", "acme"):
                        found.add("<certbot>")
        found.discard(name)
        found.discard("__init__")
        edges[name] = found
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle (each found once, from its smallest module)."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                found.append([*path, start])
            elif nxt > start and nxt not in path and nxt in edges:
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_core_knows_nothing_of_certbot_or_ssh() -> None:
    edges = graph()
    for name in CORE:
        assert "<certbot>" not in edges[name] and "remote" not in edges[name], \
            (name, sorted(edges[name]))


if __name__ == "__main__":
    edges = graph()
    for name in sorted(edges):
        print(f"{name}: {' '.join(sorted(edges[name]))}")
    print("cycles:", cycles(edges) or "none", file=sys.stderr)
