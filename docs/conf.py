"""Sphinx configuration for the dropjax documentation.

Build (warnings are errors; every notebook is executed):

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference is generated at every build from the ``__all__`` of ``dropjax`` and of each
public submodule (``dropjax.linen``, ``dropjax.nnx``, ``dropjax.mc``, ...): a module or a
name added to the code appears here without editing the docs, and one removed disappears.
Each module's page opens with a summary table per topic (:data:`API_TOPICS`), then the
entries in the same groups.

The benchmark pages (``docs/benchmarks/``) and the claims table of the home page are
generated from the committed ``benchmarks/results/*.md`` and ``experiments/REPORT.md``, and
the build copies the files in :data:`SERVED_FILES` to the same paths on the site, so that
README (PyPI's long description) links to all of them with absolute addresses.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import shutil
import sys
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # dropjax and experiments from this checkout
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The notebooks' kernels inherit this: eight host CPU devices, so sharding runs anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from sphinx.util import logging as sphinx_logging  # noqa: E402

import dropjax  # noqa: E402

logger = sphinx_logging.getLogger(__name__)

project = "dropjax"
author = "The dropjax authors"
copyright = "The dropjax authors, Apache-2.0"
release = dropjax.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
# _generated/ holds fragments that pages include, not pages.
exclude_patterns = [
    "_build",
    "_generated",
    "jupyter_execute",
    "Thumbs.db",
    ".DS_Store",
    "README.md",
]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}

# MyST and the notebooks: executed at every build, a failing cell fails the build.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# Docstrings are Google style.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as fields: no duplicate entries beside :members:
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Keep jax.typing.ArrayLike as one name in signatures (not its ten-member union).
autodoc_type_aliases = {
    "ArrayLike": "jax.typing.ArrayLike",
    "jax.typing.ArrayLike": "jax.typing.ArrayLike",  # as dropjax.linen/nnx spell it
}

html_theme = "furo"
html_title = f"dropjax {release}"
html_static_path: list[str] = []


# --------------------------------------------------------------------------------------------
# API reference from __all__
# --------------------------------------------------------------------------------------------

API_DIR = DOCS / "api"  # generated; git-ignored

API_TOPICS: dict[str, list[tuple[str, list[str]]]] = {
    "dropjax": [
        ("Dropout and keep-masks", ["dropout", "keep_mask", "mask_impl", "get_mask_impl"]),
        (
            "Decoupled forward/backward dropout (Gao et al. 2019)",
            [
                "decoupled_dropout",
                "forward_dropout",
                "backward_dropout",
                "augmented_dropout",
                "decoupled_call",
            ],
        ),
        ("Attention", ["dot_product_attention"]),
        (
            "Dropout variants",
            [
                "random_rate_dropout",
                "gaussian_dropout",
                "alpha_dropout",
                "spatial_dropout",
                "dropblock",
                "drop_path",
                "dropconnect",
                "dropconnect_dense",
                "concrete_dropout",
                "concrete_dropout_regularizer",
            ],
        ),
        (
            "Variational and sparse variational dropout",
            [
                "variational_dropout",
                "variational_dense",
                "variational_conv",
                "variational_log_alpha",
                "kl_kingma",
                "kl_molchanov",
                "sparsify",
                "sparsity",
            ],
        ),
        (
            "Graphs",
            [
                "edge_dropout",
                "node_dropout",
                "gcn_normalize",
                "GCNEdges",
                "EdgeDropoutResult",
                "NodeDropoutResult",
            ],
        ),
        (
            "Rate schedules and initialisers",
            [
                "constant_rate",
                "linear_rate",
                "curriculum_rate",
                "depth_rates",
                "dropout_he_normal",
                "dropout_variance_scaling",
            ],
        ),
        ("Noise back-projection (Bouthillier et al. 2015)", ["backproject", "BackprojectResult"]),
        ("Submodules", ["mc"]),
    ],
    "dropjax.mc": [
        ("Sampling over keys", ["sample", "sample_head"]),
        ("Flax models", ["sample_linen", "sample_nnx"]),
    ],
    "dropjax.uncertainty": [
        (
            "Uncertainty of Monte Carlo predictions",
            [
                "predictive_entropy",
                "expected_entropy",
                "mutual_information",
                "variation_ratio",
                "predictive_variance",
                "regression_moments",
            ],
        ),
        (
            "Likelihood and proper scores",
            [
                "negative_log_likelihood",
                "mc_negative_log_likelihood",
                "brier_score",
                "gaussian_nll",
            ],
        ),
        (
            "Calibration",
            [
                "expected_calibration_error",
                "adaptive_calibration_error",
                "classwise_calibration_error",
                "temperature_scale",
                "reliability_diagram",
            ],
        ),
        (
            "Out-of-distribution detection and selective prediction",
            ["auroc", "aupr", "fpr_at_tpr", "aurc", "accuracy_coverage_curve"],
        ),
        ("Plots", ["uncertainty_histogram"]),
    ],
    "dropjax.acquisition": [
        ("Scores", ["bald", "max_entropy", "variation_ratio", "mean_std", "margin"]),
        ("Batch acquisition", ["batch_bald", "BatchBALDResult"]),
    ],
}
"""Each module's names by topic, in reading order (a module absent here is one topic).
A public name not listed appears under "More"; a listed name that is not public fails the
build. The three adapters (linen, nnx, equinox) share :data:`ADAPTER_TOPICS`."""

ADAPTER_TOPICS: list[tuple[str, list[str]]] = [
    ("Drop-in replacements", ["Dropout", "attention_fn", "MultiheadAttention"]),
    (
        "Decoupled forward/backward dropout",
        ["DecoupledDropout", "AugmentedDropout", "DecoupledDense", "DecoupledLayer"],
    ),
    (
        "Dropout variants",
        [
            "RandomRateDropout",
            "GaussianDropout",
            "AlphaDropout",
            "SpatialDropout",
            "DropBlock",
            "DropPath",
            "DropConnectDense",
            "DropConnectLinear",
            "ConcreteDropout",
        ],
    ),
    (
        "Sparse variational dropout",
        ["VariationalDense", "VariationalLinear", "VariationalConv", "total_kl", "sparsity"],
    ),
    ("Attention", ["dot_product_attention"]),
    ("Monte Carlo dropout", ["mc_dropout", "sample"]),
]

API_GROUPS: list[tuple[str, list[str]]] = [
    ("Functional ops (`import dropjax`)", ["dropjax"]),
    ("Layers for Flax and Equinox", ["dropjax.linen", "dropjax.nnx", "dropjax.equinox"]),
    ("Monte Carlo dropout", ["dropjax.mc", "dropjax.uncertainty", "dropjax.acquisition"]),
    ("Speed", ["dropjax.cpu_conv"]),
]
"""The reference's index, by topic (a module absent here is listed last)."""


def public_modules() -> list[str]:
    """``dropjax`` and every importable public submodule (names without a leading ``_``)."""
    names = ["dropjax"]
    for info in sorted(pkgutil.iter_modules(dropjax.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"dropjax.{info.name}"
        try:
            importlib.import_module(name)
        except ImportError as err:  # an optional dependency missing: say so, do not hide it
            raise RuntimeError(f"cannot document {name}: {err}") from err
        names.append(name)
    return names


def _entry(module: types.ModuleType, name: str) -> str:
    obj = getattr(module, name)
    if isinstance(obj, types.ModuleType):
        return f"* {{doc}}`{obj.__name__} <{obj.__name__}>` (module)\n"
    if inspect.isclass(obj):
        return f"```{{eval-rst}}\n.. autoclass:: {name}\n   :members:\n```\n"
    if callable(obj):
        return f"```{{eval-rst}}\n.. autofunction:: {name}\n```\n"
    return f"```{{eval-rst}}\n.. autodata:: {name}\n   :no-value:\n```\n"


def topics(name: str, exported: list[str]) -> list[tuple[str, list[str]]]:
    """``exported`` grouped as :data:`API_TOPICS` says, every name exactly once."""
    adapter = name in ("dropjax.linen", "dropjax.nnx", "dropjax.equinox")
    listed = API_TOPICS.get(name, ADAPTER_TOPICS if adapter else [])
    if not adapter:  # the adapters share one list: each has a subset of it
        stale = sorted({n for _, group in listed for n in group} - set(exported))
        if stale:
            raise RuntimeError(
                f"docs/conf.py API_TOPICS[{name!r}] lists {stale}, which {name}.__all__ "
                "does not have: rename or remove them there"
            )
    groups = [(title, [n for n in group if n in exported]) for title, group in listed]
    groups = [(title, group) for title, group in groups if group]
    seen = {n for _, group in groups for n in group}
    rest = [n for n in exported if n not in seen]
    if rest:
        groups.append(("More" if groups else "Contents", rest))
    return groups


def _summary(obj: object) -> str:
    """The first paragraph of ``obj``'s docstring, on one line (it is reStructuredText)."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _summary_table(module: types.ModuleType, names: list[str]) -> str:
    rows = "".join(f"   * - :py:obj:`{n}`\n     - {_summary(getattr(module, n))}\n" for n in names)
    return f"```{{eval-rst}}\n.. list-table::\n   :class: api-summary\n\n{rows}```\n"


def module_page(name: str) -> str:
    module = importlib.import_module(name)
    exported = list(getattr(module, "__all__", []))
    if not exported:
        raise RuntimeError(f"{name} has no __all__: the API reference is built from it")
    groups = topics(name, exported)
    lines = [
        f"# `{name}`\n",
        f"```{{eval-rst}}\n.. automodule:: {name}\n   :no-members:\n```\n",
        f"```{{eval-rst}}\n.. currentmodule:: {name}\n```\n",
        f"## Summary\n\n{len(exported)} public names (`{name}.__all__`), by topic.\n",
    ]
    for title, group in groups:
        lines += [f"**{title}**\n", _summary_table(module, group)]
    for title, group in groups:
        lines.append(f"## {title}\n")
        lines += [_entry(module, n) for n in group]
    return "\n".join(lines)


def _module_summary(name: str) -> str:
    doc = inspect.getdoc(importlib.import_module(name)) or ""
    return (doc.strip().splitlines()[0] if doc.strip() else "").replace("|", "/")


def index_page(names: list[str]) -> str:
    grouped = [(title, [n for n in group if n in names]) for title, group in API_GROUPS]
    listed = {n for _, group in grouped for n in group}
    rest = [n for n in names if n not in listed]
    if rest:
        grouped.append(("More modules", rest))
    lines = [
        "# API reference\n",
        "Generated at every build from each module's `__all__`: one page per module, its names "
        "grouped by topic under a summary table.\n",
    ]
    for title, group in grouped:
        if not group:
            continue
        lines += [f"## {title}\n", "| module | |", "| --- | --- |"]
        lines += [f"| {{doc}}`{n} <{n}>` | {_module_summary(n)} |" for n in group]
        lines.append("")
    lines.append("```{toctree}\n:hidden:\n\n" + "\n".join(names) + "\n```\n")
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate_api(app=None) -> None:
    API_DIR.mkdir(exist_ok=True)
    names = public_modules()
    wanted = {f"{n}.md" for n in names} | {"index.md"}
    for stale in API_DIR.glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()
    for name in names:
        _write_if_changed(API_DIR / f"{name}.md", module_page(name))
    _write_if_changed(API_DIR / "index.md", index_page(names))
    adapters = [n for n in ("dropjax.linen", "dropjax.nnx", "dropjax.equinox") if n in names]
    public = set().union(*(importlib.import_module(n).__all__ for n in adapters))
    stale = sorted({n for _, group in ADAPTER_TOPICS for n in group} - public)
    if stale:
        raise RuntimeError(f"docs/conf.py ADAPTER_TOPICS lists {stale}, which no adapter has")


# --------------------------------------------------------------------------------------------
# Results: the benchmark tables, the claims table, and files served at their repository path
# --------------------------------------------------------------------------------------------

BENCH_RESULTS = ROOT / "benchmarks" / "results"
BENCH_DIR = DOCS / "benchmarks"  # generated: one page per results table; git-ignored
GENERATED_DIR = DOCS / "_generated"  # generated fragments that pages include; git-ignored
REPORT = ROOT / "experiments" / "REPORT.md"

SERVED_FILES = (
    "LICENSE",
    "CITATION.cff",
    "benchmarks/results/*.png",
    "benchmarks/results/*.json",
    "experiments/results/*/*.png",
    "experiments/results/*/*.json",
)
"""Copied at the end of every HTML build to ``<site>/<the same path>``."""


def _bench_page(path: Path) -> str:
    lines = path.read_text().splitlines()
    title = lines[0].lstrip("#").strip() if lines and lines[0].startswith("#") else path.stem
    source = f"benchmarks/results/{path.name}"
    page = [
        f"# {title}\n",
        f"The table in `{source}`, as the command it names wrote it.\n",
    ]
    figure = path.with_suffix(".png")
    if figure.exists():
        page.append(f"![{title}](../../benchmarks/results/{figure.name})\n")
    start = 1 if lines and lines[0].startswith("#") else 0
    page.append(f"```{{include}} ../../{source}\n:start-line: {start}\n```\n")
    return "\n".join(page)


def _bench_index(paths: list[Path]) -> str:
    rows = []
    for path in paths:
        first = path.read_text().splitlines()[:1]
        title = first[0].lstrip("#").strip() if first and first[0].startswith("#") else path.stem
        rows.append(f"| {{doc}}`{path.stem}` | {title.replace('|', '/')} |")
    return "\n".join(
        [
            "# Benchmarks\n",
            "dropjax measured side by side with stock JAX and Flax (and the experiment harness "
            "with PyTorch). Each page is one committed table of `benchmarks/results/`, with "
            "the command that wrote it; `python -m benchmarks` refreshes them.\n",
            "| table | |",
            "| --- | --- |",
            *rows,
            "",
            "```{toctree}\n:hidden:\n\n" + "\n".join(p.stem for p in paths) + "\n```\n",
        ]
    )


def _report_summary() -> str:
    """The claims table of ``experiments/REPORT.md`` (the lines under its ``## Summary``)."""
    lines = REPORT.read_text().splitlines()
    start = lines.index("## Summary") + 1
    table = []
    for line in lines[start:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if not table:
        raise RuntimeError(f"{REPORT} has no table under '## Summary'")
    return "\n".join(table) + "\n"


def generate_results(app=None) -> None:
    BENCH_DIR.mkdir(exist_ok=True)
    paths = sorted(BENCH_RESULTS.glob("*.md"))
    wanted = {f"{p.stem}.md" for p in paths} | {"index.md"}
    for stale in BENCH_DIR.glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()
    for path in paths:
        _write_if_changed(BENCH_DIR / f"{path.stem}.md", _bench_page(path))
    _write_if_changed(BENCH_DIR / "index.md", _bench_index(paths))
    GENERATED_DIR.mkdir(exist_ok=True)
    _write_if_changed(GENERATED_DIR / "claims.md", _report_summary())


def serve_repository_files(app, exception) -> None:
    """Copies :data:`SERVED_FILES` into the built site at their repository paths."""
    if exception is not None or app.builder.format != "html":
        return
    for pattern in SERVED_FILES:
        for path in sorted(ROOT.glob(pattern)):
            target = Path(app.outdir) / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _dropjax_references_resolve(app, env, node, contnode):
    """A reference to a dropjax name that resolves nowhere is a warning (an error under -W),
    so a renamed or removed function cannot leave a dead link in the prose."""
    target = node.get("reftarget", "")
    if node.get("refdomain") == "py" and target.split(".")[0] == "dropjax":
        if not target.startswith("dropjax._src"):  # private paths in annotations
            logger.warning(f"unresolved reference to {target}", location=node)
    return None


def setup(app):
    app.connect("builder-inited", generate_api)
    app.connect("builder-inited", generate_results)
    app.connect("build-finished", serve_repository_files)
    app.connect("missing-reference", _dropjax_references_resolve)
    return {"parallel_read_safe": True}
