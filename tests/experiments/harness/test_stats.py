"""The verdict rule and the power of a paired design (experiments.harness.stats)."""

import numpy as np
import pytest
import scipy.stats

from experiments.harness import stats


def _diff(lo, hi, n=4, std=0.001):
    return {"mean": (lo + hi) / 2, "std": std, "n": n, "ci_low": lo, "ci_high": hi}


@pytest.mark.parametrize(
    "lo, hi, sign, expected",
    [
        (0.0001, 0.0009, +1, "reproduced"),  # above 0
        (-0.0002, 0.0002, +1, "refuted"),  # inside (-delta, delta)
        (-0.0009, -0.0004, +1, "contradicted"),  # below 0, past -delta
        (-0.0002, -0.0001, +1, "contradicted"),  # below 0, even within -delta (no gap)
        (-0.0009, 0.0009, +1, "inconclusive"),  # too wide
        (-0.0009, -0.0001, -1, "reproduced"),  # a claimed decrease
        (0.0004, 0.0009, -1, "contradicted"),
    ],
)
def test_decide_follows_the_rule(lo, hi, sign, expected):
    d = stats.decide(_diff(lo, hi), sign, 0.0003, coverage=1.0)
    assert d["verdict"] == expected
    assert d["headline"] == expected
    partial = stats.decide(_diff(lo, hi), sign, 0.0003, coverage=0.5)
    assert partial["verdict"] == expected
    assert partial["headline"] == ("inconclusive" if expected == "inconclusive" else "indicative")
    sub = stats.decide(_diff(lo, hi), sign, 0.0003, coverage=1.0, substitute=True)
    assert sub["headline"] == (
        expected if expected == "inconclusive" else f"{expected} (SUBSTITUTE data)"
    )


def test_power_matches_a_simulation_of_the_paired_t_interval():
    rng = np.random.default_rng(0)
    delta, sd, n, sims = 0.5, 1.0, 12, 40_000
    d = rng.normal(delta, sd, size=(sims, n))
    mean, s = d.mean(1), d.std(1, ddof=1)
    lower = mean - scipy.stats.t.ppf(0.975, n - 1) * s / np.sqrt(n)
    simulated = (lower > 0).mean()
    assert stats.power(delta, sd, n) == pytest.approx(simulated, abs=0.01)


def test_pairs_needed_is_the_smallest_n_reaching_the_target():
    n = stats.pairs_needed(0.0003, 0.0008)
    assert stats.power(0.0003, 0.0008, n) >= 0.8 > stats.power(0.0003, 0.0008, n - 1)
    assert stats.pairs_needed(0.0003, float("nan")) is None


def test_combined_cells_take_the_weakest_evidence():
    rep = {"verdict": "reproduced", "coverage": 1.0, "substitute": False}
    ref = {"verdict": "refuted", "coverage": 1.0, "substitute": False}
    con = {"verdict": "contradicted", "coverage": 1.0, "substitute": False}
    assert stats.combine_decisions([rep, rep])["headline"] == "reproduced"
    assert stats.combine_decisions([rep, ref])["verdict"] == "inconclusive"
    assert stats.combine_decisions([ref, ref])["verdict"] == "refuted"
    assert stats.combine_decisions([rep, con])["verdict"] == "contradicted"
    # A conjunction ("beats B and C"): one refuted cell refutes it; contradicted still wins.
    assert stats.combine_decisions([rep, ref], every=True)["verdict"] == "refuted"
    assert stats.combine_decisions([ref, con], every=True)["verdict"] == "contradicted"
    inc = {**rep, "verdict": "inconclusive"}
    assert stats.combine_decisions([rep, inc], every=True)["verdict"] == "inconclusive"
    assert stats.combine_decisions([rep, {**rep, "coverage": 0.1}])["headline"] == "indicative"
    sub = stats.combine_decisions([rep, {**rep, "substitute": True}])
    assert sub["headline"] == "reproduced (SUBSTITUTE data)"
    assert stats.combine_decisions([])["verdict"] == "not tested"
