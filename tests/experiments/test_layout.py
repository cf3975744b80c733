"""The shape of experiments/: a harness that knows no claim, claims that know no other
claim, one way to find them (the catalog), and an import graph without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "experiments"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the experiments modules it imports (at import time or inside a function)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


GRAPH = _imports()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "experiments"


def test_the_harness_imports_no_claim_and_not_the_catalog():
    upward = {
        (m, t)
        for m, targets in GRAPH.items()
        if _layer(m) == "harness"
        for t in targets
        if _layer(t) != "harness"
    }
    assert not upward, upward


def test_a_claim_imports_no_other_claim():
    crossing = {
        (m, t)
        for m, targets in GRAPH.items()
        if _layer(m) == "claims"
        for t in targets
        if _layer(t) == "claims" and t.split(".")[2] != m.split(".")[2]
    }
    assert not crossing, crossing


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_every_claim_implements_the_contract_and_the_catalog_finds_it():
    from experiments import catalog
    from experiments.harness.claim import Claim

    claims = catalog.claims()
    assert list(claims) == list(catalog.NAMES)
    for name, claim in claims.items():
        assert isinstance(claim, Claim) and claim.name == name
        assert set(claim.presets) >= {"smoke", "quick", "paper"}
        assert callable(claim.run) and callable(claim.render)
    on_disk = {p.stem if p.is_file() else p.name for p in (PACKAGE / "claims").iterdir()}
    assert on_disk - {"__init__", "__pycache__"} == set(catalog.NAMES)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_no_file_is_much_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= 650, path
