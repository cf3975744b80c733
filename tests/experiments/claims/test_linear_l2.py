"""The linear_l2 experiment (claim 6): the smoke preset end to end with its evidence, the
closed forms against explicit-mask enumeration and scikit-learn, and the verdict rule on
made-up summaries."""

import itertools
import json

import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import Ridge

from experiments.catalog import claims
from experiments.claims import linear_l2 as lin
from tests.experiments.smoke import PNG, run_preset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_preset(tmp_path_factory.mktemp("linear_l2"), "linear_l2")


def test_smoke_writes_results_evidence_and_figure(smoke):
    _, path, out_dir = smoke
    assert path == out_dir / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert "seed 000" in results["source"] and results["claim"]
    assert results["figure"] == "smoke_linear_l2.png"
    assert (out_dir / results["figure"]).read_bytes()[:8] == PNG
    ev = results["evidence"]
    assert ev["coverage"] == 1.0 and ev["data"] == "real" and ev["pairs"] == 3
    assert ev["delta"] == lin.RATIO_MARGIN and 0.0 <= ev["power"] <= 1.0
    assert results["verdict"] == "reproduced"
    keys = ["n", "d", "rates", "seeds", "steps", "masks_per_step", "mc_masks", "seed_list"]
    assert list(results["config"]) == keys and results["config"]["seed_list"] == [0, 1, 2]
    table = claims()["linear_l2"].render(results)
    assert table.startswith("|") and "**reproduced**" in table


def test_smoke_identities_against_sklearn_and_independent_lambda(smoke):
    results = smoke[0]["results"]
    for ps in results["per_seed"]:
        x, y, _ = lin.make_data(ps["seed"], results["config"]["n"], results["config"]["d"])
        for row in ps["rows"]:
            p = row["rate"]
            w_sk = Ridge(alpha=x.shape[0] * p / (1 - p), fit_intercept=False).fit(x, y).coef_
            np.testing.assert_allclose(row["w_marginalized"], w_sk, rtol=1e-8, atol=1e-10)
            # Dropout-trained weights are ridge weights with lambda near p/(1-p), not p.
            assert row["lambda_hat"] / (p / (1 - p)) == pytest.approx(1.0, abs=0.1)
    for row in results["summary"]:
        assert row["mc_abs_z_max"] < 6.0


# ----------------------------------------------------------------------- closed forms
def _enumerated_expectation(x, y, w, rate):
    """E over every per-entry mask of the sum-form loss and of the normal equations."""
    n, d = x.shape
    q = 1 - rate
    loss, gram, rhs = 0.0, np.zeros((d, d)), np.zeros(d)
    for bits in itertools.product((0, 1), repeat=n * d):
        m = np.array(bits, float).reshape(n, d)
        prob = np.prod(np.where(m == 1, q, rate))
        xt = x * m / q
        loss += prob * np.sum((y - xt @ w) ** 2)
        gram += prob * xt.T @ xt
        rhs += prob * xt.T @ y
    return loss, np.linalg.solve(gram, rhs)


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_marginalized_loss_and_solution_match_enumeration(rate):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 3))
    y = rng.normal(size=3)
    w = rng.normal(size=3)
    loss, w_star = _enumerated_expectation(x, y, w, rate)
    np.testing.assert_allclose(lin.marginalized_loss(x, y, w, rate), loss, rtol=1e-12)
    np.testing.assert_allclose(lin.marginalized_solution(x, y, rate), w_star, rtol=1e-10)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.7])
def test_standardized_marginal_solution_is_sklearn_ridge(rate):
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(40, 4)) @ rng.normal(size=(4, 4))
    x = (raw - raw.mean(0)) / raw.std(0)
    y = x @ rng.normal(size=4) + rng.normal(size=40)
    alpha = 40 * rate / (1 - rate)  # sum form: n p / (1 - p)
    w_sk = Ridge(alpha=alpha, fit_intercept=False, solver="cholesky").fit(x, y).coef_
    np.testing.assert_allclose(lin.marginalized_solution(x, y, rate), w_sk, rtol=1e-10)
    # Mean form: lambda = p/(1-p) exactly.
    np.testing.assert_allclose(lin.ridge_mean_form(x, y, rate / (1 - rate)), w_sk, rtol=1e-10)
    # Unequal column scales break the scalar-ridge equivalence.
    xs = x * np.array([0.2, 1.0, 3.0, 0.5])
    w_scalar = lin.ridge_mean_form(xs, y, rate / (1 - rate))
    assert np.max(np.abs(lin.marginalized_solution(xs, y, rate) - w_scalar)) > 1e-2


def test_fit_lambda_recovers_the_ridge_strength():
    rng = np.random.default_rng(2)
    x = lin.standardize(rng.normal(size=(50, 5)))
    y = x @ rng.normal(size=5) + rng.normal(size=50)
    for lam in (0.05, 0.7, 3.0):
        assert lin.fit_lambda(x, y, lin.ridge_mean_form(x, y, lam)) == pytest.approx(lam, 1e-4)


# ------------------------------------------------------------------------ verdict rule
def _row(ratios, mc_devs, sklearn=1e-15, rate=0.3):
    """A summary row from raw per-seed values (intervals by scipy, not by the module)."""

    def ci(v):
        v = np.asarray(v, float)
        half = scipy.stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
        return {"mean": v.mean(), "std": v.std(ddof=1), "n": v.size,
                "ci_low": v.mean() - half, "ci_high": v.mean() + half}  # fmt: skip

    return {
        "rate": rate,
        "lambda_ratio_minus_1": ci(np.asarray(ratios) - 1.0),
        "mc_rel_dev": ci(mc_devs),
        "sklearn_rel_err_max": sklearn,
    }


def test_decide_reproduces_refutes_and_reports_power():
    good = _row([1.001, 0.999, 1.002, 1.0], [1e-4, -2e-4, 3e-4, 0.0])
    d = lin.decide([good])
    assert d["verdict"] == "reproduced" and good["verdict"] == "reproduced"
    # Power of the identity design: 2 Phi(sqrt(n) tol / sd - t) - 1 at the ratio's spread.
    sd = np.std([1.001, 0.999, 1.002, 1.0], ddof=1)
    want = 2 * scipy.stats.norm.cdf(2 * lin.RATIO_MARGIN / sd - scipy.stats.t.ppf(0.975, 3)) - 1
    assert d["evidence"]["power"] == pytest.approx(want)
    assert d["evidence"]["coverage"] == 1.0 and d["evidence"]["pairs"] == 4
    # lambda = p (ratio 1 - p) instead of p/(1-p): outside the 5 % margin.
    wrong = _row([0.7, 0.71, 0.69, 0.7], [1e-4, -2e-4, 3e-4, 0.0])
    assert lin.decide([good, wrong])["verdict"] == "refuted"
    # A wide interval straddling the margin decides nothing.
    wide = _row([0.9, 1.1, 1.0, 0.95], [1e-4, -2e-4, 3e-4, 0.0])
    assert lin.decide([wide])["verdict"] == "inconclusive"
    # The closed form disagreeing with scikit-learn fails the run even if lambda holds.
    assert (
        lin.decide([_row([1.0, 1.001, 0.999], [0.0, 1e-4, -1e-4], sklearn=1e-3)])["verdict"]
        == "refuted"
    )
