"""The library's layers: imports point one way, and the framework-free core never loads Flax.

masks -> ops -> decoupled -> the rest (attention, mc, uncertainty, ...) -> the framework
adapters (linen, nnx, equinox); the argument checks (``_src/checks.py``) sit below them all.
The import graph is read from the source (the imports a module runs when it is imported:
module level, ``try`` blocks and class bodies, not ``if TYPE_CHECKING:`` or function bodies).
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dropjax"
ADAPTERS = {"dropjax.linen", "dropjax.nnx", "dropjax.equinox"}
FLAX_GLUE = "dropjax._src.flax_glue"
FRAMEWORKS = ("flax", "equinox")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def _import_time_nodes(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                yield from _import_time_nodes(block)
        elif isinstance(node, ast.ClassDef):
            yield from _import_time_nodes(node.body)


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The dropjax modules (and frameworks) that an import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = set()
    for name in names:
        if name in modules:
            out.add(name)
        elif name.split(".")[0] in FRAMEWORKS:
            out.add(name.split(".")[0])
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: the dropjax modules and frameworks it imports when it is imported}``."""
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {}
    for path in paths:
        tree = ast.parse(path.read_text())
        name = _module_name(path)
        deps = set().union(*(_targets(n, modules) for n in _import_time_nodes(tree.body)))
        graph[name] = deps - {name}
    return graph


def test_import_graph_is_acyclic():
    graph = {m: {d for d in deps if d.startswith("dropjax")} for m, deps in import_graph().items()}
    # dropjax/__init__ is the package every submodule's import runs first; it is the top.
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError
    assert order.index("dropjax._src.checks") < order.index("dropjax._src.masks")
    assert order.index("dropjax._src.masks") < order.index("dropjax._src.ops")
    assert order.index("dropjax._src.ops") < order.index("dropjax._src.decoupled")


def test_core_never_imports_adapters_or_frameworks():
    for module, deps in import_graph().items():
        if module in ADAPTERS | {FLAX_GLUE}:
            continue
        back = deps & (ADAPTERS | {FLAX_GLUE, *FRAMEWORKS})
        assert not back, f"{module} imports {sorted(back)} at import time"


def test_flax_glue_is_imported_only_by_the_flax_adapters():
    importers = {m for m, deps in import_graph().items() if FLAX_GLUE in deps}
    assert importers == {"dropjax.linen", "dropjax.nnx"}


def test_core_modules_load_without_flax():
    code = (
        "import sys\n"
        "import dropjax, dropjax.mc, dropjax.uncertainty, dropjax.acquisition\n"
        "assert dropjax.mc.sample and dropjax.uncertainty.auroc and dropjax.acquisition.bald\n"
        "loaded = sorted(m for m in sys.modules if m == 'flax' or m.startswith('flax.'))\n"
        "assert 'flax' not in sys.modules, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu"})


def test_one_attention_fn_for_linen_and_nnx():
    pytest.importorskip("flax")
    import dropjax.linen
    import dropjax.nnx

    assert dropjax.linen.attention_fn is dropjax.nnx.attention_fn


def test_mc_flax_samplers_are_the_adapters():
    pytest.importorskip("flax")
    import dropjax.linen
    import dropjax.mc
    import dropjax.nnx
    from dropjax.mc import sample_nnx

    assert dropjax.mc.sample_linen is dropjax.linen.sample_linen
    assert sample_nnx is dropjax.nnx.sample_nnx
    assert {"sample_linen", "sample_nnx"} <= set(dir(dropjax.mc))
    with pytest.raises(AttributeError, match="no attribute 'sample_jax'"):
        _ = dropjax.mc.sample_jax
