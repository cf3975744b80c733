"""The random_dropout_mlp experiment (claim 4, Bouthillier et al. 2015 Fig. 6 and Fig. 1):
the smoke preset end to end with its evidence, the paired comparison against a difference
recomputed from the arms' curves, the dropped-proportion laws against integrated binomials
and explicit masks, and the verdict rule at partial and full protocol coverage."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

import dropjax
from experiments.catalog import claims
from experiments.claims import random_dropout_mlp as rdm
from tests.experiments.smoke import PNG, run_preset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_preset(tmp_path_factory.mktemp("random_dropout_mlp"), rdm.NAME)


def test_smoke_writes_results_evidence_and_figures(smoke):
    _, path, out_dir = smoke
    assert path == out_dir / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert "seed 002" in results["source"] and results["claim"]
    assert results["seeds"] == [0, 1]
    assert results["figures"] == ["smoke_error_vs_noise.png", "smoke_dropped_proportion.png"]
    for name in results["figures"]:
        assert (out_dir / name).read_bytes()[:8] == PNG
    ev = results["evidence"]
    assert ev["coverage"] == pytest.approx(1 / 651) and ev["data"] == "SUBSTITUTE"
    assert ev["delta"] == rdm.DELTA and ev["pairs"] == 2
    # 1 of 651 epochs: a decided interval is only indicative; an inconclusive one stays so.
    interval = results["decision"]["verdict"]
    assert results["verdict"] == ("inconclusive" if interval == "inconclusive" else "indicative")
    table = claims()[rdm.NAME].render(results)
    assert "|---|" in table and f"**{results['verdict']}**" in table


def test_smoke_paired_difference_recomputed_from_the_curves(smoke):
    results = smoke[0]["results"]
    assert set(results["summary"]) == set(rdm.settings(rdm.PRESETS["smoke"]))
    best = results["comparisons"]["best random vs best dropout"]
    assert best["standard"] == results["best"]["standard"]

    def errors(key):  # last evaluation's test accuracy per replica -> error %
        return 100.0 * (1.0 - np.asarray(results["arms"][key]["curves"][-1]["test_acc"]))

    d = errors(best["random"]) - errors(best["standard"])
    half = scipy.stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    got = best["difference"]
    assert got["mean"] == pytest.approx(d.mean())
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_smoke_dropped_proportion(smoke):
    dropped = smoke[0]["results"]["dropped_proportion"]
    units = {name: row["units"] for name, row in dropped["layers"].items()}
    assert units == {"Figure 1": 100, "input": 64, "hidden 1": 32, "hidden 2": 16}
    p, draws = dropped["rate"], dropped["draws"]
    for row in dropped["layers"].values():
        n = row["units"]
        # standard: mean p, sd sqrt(p q / N); random: mean p / 2 and a far wider spread
        assert abs(row["standard"]["mean"] - p) < 5 * np.sqrt(p * (1 - p) / n / draws)
        sd_random = np.sqrt(p * p / 12 + (p / 2 - p * p / 3) / n)
        assert abs(row["random_rate"]["mean"] - p / 2) < 5 * sd_random / np.sqrt(draws)
        assert row["random_rate"]["std"] > 1.3 * row["standard"]["std"]
        for scheme in rdm.SCHEMES:
            assert row[scheme]["ks_to_analytic"] < 1.5 * dropped["ks_critical_1pct"], scheme


def test_dropped_pmf_matches_integrated_binomials():
    n, p = 20, 0.3
    pmf = rdm.dropped_pmf(n, p)
    k = np.arange(n + 1)
    binom = np.array([math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in k])
    np.testing.assert_allclose(pmf["standard"], binom, rtol=1e-10, atol=1e-15)
    mixture = [
        scipy.integrate.quad(lambda r, i=i: math.comb(n, i) * r**i * (1 - r) ** (n - i), 0, p)[0]
        / p
        for i in k
    ]
    np.testing.assert_allclose(pmf["random_rate"], mixture, rtol=1e-7, atol=1e-14)
    for scheme, m in rdm.dropped_moments(n, p).items():
        frac = k / n
        mean = float(np.sum(frac * pmf[scheme]))
        std = float(np.sqrt(np.sum((frac - mean) ** 2 * pmf[scheme])))
        assert m["mean"] == pytest.approx(mean, rel=1e-9)
        assert m["std"] == pytest.approx(std, rel=1e-9)


def test_dropped_counts_are_the_masks_zeros():
    keys = jax.random.split(jax.random.key(3), 5)
    n, p = 50, 0.4
    std, rnd = (np.asarray(c) for c in rdm._figure1._dropped_counts(jnp.stack([keys, keys]), n, p))
    for i, key in enumerate(keys):
        assert std[i] == n - int(dropjax.keep_mask(key, (n,), p).sum())
        # random_rate_dropout's documented recipe: rho = p * U(rate_key), mask at rho
        rate_key, mask_key = jax.random.split(key)
        rho = p * jax.random.uniform(rate_key, (), jnp.float32)
        assert rnd[i] == n - int(dropjax.keep_mask(mask_key, (n,), rho).sum())


def test_random_dropout_grid_merges_shared_points():
    preset = rdm.PRESETS["quick"]
    grid = rdm.settings(preset)
    # sweeps (a) and (b) share (0.2, 0.5); random has its own three arms; U(0, x) has mean
    # rate x / 2, so dropout at 0.1, 0.25 and 0.4 is added for x = 0.2, 0.5, 0.8
    assert len(rdm.sweeps(preset)) == 3 + 3 - 1 + 3
    assert len(grid) == 3 + 3 - 1 + 3 + 3
    assert grid["dropout in 0.2 hid 0.5"] == ("standard", 0.2, 0.5)
    assert grid["random [0,0.8]"] == ("random_rate", 0.8, 0.8)
    assert grid["dropout in 0.25 hid 0.25"] == ("standard", 0.25, 0.25)


def test_matched_mean_rate_arms_are_compared_but_never_picked_as_best_dropout():
    """Hand-made errors: the x / 2 arm is the lowest of all dropout arms, yet the best
    dropout setting comes from Figure 6's sweeps; random [0, 0.5] − dropout 0.25/0.25 is
    2.0 − 1.0 = +1.0 pp in every replica."""
    preset = rdm.PRESETS["quick"]
    errors = {k: [3.0, 3.0, 3.0, 3.0] for k in rdm.settings(preset)}
    errors["dropout in 0.25 hid 0.25"] = [1.0, 1.0, 1.0, 1.01]
    errors["random [0,0.5]"] = [2.0, 2.0, 2.0, 2.01]
    summary = {k: rdm.stats.mean_std(v) for k, v in errors.items()}
    out = rdm.decide(errors, summary, preset, substitute=False)
    assert out["best"]["standard"] in rdm.sweeps(preset)
    mean = out["comparisons"]["random [0,0.5] vs dropout 0.25/0.25 (matched mean rate)"]
    assert mean["difference"]["mean"] == pytest.approx(1.0)
    assert mean["verdict"] == "contradicted"  # random is worse, the claim says better
    labels = list(out["comparisons"])
    assert not any("matched level" in label for label in labels)
    assert "random [0,0.5] vs dropout 0.5/0.5 (same upper end: mean rates 0.25 vs 0.5)" in labels
    spec = rdm.spec_for("quick")
    assert {c.base for c in spec.contrasts if c.claim == "matched mean rate"} == {
        "dropout in 0.1 hid 0.1",
        "dropout in 0.25 hid 0.25",
        "dropout in 0.4 hid 0.4",
    }
    paper = rdm.PRESETS["paper"]
    assert paper.epochs == 501 and len(paper.input_sweep) == 8 and len(paper.random_sweep) == 9


# ------------------------------------------------------------------------ verdict rule
def _errors(standard, random):
    """Test errors (%) of two arms of the smoke grid, four paired replicas."""
    grid = list(rdm.settings(rdm.PRESETS["smoke"]))
    std_key = next(k for k in grid if k.startswith("dropout"))
    rnd_key = next(k for k in grid if k.startswith("random"))
    errors = {std_key: standard, rnd_key: random}
    return errors, {k: {"mean": float(np.mean(v))} for k, v in errors.items()}


@pytest.mark.parametrize("epochs", [4, 651])
def test_decide_is_indicative_below_full_coverage(epochs):
    preset = dataclasses.replace(rdm.PRESETS["smoke"], epochs=epochs)
    # Random dropout 0.3 pp better on every replica: the interval lies below 0.
    errors, summary = _errors([1.30, 1.25, 1.35, 1.28], [1.00, 0.96, 1.04, 0.99])
    d = rdm.decide(errors, summary, preset, substitute=False)
    assert d["decision"]["verdict"] == "reproduced"
    assert d["evidence"]["coverage"] == pytest.approx(epochs / 651)
    assert d["verdict"] == ("reproduced" if epochs == 651 else "indicative")
    # No difference at all, tightly measured: refuted at full coverage, indicative below.
    errors, summary = _errors([1.30, 1.25, 1.35, 1.28], [1.301, 1.249, 1.352, 1.279])
    d = rdm.decide(errors, summary, preset, substitute=False)
    assert d["decision"]["verdict"] == "refuted"
    assert d["verdict"] == ("refuted" if epochs == 651 else "indicative")
    # Too wide to tell: the interval is inconclusive, and so is the headline.
    errors, summary = _errors([1.0, 2.0, 1.0, 2.0], [2.0, 1.0, 2.0, 1.0])
    d = rdm.decide(errors, summary, preset, substitute=False)
    assert d["decision"]["verdict"] == "inconclusive"
    assert d["verdict"] == "inconclusive"


def test_an_interrupted_run_keeps_finished_arms_and_resumes_the_one_in_flight(
    smoke, tmp_path, monkeypatch
):
    """Stopped by its budget at the second arm's checkpoint, then rerun: the first arm is
    read back, not trained again; the second resumes from its checkpoint; every arm ends
    with the uninterrupted run's numbers."""
    from experiments.harness.budget import Budget, BudgetExhausted

    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    calls = {"n": 0}

    def stop_at_second_arm(self, step, entry):
        calls["n"] += 1
        if calls["n"] == 2:
            raise BudgetExhausted("simulated end of session")

    with monkeypatch.context() as m:
        m.setattr(Budget, "callback", stop_at_second_arm)
        with pytest.raises(BudgetExhausted):
            run_preset(tmp_path / "out", rdm.NAME)
    kept = list((tmp_path / "runs").rglob("arm.json"))
    assert [p.parent.name for p in kept] == ["arm00"]
    saved = json.loads(kept[0].read_text())
    payload, _, _ = run_preset(tmp_path / "out", rdm.NAME)
    arms, reference = payload["results"]["arms"], smoke[0]["results"]["arms"]
    first, second = list(rdm.settings(rdm.PRESETS["smoke"]))[:2]
    assert arms[first] == saved  # read back, wall times included: not trained again
    assert arms[second]["resumed_from"] is not None
    for key, arm in reference.items():
        assert arms[key]["final"] == arm["final"], key
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # cleaned up
