"""Tests for experiments.lenet_mnist (claim 1): the paper's numbers and the grid's cells.

The grid machinery itself (resume, --cells, locking) is tested in tests/test_harness.py with
this experiment as its vehicle; its smoke run in tests/test_distributed.py.
"""

from __future__ import annotations

from experiments.lenet_mnist import PAPER_TABLE3, PRESETS, cells


def test_paper_numbers_are_table_3():
    assert [PAPER_TABLE3["standard"][r] for r in (0.1, 0.2, 0.3, 0.4, 0.5)] == [
        0.9916,
        0.9922,
        0.9918,
        0.9917,
        0.9922,
    ]
    assert [PAPER_TABLE3["augmented"][r] for r in (0.1, 0.2, 0.3, 0.4, 0.5)] == [
        0.9918,
        0.9923,
        0.9925,
        0.9920,
        0.9925,
    ]


def test_paper_grid_pairs_every_rate_and_puts_the_elementwise_arm_last():
    preset = PRESETS["paper"]
    grid = cells(preset, list(range(4)))
    ids = [c.id for c in grid]
    primary = [
        f"rate={r:g}/arm={a}/seeds=0-3" for r in preset.rates for a in ("standard", "augmented")
    ]
    assert ids[: len(primary)] == primary  # the paired arms first, rate by rate
    assert all("elementwise" in i for i in ids[len(primary) :])
    assert len(ids) == len(set(ids)) == 15
    assert all(c.params["seeds"] == [0, 1, 2, 3] for c in grid)


def test_a_run_stopped_after_the_primary_cells_draws_fig3_and_reports_them(tmp_path, monkeypatch):
    """--cells leaves the elementwise arm to another process: the run exits 75 (incomplete),
    still draws the figure from the finished paired cells, and the report's partial view
    of the file is final (not interim) and shows that figure."""
    import json

    from experiments.__main__ import main
    from experiments.report import load_results

    monkeypatch.setenv("DROPJAX_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "out"
    args = ["lenet_mnist", "--preset", "smoke", "--quiet", "--out", str(out)]
    assert main([*args, "--cells", "arm=(standard|augmented)/"]) == 75
    payload = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert payload["status"] == "partial" and sorted(payload["grid"]["cells"]) == [
        "rate=0.5/arm=augmented/seeds=0-1",
        "rate=0.5/arm=standard/seeds=0-1",
    ]
    assert (out / "lenet_mnist" / "smoke_accuracy_loss.png").stat().st_size > 0
    shown = load_results(out, "lenet_mnist")
    assert shown["partial"] == "2/3 cells"
    assert shown["results"]["interim"] is False
    assert shown["results"]["figure"] == "smoke_accuracy_loss.png"
    assert shown["results"]["comparisons"]["augmented"]["0.5"]["difference"]["n"] == 2
