"""experiments.harness.cells: grids of resumable cells (budget, fingerprint, several
processes)."""

from __future__ import annotations

import json

import pytest

from experiments.__main__ import main


def test_interrupted_grid_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys):
    """A run stopped by its time budget mid-cell, then rerun, ends where an uninterrupted
    run ends: finished cells are kept, the cell in flight resumes from its checkpoint."""
    from experiments.harness.budget import Budget, BudgetExhausted

    monkeypatch.setenv("DROPJAX_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    args = ["lenet_mnist", "--preset", "smoke", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "lenet_mnist" / "smoke.json").read_text())

    calls = {"n": 0}

    def stop_in_second_cell(self, step, entry):
        calls["n"] += 1
        if calls["n"] == 3:  # cell 1 has two segments; stop after cell 2's first checkpoint
            raise BudgetExhausted("simulated end of session")

    out = tmp_path / "split"
    with monkeypatch.context() as m:
        m.setattr(Budget, "callback", stop_in_second_cell)
        assert main([*args, "--out", str(out)]) == 75
    partial = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert partial["status"] == "partial" and partial["cells_done"] == 1
    assert any(p.is_file() for p in (tmp_path / "runs").rglob("*"))  # the checkpoint
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 0
    resumed = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert resumed["status"] == "complete"
    for cell_id, cell in whole["grid"]["cells"].items():
        again = resumed["grid"]["cells"][cell_id]["result"]
        assert again["final"] == cell["result"]["final"], cell_id
        assert [c["test_acc"] for c in again["curves"]] == [
            c["test_acc"] for c in cell["result"]["curves"]
        ]
    assert (
        resumed["grid"]["cells"]["rate=0.5/arm=augmented/seeds=0-1"]["result"]["resumed_from"] == 10
    )
    assert resumed["results"]["pooled"] == whole["results"]["pooled"]

    # --forget removes finished cells (and only those); the next run trains them again,
    # to the same numbers.
    capsys.readouterr()
    assert main([*args, "--out", str(out), "--forget", "arm=standard/"]) == 0
    assert "removed 1 cells" in capsys.readouterr().out
    forgot = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert forgot["status"] == "partial" and forgot["cells_done"] == 2
    assert (
        forgot["cells_total"] == 3
        and "rate=0.5/arm=standard/seeds=0-1" not in forgot["grid"]["cells"]
    )
    assert main([*args, "--out", str(out)]) == 0
    again = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert again["status"] == "complete"
    assert (
        again["grid"]["cells"]["rate=0.5/arm=standard/seeds=0-1"]["result"]["final"]
        == (whole["grid"]["cells"]["rate=0.5/arm=standard/seeds=0-1"]["result"]["final"])
    )
    with pytest.raises(SystemExit):  # no such results file: a usage error that says so
        main([*args, "--out", str(tmp_path / "none"), "--forget", "x"])
    assert "no results file" in capsys.readouterr().err


def test_a_grid_refuses_cells_of_another_configuration(tmp_path):
    from experiments.harness.cells import Cell, Grid

    path = tmp_path / "x" / "paper.json"
    grid = Grid("x", "paper", path, {"lr": 0.1}, checkpoint_root=tmp_path / "ck", quiet=True)
    grid.run([Cell("a", {"v": 1})], lambda cell, ckpt, budget: {"value": cell.params["v"]})
    assert json.loads(path.read_text())["grid"]["cells"]["a"]["result"] == {"value": 1}
    with pytest.raises(ValueError, match="another configuration"):
        Grid("x", "paper", path, {"lr": 0.2}, checkpoint_root=tmp_path / "ck")
    again = Grid("x", "paper", path, {"lr": 0.1}, checkpoint_root=tmp_path / "ck", quiet=True)
    ran = []
    again.run(
        [Cell("a", {"v": 1}), Cell("b", {"v": 2})],
        lambda cell, ckpt, budget: ran.append(cell.id) or {"value": cell.params["v"]},
    )
    assert ran == ["b"]  # the finished cell is skipped


def test_two_processes_split_a_grid_into_one_results_file(tmp_path):
    """Disjoint --cells patterns, same results file: each run merges the other's cells, and
    a run whose selection is done while others remain says so (resumable stop)."""
    from experiments.harness.budget import BudgetExhausted
    from experiments.harness.cells import Cell, Grid

    path = tmp_path / "x" / "paper.json"
    cells = [Cell(f"arm={a}", {"a": a}) for a in ("standard", "augmented")]

    def grid(only):
        return Grid("x", "paper", path, {"lr": 1}, checkpoint_root=tmp_path / "c", only=only,
                    quiet=True)  # fmt: skip

    first, second = grid("standard"), grid("augmented")  # both opened before either ran
    with pytest.raises(BudgetExhausted, match="other cells"):
        first.run(cells, lambda cell, ckpt, budget: {"v": cell.params["a"]})
    done = second.run(cells, lambda cell, ckpt, budget: {"v": cell.params["a"]})
    assert done == {"arm=standard": {"v": "standard"}, "arm=augmented": {"v": "augmented"}}
    on_disk = json.loads(path.read_text())["grid"]["cells"]
    assert set(on_disk) == {"arm=standard", "arm=augmented"}  # neither write lost the other
