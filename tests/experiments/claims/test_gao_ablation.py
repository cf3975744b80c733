"""Smoke runs of the Gao et al. experiments (Tables 1-2 ablation, Tables 4-5) and their
not-run path when the data are missing."""

from __future__ import annotations

import pytest

from tests.experiments.smoke import run_checked

VERDICTS = {"reproduced", "not reproduced", "inconclusive", "not tested"}


def test_ablation_smoke(tmp_path, data_dir):
    from experiments.claims.gao_ablation import PAPER, render

    payload, out = run_checked(tmp_path, "gao_ablation")
    results = payload["results"]
    assert results["seeds"] == [0, 1] and results["data"]["name"] == "digits"
    part = results["parts"]["table1"]
    assert part["rates"] == [0.3, 0.005]
    assert len(part["runs"]["plain"]["final"]["test_acc"]) == 2
    for arm in ("standard", "forward", "backward"):
        assert set(part["summary"][arm]) == {"0.3", "0.005"}
    from experiments.claims.gao_ablation import ALL_CLAIMS

    assert set(results["claims"]) == set(ALL_CLAIMS)  # (a)-(c) and every stated contrast
    # 16 of the paper's 9,000 iterations: no headline may say reproduced/refuted.
    assert set(results["claims"].values()) <= {"indicative", "inconclusive", "not tested"}
    assert results["verdict"].startswith(("indicative", "inconclusive", "mixed"))
    # Coverage: the paper's iterations run x Table 1's cells run (plain + 3 arms x 2 rates).
    assert results["evidence"]["coverage"] == pytest.approx(16 / 9000 * 7 / 19)
    for claim in part["claims"].values():
        for cell in claim["cells"]:
            assert cell["delta"] > 0 and 0 <= cell["power"] <= 1
            assert cell["difference"]["n"] == 2
    assert (out / results["figure"]).stat().st_size > 0
    text = render(results)
    assert "| 0.3 | 0.7579 |" in text and "0.6908" in text  # the paper's Table 1, side by side
    assert PAPER["table2"]["standard"]["0.1"] == 0.9193


def test_ablation_paper_plans_the_substitute_protocol():
    """Without CIFAR-10 the paper preset trains Table 1's full protocol on Fashion-MNIST at
    the three rates the sub-claims name (0.05 last), plain first, 2 seeds a cell."""
    from experiments.claims.gao_ablation import PAD_CROP_FLIP, PRESETS, cells, plan, stages

    preset = PRESETS["paper"]
    parts = plan(preset, "fashion_mnist", substitute=True)
    table1 = parts[0]
    assert table1.rates == (0.3, 0.005, 0.05) and table1.train.iterations == 9000
    assert table1.train.lr_boundaries == (4000,) and table1.train.learning_rate == 0.001
    ids = [c.id for c in cells(table1, [0, 1, 2, 3])]
    assert len(ids) == len(set(ids)) == 2 * (1 + 3 * 3)  # two seed groups of two
    first = ["plain"] + [
        f"{a}@{r}" for r in ("0.3", "0.005") for a in ("standard", "forward", "backward")
    ]
    expected = [f"table1/{n}/seeds={g}" for g in ("0-1", "2-3") for n in first]
    expected += [
        f"table1/{a}@0.05/seeds={g}"
        for g in ("0-1", "2-3")
        for a in ("standard", "forward", "backward")
    ]
    assert ids == expected  # the sub-claims' rates for all seeds before the extra rate
    assert plan(preset, "cifar10", substitute=False)[0].rates == (0.3, 0.2, 0.1, 0.05, 0.01, 0.005)
    table2 = parts[1]  # ResNet-20: augmented, full test set, never run on a CPU-only machine
    assert table2.model == "resnet20" and table2.test_subset is None
    assert table2.augmentation == PAD_CROP_FLIP and table2.needs_accelerator
    subset = parts[2]  # the over-fitting substitute: control cells first, then the sub-claims
    assert subset.train_subset == 5000 and subset.id == "table1_fmnist5k"
    assert not plan(preset, "cifar10", substitute=False)[-1].train_subset
    first, second, third = stages(subset, [0, 1, 2, 3])
    assert [c.id for c in first] == [
        f"table1_fmnist5k/{n}/seeds={g}" for g in ("0-1", "2-3") for n in ("plain", "standard@0.05")
    ]
    rates = lambda stage: {c.params["rate"] for c in stage}
    assert rates(second) == {0.05, 0.3, 0.2, 0.005} and len(second) == 2 * (3 * 4 - 1)
    assert rates(third) == {0.1, 0.01} and len(third) == 2 * 6
    # The third regime: the 2,000 images again, on its own 12 fresh seeds (never the preset's),
    # its control first, decided on 12 pairs with the substitute's control.
    from experiments.claims.gao_ablation import SPEC_SUBSET, spec_for

    fresh = parts[4]
    assert fresh.id == "table1_fmnist2k_fresh" and fresh.train_subset == 2000
    head = stages(fresh, [0, 1, 2, 3])[0]
    assert [c.id for c in head] == [
        f"table1_fmnist2k_fresh/{n}/seeds={g}-{g + 1}"
        for g in range(100, 112, 2)
        for n in ("plain", "standard@0.05")
    ]
    assert spec_for(fresh).pairs == 12 and spec_for(fresh).control == SPEC_SUBSET.control
    assert spec_for(parts[3]).pairs == SPEC_SUBSET.pairs  # the 2k regime keeps its spec
    assert "seeds" not in parts[3].config() and fresh.config()["seeds"] == tuple(range(100, 112))


def test_claims_are_decided_against_the_papers_effects():
    from experiments.claims.gao_ablation import SPEC_SUBSET, evaluate_claims
    from experiments.harness.stats import combine

    plain = [0.70, 0.71, 0.72, 0.73]
    jitter = [0.0, 0.001, -0.001, 0.0005]
    up = lambda d: {s: v + d + jitter[s] for s, v in enumerate(plain)}
    finals = {
        "plain": dict(enumerate(plain)),
        "standard": {"0.3": up(0.10), "0.005": up(0.0)},
        "forward": {"0.3": up(-0.10), "0.005": up(0.0)},
        "backward": {"0.3": up(0.01), "0.005": up(0.02)},
    }
    decide = lambda f, **kw: evaluate_claims(f, coverage=kw.get("coverage", 1.0))["claims"]
    claims = decide(finals)
    assert [c["verdict"] for c in claims["a"]["cells"]] == ["reproduced", "reproduced"]
    assert claims["a"]["headline"] == "reproduced"
    assert claims["b"]["verdict"] == "reproduced"  # forward - plain < 0 at 0.3
    assert claims["c"]["verdict"] == "reproduced"  # backward - plain > 0 at 0.005
    # Table 1's effects: standard - forward at 0.3 is 0.7523 - 0.6908.
    assert claims["a"]["cells"][0]["delta"] == pytest.approx(0.0615)
    # No effect at all where the paper has one: refuted (interval inside (-delta, delta)).
    flat = {**finals, "backward": {"0.3": up(0.01), "0.005": up(0.0)}}
    assert decide(flat)["c"]["verdict"] == "refuted"
    # (a) asserts both comparisons: standard no better than backward at 0.3 (paper's effect
    # 0.009) refutes (a), although standard beats forward.
    tie = {**finals, "backward": {"0.3": up(0.10), "0.005": up(0.02)}}
    a = decide(tie)["a"]
    assert [c["verdict"] for c in a["cells"]] == ["reproduced", "refuted"]
    assert a["verdict"] == "refuted"
    # The other side: contradicted.
    worse = {**finals, "backward": {"0.3": up(0.01), "0.005": up(-0.02)}}
    assert decide(worse)["c"]["verdict"] == "contradicted"
    short = decide(finals, coverage=0.1)
    assert short["a"]["verdict"] == "reproduced" and short["a"]["headline"] == "indicative"
    no_large = {arm: {"0.005": v["0.005"]} for arm, v in finals.items() if arm != "plain"}
    assert decide({**no_large, "plain": finals["plain"]})["a"]["verdict"] == "not tested"
    assert combine(["reproduced", "inconclusive"]) == "inconclusive"  # Tables 4-5 (legacy)
    # The over-fitting substitute's positive control: standard - plain at 0.05 (+0.0068).
    gain = {**finals, "standard": {**finals["standard"], "0.05": up(0.008)}}
    assert evaluate_claims(gain, SPEC_SUBSET)["control_passed"] is True
    none = {**finals, "standard": {**finals["standard"], "0.05": up(0.0)}}
    decided = evaluate_claims(none, SPEC_SUBSET)
    assert decided["control_passed"] is False and decided["control"]["verdict"] == "refuted"
    # With fewer pairs than the spec plans, the control is pending, not failed.
    two = {
        arm: ({s: v for s, v in d.items() if s < 2} if arm == "plain" else d)
        for arm, d in gain.items()
    }
    two["standard"] = {**gain["standard"], "0.05": {s: v for s, v in up(0.008).items() if s < 2}}
    assert evaluate_claims(two, SPEC_SUBSET)["control_passed"] is None


def test_rule_changed_after_data_is_rendered_under_both_specs():
    """The committed full-substitute cells ran under the gap rule (reconstructed): a
    re-summary under the current spec also shows the verdicts under that rule."""
    import json
    from pathlib import Path

    from experiments.claims.gao_ablation import partial, render

    path = Path(__file__).parents[3] / "experiments/results/gao_ablation/paper.json"
    payload = json.loads(path.read_text())
    results = partial({**payload, "status": "partial"})
    part = results["parts"]["table1"]
    assert part["spec"]["hash"] != part["spec"]["at_start"]
    assert not part["spec"]["at_start_recorded"]
    assert part["at_start"]["rule"] == "gap-2026-11"
    assert "**Rule changed after data.**" in render(results)
    # The over-fitting part's cells (landing as this file grows) recorded their spec first.
    sub = results["parts"].get("table1_fmnist5k", {})
    if sub.get("status") != "not run" and sub:
        assert sub["spec"]["at_start_recorded"] and sub["spec"]["hash"] == sub["spec"]["at_start"]


def test_the_headline_rests_on_the_first_over_fitting_regime_whose_control_passes():
    from experiments.claims.gao_ablation._cells import _main_part, _regimes_note

    def part(key, passed, subset):
        diff = {"mean": 0.004, "ci_low": -0.002, "ci_high": 0.01, "n": 4}
        return {
            "key": key,
            "control_passed": passed,
            "train_subset": subset,
            "control": {"difference": diff},
        }

    full = {"key": "table1", "control_passed": None}
    failed, pending = part("table1_fmnist5k", False, 5000), part("table1_fmnist2k", None, 2000)
    assert _main_part({"table1": full})["key"] == "table1"
    # the failed regime is the headline (not decided) until the next one's control is decided
    assert _main_part({"table1": full, **{p["key"]: p for p in (failed, pending)}}) is failed
    passed = part("table1_fmnist2k", True, 2000)
    assert _main_part({"table1": full, **{p["key"]: p for p in (failed, passed)}}) is passed
    note = _regimes_note({p["key"]: p for p in (failed, passed)})
    assert "`table1_fmnist5k` (first 5000 training images): positive control **failed**" in note
    assert "`table1_fmnist2k` (first 2000 training images): positive control **passed**" in note


def test_end_of_run_drift_is_read_from_the_curves():
    """A hand-built run whose loss falls before the drop and climbs after it: the minimum,
    the rise, the first evaluation after the drop, and the paired contrasts at three points
    (hand-computed: differences 0.10 / 0.20 at step 3, 0.30 / 0.40 at the end)."""
    import dataclasses

    from experiments.claims.gao_ablation._drift import arm_drift, drift
    from experiments.claims.gao_ablation._protocol import SPEC

    def run(losses, accs):
        curves = [
            {"step": s, "train_loss": [loss, loss], "test_acc": list(a)}
            for s, loss, a in zip((1, 2, 3, 4), losses, accs, strict=True)
        ]
        return {"seeds": [0, 1], "curves": curves, "final": {"test_acc": list(accs[-1])}}

    plain = run([1.0, 0.5, 0.4, 0.4], [(0.5, 0.5), (0.7, 0.7), (0.9, 0.9), (0.9, 0.95)])
    fwd = run([2.0, 1.0, 0.5, 1.5], [(0.4, 0.4), (0.6, 0.6), (0.8, 0.7), (0.6, 0.55)])
    d = arm_drift(fwd, drop=2)
    assert (d["loss_min_step"], d["after_drop_step"], d["drifts"]) == (3, 3, True)
    assert d["loss_rise"] == pytest.approx(2.0) and d["rise_before_drop"] == 0.0
    assert d["acc_after_drop"] == pytest.approx(0.75) and d["acc_final"] == pytest.approx(0.575)
    assert not arm_drift(plain, drop=2)["drifts"]
    spec = dataclasses.replace(SPEC, contrasts=SPEC.contrasts[2:3])  # forward - plain @ 0.3
    out = drift({"plain": plain, "forward": {"0.3": fwd}}, {"lr_boundaries": [2]}, spec)
    (c,) = out["contrasts"]
    assert c["comparison"] == "forward - plain @ 0.3"
    assert c["after_drop"]["mean"] == pytest.approx(-0.15)  # (-0.1 - 0.2) / 2
    assert c["final"]["mean"] == pytest.approx(-0.35)  # (-0.3 - 0.4) / 2
    assert c["best"]["mean"] == pytest.approx(-0.175)  # bests 0.8/0.7 vs 0.9/0.95


def test_the_partial_view_says_why_a_part_needing_an_accelerator_did_not_run():
    """The report's view of a grid in flight (its partial hook) gives ResNet-20's Table 2 the
    reason the run itself gives on a CPU-only machine, not "no finished cell yet"."""
    import json

    from experiments.claims.gao_ablation import partial
    from experiments.harness.results import PUBLISHED

    payload = json.loads((PUBLISHED / "gao_ablation" / "paper.json").read_text())
    table2 = partial(payload)["parts"]["table2"]
    assert table2["status"] == "not run" and "needs an accelerator" in table2["reason"]


def test_partial_view_gives_each_regime_its_own_seeds():
    """An unfinished run with cells of a regime on its own fresh seeds (Part.seeds): the
    report's partial view shows every other part with the run's seeds, that regime with its
    own, and counts each part's grid from them."""
    import json
    from pathlib import Path

    from experiments.claims import gao_ablation as ga

    path = Path(__file__).resolve().parents[3] / "experiments/results/gao_ablation/paper.json"
    payload = json.loads(path.read_text())
    if payload["status"] == "complete":
        pytest.skip("the committed paper run is complete: no partial view to render")
    preset = ga.PRESETS["paper"]
    declared = {p.id: p for p in (*preset.parts, *preset.substitute_parts)}
    fresh = [p for p in declared.values() if p.seeds]
    assert fresh, "the paper preset declares a regime on fresh seeds"
    results = ga.partial(payload)
    for key, part in results["parts"].items():
        if part.get("status") == "not run":
            continue
        own = list(declared[key].seeds)
        assert part["seeds"] == (own or [0, 1, 2, 3]), key
        if declared[key].train_subset:  # the over-fitting regimes: every rate, own seeds
            assert part["cells_total"] == len(ga.cells(declared[key], [0, 1, 2, 3])), key
    text = ga.render(results)
    assert "4 paired replicas (seeds [0, 1, 2, 3])" in text
    if any(p.id in results["parts"] and "seeds" in results["parts"][p.id] for p in fresh):
        assert "12 paired replicas (seeds [100, 101," in text
