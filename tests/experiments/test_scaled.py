"""The ``scaled`` preset: declared scaled-down protocols for claims whose paper protocol
cannot run on a CPU (claims 4 and 5). The CLI accepts it only where a claim declares one;
its verdict is decided at that protocol and says so; a run whose curves have not flattened
stays indicative (the convergence check recomputed here from the arms' curves)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from experiments import catalog
from experiments.__main__ import main
from experiments.claims import backprojection as bp
from experiments.claims import random_dropout_mlp as rdm
from experiments.harness import stats
from experiments.harness.protocols import converged


def test_only_the_declared_claims_have_a_scaled_preset(capsys):
    for name in catalog.NAMES:
        assert ("scaled" in catalog.claim(name).presets) == (name in catalog.SCALED), name
    with pytest.raises(SystemExit) as stop:
        main(["lenet_mnist", "--preset", "scaled"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "lenet_mnist has no scaled preset" in err and "random_dropout_mlp" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


def test_scaled_presets_are_declared_with_their_spec():
    p4, p5 = rdm.PRESETS["scaled"], bp.PRESETS["scaled"]
    assert p4.scaled and p5.scaled and not rdm.PRESETS["paper"].scaled
    assert rdm.spec_for("scaled").pairs == p4.replicas == 4
    assert bp.spec_for("scaled").pairs == p5.replicas == 4
    # matched mean rate: every random range [0, x] has its dropout arm at x / 2
    arms = rdm.settings(p4)
    for x in p4.random_sweep:
        assert ("standard", x / 2, x / 2) in {
            (k, round(a, 4), round(b, 4)) for k, a, b in arms.values()
        }
    assert rdm.protocol_coverage(p4) == pytest.approx(100 / 651 * 10_000 / 60_000)
    for reason in (rdm.SCALED_REASON, bp.SCALED_REASON):
        assert "same question" in reason and "Converged means flat" in reason


def test_decided_at_a_scaled_protocol():
    diff = {"mean": -0.5, "std": 0.1, "n": 4, "ci_low": -0.66, "ci_high": -0.34}
    plain = stats.decide(diff, -1, 0.1, coverage=0.03)
    scaled = stats.decide(diff, -1, 0.1, coverage=0.03, scaled=True)
    assert plain["verdict"] == scaled["verdict"] == "reproduced"
    assert plain["headline"] == "indicative"
    assert scaled["headline"] == "reproduced (decided at a scaled protocol)"
    both = stats.combine_decisions([scaled, scaled])
    assert both["headline"] == "reproduced (decided at a scaled protocol)"
    inconclusive = {**diff, "ci_high": 0.2}
    assert stats.decide(inconclusive, -1, 0.1, coverage=0.03, scaled=True)["headline"] == (
        "inconclusive"
    )


def test_converged_against_the_curves_by_hand():
    rng = np.random.default_rng(0)
    curves = rng.uniform(0.9, 1.0, size=(8, 3))  # 8 evaluations x 3 replicas
    arm = {"curves": [{"test_acc": row.tolist()} for row in curves]}
    out = converged({"a": arm}, 3, 0.1)
    error = 100 * (1 - curves.mean(1))
    assert out["arms"]["a"]["change"] == pytest.approx(
        error[-3:].mean() - error[-6:-3].mean(), abs=1e-4
    )
    assert out["arms"]["a"]["flat"] == (abs(error[-3:].mean() - error[-6:-3].mean()) < 0.1)
    flat = {"curves": [{"test_acc": [0.95, 0.951]}] * 6}
    assert converged({"f": flat}, 3, 0.1) == {
        "arms": {"f": {"change": 0.0, "flat": True}},
        "all_flat": True,
    }
    assert converged({"short": flat}, 4, 0.1)["arms"]["short"] == {"change": None, "flat": False}


def test_a_scaled_run_is_decided_at_it_and_checked_for_convergence():
    """The committed quick run's arms decided as if they were a scaled run: every decided
    headline says "decided at a scaled protocol", the convergence check is recomputed from
    each arm's curves, and a run that has not flattened stays indicative."""
    path = Path(__file__).resolve().parents[2] / "experiments/results/random_dropout_mlp"
    results = json.loads((path / "quick.json").read_text())["results"]
    preset = dataclasses.replace(rdm.PRESETS["quick"], scaled=True)
    errors, summary = rdm.summarise(results["arms"], preset)
    decided = {**results, **rdm.decide(errors, summary, preset, substitute=False)}
    for comp in decided["comparisons"].values():
        assert comp["headline"] == "inconclusive" or comp["headline"].endswith(
            "(decided at a scaled protocol)"
        )
    checked = rdm.scaled_check(decided, preset)
    flat = checked["scaled"]
    assert flat["reason"] == rdm.SCALED_REASON and set(flat["arms"]) == set(results["arms"])
    for key, arm in results["arms"].items():
        acc = np.array([c["test_acc"] for c in arm["curves"]]).mean(-1)
        last = preset.average_last
        if len(acc) < 2 * last:
            assert flat["arms"][key] == {"change": None, "flat": False}
        else:
            change = 100 * (acc[-2 * last : -last].mean() - acc[-last:].mean())
            assert flat["arms"][key]["change"] == pytest.approx(change, abs=1e-4)
    assert checked["verdict"] == (
        decided["verdict"] if flat["all_flat"] else "indicative (not converged)"
    )
    text = rdm.render(checked)
    assert "Scaled protocol:" in text and "Converged (" in text
