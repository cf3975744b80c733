"""experiments.harness.results and the command line: results files, their layout, and
every module's examples."""

from __future__ import annotations

import doctest
import json
import os
from pathlib import Path

import pytest

from experiments import catalog
from experiments.__main__ import main
from experiments.harness import results as results_io

# --------------------------------------------------------------------------- CLI, results


def test_cli_list_prints_names_first(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = set(catalog.claims())
    assert "lenet_mnist" in names
    assert len(lines) == len(names)
    for line in lines:
        name, description = line.split(maxsplit=1)
        assert name in names and description.strip()


def test_cli_smoke_run_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DROPJAX_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "out"
    assert main(["lenet_mnist", "--preset", "smoke", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 0.5 | 0.9922 | 0.9925 |" in printed  # the paper's Table 3 row, side by side
    path = out / "lenet_mnist" / "smoke.json"
    payload = json.loads(path.read_text())
    env = payload["environment"]
    for key in ("device_kind", "device_count", "jax", "flax", "git_commit", "python"):
        assert key in env
    assert env["device_count"] == 8 and payload["wall_time_s"] > 0
    results = payload["results"]
    assert results["seeds"] == [0, 1]
    assert results["data"]["name"] == "digits" and results["data"]["source"]
    assert results["data"]["input_shape"] == [28, 28, 1]
    for arm in ("standard", "augmented", "augmented_elementwise"):
        replicas = results["arms"][arm]["0.5"]
        assert len(replicas["final"]["test_acc"]) == 2
        assert [c["step"] for c in replicas["curves"]] == [10, 20]
    comparison = results["comparisons"]["augmented"]["0.5"]
    assert comparison["verdict"] in ("reproduced", "refuted", "contradicted", "inconclusive")
    assert comparison["coverage"] == pytest.approx(20 / 12000)
    assert comparison["headline"] in ("indicative", "inconclusive")  # 0.2 % of the protocol
    assert payload["status"] == "complete" and len(payload["grid"]["cells"]) == 3
    for cell in payload["grid"]["cells"].values():
        assert cell["environment"]["git_commit"] == env["git_commit"]
    assert (out / "lenet_mnist" / "smoke_accuracy_loss.png").stat().st_size > 0
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # no checkpoint left


def test_results_write_is_atomic(tmp_path):
    path = tmp_path / "exp" / "smoke.json"
    results_io.write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        results_io.write_json_atomic(path, {"big": list(range(10_000)), "bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}  # the old file, untouched
    assert sorted(os.listdir(path.parent)) == ["smoke.json"]  # no temp file left behind
    fresh = tmp_path / "other" / "quick.json"
    with pytest.raises(TypeError):
        results_io.write_json_atomic(fresh, {"bad": object()})
    assert not fresh.exists() and os.listdir(fresh.parent) == []


def _experiments_modules() -> list[str]:
    import pkgutil

    import experiments

    found = pkgutil.walk_packages(experiments.__path__, "experiments.")
    return sorted(m.name for m in found if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", _experiments_modules())
def test_docstring_examples(name):
    """Every module of experiments/ (harness, claims, catalog, report): its examples run."""
    import importlib

    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failures, _ = doctest.testmod(module, optionflags=flags)
    assert failures == 0


def test_results_path_layout():
    assert results_io.results_path(Path("o"), "lenet_mnist", "quick") == Path(
        "o/lenet_mnist/quick.json"
    )
