"""The wheel and sdist a user gets: built, checked by twine, installed into a clean venv.

The build runs once per session from a copy of the sources (``python -m build
--no-isolation``: no network, and nothing written into the working tree). The clean venv
(``python -m venv --without-pip``, no system site-packages) gets the wheel from pip with
``--no-deps --no-index``; its dependencies come from *this* environment, but only those
``importlib.metadata`` says are needed: the closure of the wheel's own ``Requires-Dist``
(the core: jax, numpy and what they need), linked into a folder the venv sees through a
``.pth`` file. So the first import runs with exactly the core dependencies, and flax is not
importable; a second folder adds the closure of ``flax`` for ``dropjax.linen`` and
``dropjax.nnx``. ``pip check`` in the venv confirms the core closure satisfies the wheel.
This keeps the test offline and fast; resolving jax from the registry instead would fetch
hundreds of MB per run and test the registry more than the wheel.
"""

from __future__ import annotations

import email.parser
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import dropjax

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "MANIFEST.in", "README.md", "LICENSE", "dropjax")


def _run(*cmd, cwd=None, env=None) -> str:
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Builds the sdist and the wheel once, from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    out = tmp / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src)
    (wheel,) = out.glob("dropjax-*.whl")
    (sdist,) = out.glob("dropjax-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "tmp": tmp}


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode()), zf.namelist()


def test_twine_check_passes(dist) -> None:
    out = _run(sys.executable, "-m", "twine", "check", "--strict", dist["wheel"], dist["sdist"])
    assert out.count("PASSED") == 2


def test_metadata_has_one_version_licence_urls_and_core_deps(dist) -> None:
    meta, names = _metadata(dist["wheel"])
    assert meta["Version"] == dropjax.__version__  # the one place the version is written
    assert dist["wheel"].name == f"dropjax-{dropjax.__version__}-py3-none-any.whl"
    assert meta["License-Expression"] == "Apache-2.0"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta.get_all("Project-URL")
    assert "Programming Language :: Python :: 3" in meta.get_all("Classifier")
    core = {Requirement(r).name for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert core == {"jax", "numpy"}
    extras = set(meta.get_all("Provides-Extra"))
    assert {"flax", "test", "docs", "tfds", "tensorboard"} <= extras
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)


def _closure(requirements: list[str]) -> set[str]:
    """Installed distributions needed by ``requirements`` (markers evaluated, no extras)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in seen:
            continue
        seen.add(name)
        dist = md.distribution(req.name)
        assert dist.version in req.specifier or not req.specifier, (req, dist.version)
        todo += [Requirement(r) for r in dist.requires or []]
    return seen


def _link_distributions(names: set[str], folder: Path) -> None:
    """Symlinks each distribution's top-level files and its dist-info into ``folder``."""
    folder.mkdir()
    for name in names:
        dist = md.distribution(name)
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops:
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            target = folder / top
            if not target.exists() and (base / top).exists():
                target.symlink_to(base / top)


def test_wheel_imports_with_core_deps_only_then_with_flax(dist) -> None:
    tmp = dist["tmp"]
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(
        _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip()
    )
    meta, _ = _metadata(dist["wheel"])
    core_reqs = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    core = _closure(core_reqs)
    assert "flax" not in core and {"jax", "jaxlib", "numpy"} <= core
    _link_distributions(core, tmp / "core")
    (site / "core.pth").write_text(str(tmp / "core") + "\n")
    pip = (sys.executable, "-m", "pip", "--python", python, "--disable-pip-version-check")
    _run(*pip, "install", "--quiet", "--no-deps", "--no-index", dist["wheel"])
    _run(*pip, "check")  # the core closure satisfies the installed wheel's requirements

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["JAX_PLATFORMS"] = "cpu"
    core_check = f"""
import importlib.util, sys
import jax, jax.numpy as jnp
import dropjax
assert dropjax.__file__.startswith({str(site)!r}), dropjax.__file__
assert importlib.util.find_spec("flax") is None, "flax is importable: not a core-only venv"
y = dropjax.dropout(jax.random.key(0), jnp.ones((64,)), 0.5)
assert set(y.tolist()) <= {{0.0, 2.0}} and 0 < int((y == 0).sum()) < 64
assert "flax" not in sys.modules
for name in dropjax.__all__:
    getattr(dropjax, name)
import importlib, pkgutil
core_modules = [m.name for m in pkgutil.iter_modules(dropjax.__path__)
                if not m.name.startswith("_") and m.name not in ("equinox", "linen", "nnx")]
assert "mc" in core_modules and "uncertainty" in core_modules, core_modules
for name in core_modules:  # mc, uncertainty, acquisition, ...: jax and numpy only
    importlib.import_module("dropjax." + name)
assert "flax" not in sys.modules
try:
    import dropjax.linen
except ImportError as err:
    assert "flax" in str(err), err
else:
    raise AssertionError("dropjax.linen imported without flax")
print("core ok")
"""
    assert "core ok" in _run(python, "-c", core_check, cwd=tmp, env=env)

    with_flax = _closure(["flax"]) - core
    _link_distributions(with_flax, tmp / "flax")
    (site / "flax.pth").write_text(str(tmp / "flax") + "\n")
    flax_check = """
import jax, jax.numpy as jnp
import dropjax.linen, dropjax.nnx
from flax import nnx
layer = dropjax.linen.Dropout(rate=0.5)
x = jnp.ones((4, 8))
y = layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
assert y.shape == x.shape and set(y.ravel().tolist()) <= {0.0, 2.0}
drop = dropjax.nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=2))
assert drop(x).shape == x.shape
print("flax ok")
"""
    assert "flax ok" in _run(python, "-c", flax_check, cwd=tmp, env=env)
