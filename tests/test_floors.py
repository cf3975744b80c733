"""pyproject.toml's lower bounds are the floors that .ci/run's floors job installs and tests.

.ci/floors.txt pins the lowest jax, jaxlib, numpy, flax and equinox on which the library's
tests pass (found by trying); every requirement in pyproject.toml that names one of them
must have exactly that lower bound, so what is declared is what is tested.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _floors() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f".ci/floors.txt pins exact versions: {line!r}"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def test_pyproject_lower_bounds_are_the_tested_floors() -> None:
    floors = _floors()
    assert set(floors) == {"jax", "jaxlib", "numpy", "flax", "equinox"}
    assert floors["jaxlib"] == floors["jax"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    named: dict[str, set[str]] = {}
    for group, requirements in groups.items():
        for text in requirements:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name not in floors:
                continue
            lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
            assert lower == [floors[name]], (
                f"pyproject.toml [{group}] {text!r}: the floor is {name}>={floors[name]} "
                "(.ci/floors.txt)"
            )
            named.setdefault(name, set()).add(group)
    assert {"jax", "numpy"} <= set(named) and "dependencies" in named["jax"] & named["numpy"]
    assert "flax" in named["flax"] and "equinox" in named["equinox"]


def test_readme_and_getting_started_state_the_floors() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    stated = [*project["dependencies"], *extras["flax"], *extras["equinox"]]
    for page in ("README.md", "docs/getting_started.md"):
        text = (ROOT / page).read_text()
        for requirement in stated:
            assert f"`{requirement}`" in text, f"{page} does not state `{requirement}`"


def test_ci_installs_the_floors() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c .ci/floors.txt" in ci
