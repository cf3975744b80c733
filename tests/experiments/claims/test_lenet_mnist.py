"""Tests for experiments.claims.lenet_mnist (claim 1): the paper's numbers and the grid's cells.

The grid machinery itself (resume, --cells, locking) is tested in tests/test_harness.py with
this experiment as its vehicle; its smoke run in tests/experiments/harness/test_multihost.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments.claims.lenet_mnist import PAPER_TABLE3, PRESETS, cells


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
    assert all("elementwise" in i for i in ids[len(primary) : 15])
    # Then the controls at rate 0.5: the null arm (fresh masks) and two backward rates.
    assert ids[15:] == [
        f"rate=0.5/arm={a}/seeds=0-3"
        for a in ("standard_fresh", "augmented_b0.01", "augmented_b0.1")
    ]
    assert len(ids) == len(set(ids)) == 18
    assert all(c.params["seeds"] == [0, 1, 2, 3] for c in grid)


def test_controls_train_what_they_claim():
    """The null arm is standard dropout with fresh masks (salt 1), the positive controls
    augmented dropout with backward rates 0.01 and 0.1; decisions pair them with standard."""
    from experiments.claims import lenet_mnist as m
    from experiments.harness.models import DropoutConfig

    assert m._dropout("standard_fresh", 0.5) == DropoutConfig("standard", 0.5, 0.0)
    assert m._dropout("augmented_b0.1", 0.5) == DropoutConfig("augmented", 0.5, 0.1)
    assert m.CONTROLS["standard_fresh"][2] == 1 and m.CONTROLS["augmented_b0.1"][2] == 0
    rng = np.random.default_rng(0)
    base = 0.99 + 0.001 * rng.standard_normal(4)
    run = lambda values: {"seeds": [0, 1, 2, 3], "final": {"test_acc": list(values)}}
    arms = {
        "standard": {"0.5": run(base)},
        "augmented": {"0.5": run(base + 0.0004 + 1e-5 * rng.standard_normal(4))},
        "augmented_elementwise": {},
        "standard_fresh": {"0.5": run(base + 1e-5 * rng.standard_normal(4))},
        "augmented_b0.01": {"0.5": run(base - 0.002 + 1e-4 * rng.standard_normal(4))},
        "augmented_b0.1": {"0.5": run(base - 0.01 + 1e-4 * rng.standard_normal(4))},
    }
    preset = dataclasses.replace(m.PRESETS["paper"], rates=(0.5,))
    out = m.decide({"arms": arms}, preset, "mnist")
    assert out["controls"]["null"]["verdict"] == "refuted"  # below δ: a quiet noise floor
    assert [c["verdict"] for c in out["controls"]["positive"]] == ["contradicted"] * 2
    assert out["controls"]["passed"] is True
    # The per-rate cell uses Table 3's own δ at 0.5 (0.9925 - 0.9922), the pooled the mean.
    assert out["comparisons"]["augmented"]["0.5"]["delta"] == pytest.approx(0.0003)
    assert m._delta(0.1) == pytest.approx(0.0002) and m._delta(0.3) == pytest.approx(0.0007)


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
