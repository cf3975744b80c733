"""Sphinx configuration for the dropjax documentation.

Build (warnings are errors; every notebook is executed):

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference is generated at every build from the ``__all__`` of ``dropjax`` and of each
public submodule (``dropjax.linen``, ``dropjax.nnx``, ``dropjax.mc``, ...): a module or a
name added to the code appears here without editing the docs, and one removed disappears.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
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
exclude_patterns = ["_build", "jupyter_execute", "Thumbs.db", ".DS_Store", "README.md"]
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
autodoc_type_aliases = {"ArrayLike": "jax.typing.ArrayLike"}

html_theme = "furo"
html_title = f"dropjax {release}"
html_static_path: list[str] = []


# --------------------------------------------------------------------------------------------
# API reference from __all__
# --------------------------------------------------------------------------------------------

API_DIR = DOCS / "api"  # generated; git-ignored


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


def module_page(name: str) -> str:
    module = importlib.import_module(name)
    exported = list(getattr(module, "__all__", []))
    if not exported:
        raise RuntimeError(f"{name} has no __all__: the API reference is built from it")
    lines = [
        f"# `{name}`\n",
        f"```{{eval-rst}}\n.. automodule:: {name}\n   :no-members:\n```\n",
        f"```{{eval-rst}}\n.. currentmodule:: {name}\n```\n",
        f"{len(exported)} public names (`{name}.__all__`).\n",
    ]
    lines += [_entry(module, n) for n in exported]
    return "\n".join(lines)


def index_page(names: list[str]) -> str:
    rows = []
    for name in names:
        doc = inspect.getdoc(importlib.import_module(name)) or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        rows.append(f"| {{doc}}`{name} <{name}>` | {summary.replace('|', '/')} |")
    return "\n".join(
        [
            "# API reference\n",
            "Generated at every build from each module's `__all__`.\n",
            "| module | |",
            "| --- | --- |",
            *rows,
            "",
            "```{toctree}\n:hidden:\n\n" + "\n".join(names) + "\n```\n",
        ]
    )


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
    app.connect("missing-reference", _dropjax_references_resolve)
    return {"parallel_read_safe": True}
