"""Shared by the experiments' tests: run a preset end to end into a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.catalog import claim
from experiments.harness.claim import execute
from experiments.harness.results import RunContext

PNG = b"\x89PNG\r\n\x1a\n"
"""The first bytes of every PNG file."""


def run_preset(root: Path, name: str, preset: str = "smoke") -> tuple[dict[str, Any], Path, Path]:
    """Runs experiment ``name``'s ``preset`` quietly into ``root / name``; returns the
    results payload, the results file and the experiment's folder."""
    out_dir = Path(root) / name
    ctx = RunContext(name=name, preset=preset, out_dir=out_dir, quiet=True)
    payload, path = execute(claim(name), ctx)
    return payload, path, out_dir


def run_checked(root: Path, name: str, preset: str = "smoke") -> tuple[dict[str, Any], Path]:
    """:func:`run_preset` into ``root / "out"``, checking that the results file is where the
    layout says and holds the returned verdict; returns the payload and the folder."""
    payload, path, out_dir = run_preset(Path(root) / "out", name, preset)
    assert path == Path(root) / "out" / name / f"{preset}.json"
    assert json.loads(path.read_text())["results"]["verdict"] == payload["results"]["verdict"]
    return payload, out_dir


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty data cache, with no user folder for the datasets that need one."""
    monkeypatch.setenv("DROPJAX_DATA", str(tmp_path / "data"))
    for var in ("DROPJAX_CIFAR10_DIR", "DROPJAX_CIFAR100_DIR", "DROPJAX_SVHN_DIR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "data"
