"""experiments.harness.stats (verdicts of analytic claims): the interval-vs-tolerance checks, the
verdicts of identities and mismatches, and the design power against scipy's laws."""

import doctest

import numpy as np
import pytest
import scipy.stats

from experiments.harness import stats


def _ci(lo, hi, sd=0.1, n=8):
    return {"mean": (lo + hi) / 2, "std": sd, "n": n, "ci_low": lo, "ci_high": hi}


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [(-0.04, 0.04, "within"), (0.06, 0.2, "outside"), (-0.3, -0.06, "outside"),
     (0.01, 0.2, "undecided"), (-0.2, 0.2, "undecided"), (None, None, "undecided")],
)  # fmt: skip
def test_check_against_the_tolerance(lo, hi, want):
    assert stats.tolerance_check({"ci_low": lo, "ci_high": hi}, 0.05) == want


def test_identity_and_mismatch_verdicts_are_mirror_images():
    inside, outside = _ci(-0.01, 0.01), _ci(0.2, 0.3)
    assert stats.decide_tolerance(inside, 0.05, claim="identity")["verdict"] == "reproduced"
    assert stats.decide_tolerance(outside, 0.05, claim="identity")["verdict"] == "refuted"
    assert stats.decide_tolerance(inside, 0.05, claim="mismatch")["verdict"] == "refuted"
    assert stats.decide_tolerance(outside, 0.05, claim="mismatch")["verdict"] == "reproduced"
    both = [stats.decide_tolerance(c, 0.05, claim="identity") for c in (inside, _ci(-0.1, 0.1))]
    assert stats.combine_tolerance(both)["verdict"] == "inconclusive"
    assert stats.combine_tolerance(both)["checks"] == 2
    below = stats.decide_tolerance(inside, 0.05, claim="identity", coverage=0.5)
    assert below["verdict"] == "reproduced" and below["headline"] == "indicative"


def test_verdict_of_checks():
    assert stats.tolerance_verdict(["within"] * 3) == "reproduced"
    assert stats.tolerance_verdict(["within", "undecided"]) == "inconclusive"
    assert stats.tolerance_verdict(["undecided", "outside"]) == "refuted"
    assert stats.tolerance_verdict(["outside", "outside"], "mismatch") == "reproduced"
    assert stats.tolerance_verdict(["outside", "within"], "mismatch") == "refuted"
    assert stats.tolerance_verdict([]) == "inconclusive"


def test_docstring_examples():
    from experiments.harness.stats import _tolerance

    failures, tried = doctest.testmod(_tolerance, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def test_power_matches_scipy():
    tol, sd, n = 0.1, 0.08, 6
    crit = scipy.stats.t.ppf(0.975, n - 1)
    want = 2 * scipy.stats.norm.cdf(np.sqrt(n) * tol / sd - crit) - 1
    assert stats.tolerance_power("identity", tol, sd, n) == pytest.approx(want)
    # mismatch: the interval clears tol when the true gap is 2 tol (noncentral t)
    want = scipy.stats.nct.sf(crit, n - 1, tol * np.sqrt(n) / sd)
    assert stats.tolerance_power("mismatch", tol, sd, n) == pytest.approx(want)
    assert stats.tolerance_power("identity", tol, 0.0, n) == 1.0
    assert np.isnan(stats.tolerance_power("identity", tol, sd, 1))
