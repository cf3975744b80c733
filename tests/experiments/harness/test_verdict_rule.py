"""The decision rule (experiments.harness.stats.verdict), its error rates and Holm's intervals.

Boundaries are checked from a table; error rates against a simulation of the paired design
(numpy draws, the interval built by hand); Holm's levels against the textbook step-down.
"""

import numpy as np
import pytest
import scipy.stats

from experiments.harness import stats

DELTA = 0.01

# (lo, hi) -> verdict at delta = 0.01: every boundary of the rule, both sides of it.
TABLE = [
    ((0.001, 0.02), "reproduced"),
    ((0.001, 0.01), "reproduced"),  # hi == delta: as large as claimed
    ((0.001, 0.0099), "reproduced-smaller"),
    ((0.0, 0.02), "inconclusive"),  # lo == 0 is not above 0
    ((0.0, 0.005), "refuted"),
    ((-0.005, 0.0099), "refuted"),
    ((-0.005, 0.01), "inconclusive"),
    ((-0.005, 0.0), "refuted"),  # hi == 0: not below 0
    ((-0.005, -1e-9), "contradicted"),
    ((-0.0063 - 0.0028, -0.0035), "contradicted"),  # claim 12's pooled cell: within -delta
    ((-0.2, -0.1), "contradicted"),
    ((-0.2, 0.2), "inconclusive"),
    ((float("nan"), 0.1), "inconclusive"),
]


@pytest.mark.parametrize("interval, expected", TABLE)
def test_verdict_boundaries(interval, expected):
    assert stats.verdict(*interval, DELTA) == expected


def test_old_rule_kept_for_rendering_has_the_gap():
    # The rule the old results were decided under: below 0 but within delta read "refuted".
    assert stats.RULES["gap-2026-11"](-0.009, -0.0035, DELTA) == "refuted"
    assert stats.RULES["monotone-2026-12"](-0.009, -0.0035, DELTA) == "contradicted"


# What each verdict asserts about the true effect e: a narrower interval must assert at least
# as much (its verdict implies every statement of the wider one's).
IMPLIES = {
    "reproduced": {"e>0"},
    "reproduced-smaller": {"e>0", "e<delta"},
    "refuted": {"e<delta"},
    "contradicted": {"e<0", "e<delta"},
    "inconclusive": set(),
}


def test_verdict_is_monotone_in_the_interval():
    """A narrower interval (inside a wider one) never gets a weaker verdict."""
    rng = np.random.default_rng(0)
    edges = np.concatenate([rng.uniform(-0.03, 0.03, 400), [0.0, DELTA, -DELTA]])
    for _ in range(3000):
        lo, hi = np.sort(rng.choice(edges, 2))
        a, b = np.sort(rng.choice(np.concatenate([[lo, hi], rng.uniform(lo, hi, 2)]), 2))
        wide, narrow = stats.verdict(lo, hi, DELTA), stats.verdict(a, b, DELTA)
        assert IMPLIES[wide] <= IMPLIES[narrow], (lo, hi, a, b, wide, narrow)


def test_verdict_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        stats.verdict(0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        stats.verdict(1.0, 0.0, 0.5)


def _simulate(mu, sd, n, delta, draws, rng):
    d = rng.normal(mu, sd, (draws, n))
    mean, s = d.mean(1), d.std(1, ddof=1)
    half = scipy.stats.t.ppf(0.975, n - 1) * s / np.sqrt(n)
    verdicts = [stats.verdict(m - h, m + h, delta) for m, h in zip(mean, half, strict=True)]
    v = np.array(verdicts)
    return np.isin(v, ["reproduced", "reproduced-smaller"]).mean(), (v == "refuted").mean()


# The last case is claim 1's scale: a narrow law of s that a careless integral misses.
@pytest.mark.parametrize("sd, n, delta", [(1.0, 4, 1.0), (0.6, 10, 1.0), (2.5e-4, 20, 3e-4)])
def test_error_rates_match_a_simulation(sd, n, delta):
    rng, draws = np.random.default_rng(1), 20_000
    rates = stats.error_rates(delta, sd, n)
    rep_delta, ref_delta = _simulate(delta, sd, n, delta, draws, rng)
    _, ref_zero = _simulate(0.0, sd, n, delta, draws, rng)
    tol = 4 * np.sqrt(0.25 / draws)  # 4 binomial SDs at worst
    assert rates["p_reproduce_delta"] == pytest.approx(rep_delta, abs=tol)
    assert rates["p_refute_zero"] == pytest.approx(ref_zero, abs=tol)
    assert rates["p_refute_delta"] == pytest.approx(ref_delta, abs=tol)


def test_error_rates_nan_without_spread():
    assert all(np.isnan(v) for v in stats.error_rates(1.0, 0.0, 4).values())
    assert all(np.isnan(v) for v in stats.error_rates(1.0, 1.0, 1).values())


def test_holm_levels_follow_the_step_down():
    # p-values 0.001 (rank 0, alpha/3), 0.04 (rank 1, alpha/2: not rejected), 0.01 ...
    n = 8
    t = lambda p: scipy.stats.t.isf(p / 2, n - 1)
    diffs = [{"mean": t(p), "std": np.sqrt(n), "n": n} for p in (0.001, 0.04, 0.01)]
    intervals = stats.holm(diffs)
    # sorted p: 0.001 at 0.05/3, 0.01 at 0.05/2 (rejected), 0.04 at 0.05/1 (rejected)
    for (lo, hi), d, a in zip(intervals, diffs, (0.05 / 3, 0.05, 0.05 / 2), strict=True):
        half = scipy.stats.t.ppf(1 - a / 2, n - 1)
        assert lo == pytest.approx(d["mean"] - half) and hi == pytest.approx(d["mean"] + half)


def test_decide_reports_the_error_rates_and_the_rule():
    diff = {"mean": -0.006, "std": 0.003, "n": 6, "ci_low": -0.009, "ci_high": -0.0035}
    d = stats.decide(diff, +1, DELTA, coverage=1.0)
    assert d["verdict"] == "contradicted" and d["rule"] == "monotone-2026-12"
    assert d["p_refute_zero"] == pytest.approx(stats.error_rates(DELTA, 0.003, 6)["p_refute_zero"])
    old = stats.decide(diff, +1, DELTA, coverage=1.0, rule="gap-2026-11")
    assert old["verdict"] == "refuted"


def test_a_stored_decision_is_read_under_the_current_rule():
    """Claim 12's pooled DropBlock − standard, -0.0063 [-0.0091, -0.0035] against δ = 0.01,
    was called refuted by the gap rule; entirely below 0, it is contradicted now."""
    from experiments.harness.stats import CURRENT_RULE, verdict_now

    old = {
        "verdict": "refuted",
        "delta": 0.01,
        "difference": {"ci_low": -0.0091, "ci_high": -0.0035},
    }
    assert verdict_now(old).startswith("contradicted (decided refuted under the rule gap-2026-11")
    assert verdict_now({**old, "rule": CURRENT_RULE}) == "refuted"  # decided now: as stored
    # Claimed sign -1: the interval is mirrored first ([+0.0035, +0.0091] is below -δ..).
    assert verdict_now({**old, "verdict": "reproduced-smaller"}, claimed_sign=-1) == (
        "reproduced-smaller"
    )


def test_the_spec_record_says_when_the_rule_changed_after_the_data():
    from experiments.harness.stats import Contrast, DecisionSpec, spec_hash, spec_record

    spec = DecisionSpec({"a": ("b beats a", "every")}, (Contrast("a", "b", "a", "x", 1, 0.01),), 4)
    other = DecisionSpec({"a": ("b beats a", "all")}, spec.contrasts, 4)
    rec = spec_record({"k": spec}, {"k": {"hash": spec_hash(other), "recorded": "t"}})
    assert rec["changed"] and rec["specs"]["k"]["at_start"] == spec_hash(other) != spec_hash(spec)
    none = spec_record({"k": spec}, {})
    assert not none["changed"] and not none["at_start_recorded"]
