"""The explainer experiments (linear_l2, ensemble_jensen, init_variance; relu_gradient and
graph_homophily have their own files): each smoke preset runs end to end, and the maths each
one relies on is checked here against references built independently with explicit masks."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from sklearn.linear_model import Ridge

from experiments import ensemble_jensen as ens
from experiments import init_variance as init
from experiments import linear_l2 as lin
from experiments.catalog import experiments
from experiments.registry import RunContext, execute

VERDICTS = {"reproduced", "not reproduced", "inconclusive"}
NAMES = ("linear_l2", "ensemble_jensen", "init_variance")


# ------------------------------------------------------------------------ smoke presets
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Runs every smoke preset once; returns {name: (payload, path, out_dir)}."""
    root = tmp_path_factory.mktemp("explainer")
    out = {}
    for name in NAMES:
        ctx = RunContext(name=name, preset="smoke", out_dir=root / name, quiet=True)
        payload, path = execute(name, ctx)
        out[name] = (payload, path, root / name)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_smoke_writes_results_verdict_and_figure(smoke, name):
    payload, path, out_dir = smoke[name]
    assert path == out_dir / "smoke.json"
    on_disk = json.loads(path.read_text())
    results = on_disk["results"]
    assert on_disk["experiment"] == name and on_disk["preset"] == "smoke"
    assert results["verdict"] in VERDICTS
    assert "seed 000" in results["source"] and results["claim"]
    assert results["config"]["seed_list"] and results["per_seed"]
    figure = out_dir / results["figure"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = experiments()[name].render(results)
    assert table.startswith("|") and "---" in table


def test_smoke_linear_l2_identities(smoke):
    results = smoke["linear_l2"][0]["results"]
    for row in results["summary"]:
        assert row["sklearn_rel_err_max"] < 1e-8
        assert row["mc_abs_z_max"] < 6.0
        # Dropout-trained weights are ridge weights with lambda near p/(1-p), not near p.
        ratio = row["lambda_hat"]["mean"] / row["lambda_claimed"]
        assert 0.8 < ratio < 1.25


def test_smoke_ensemble_linear_exact_nonlinear_not(smoke):
    results = smoke["ensemble_jensen"][0]["results"]
    assert results["checks"]["linear_max_rel_gap"] < 1e-10
    assert results["checks"]["nwgm_equals_weight_scaling"]
    for r in results["config"]["rates"]:
        assert results["summary"]["mlp_relu"][str(r)]["prob_tv"]["mean"] > 1e-3


def test_smoke_init_variance_follows_mean_field(smoke):
    results = smoke["init_variance"][0]["results"]
    for row in results["summary"]:
        if row["arch"] == "plain" and row["rate"] == 0.5:
            assert abs(row["excess_fwd_bits"]["mean"] - row["predicted_bits"]) < 3.0


# ----------------------------------------------------------------------- linear_l2 maths
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


# ----------------------------------------------------------------- ensemble_jensen maths
def test_mask_enumeration_is_a_distribution():
    masks = ens.all_masks(5)
    assert masks.shape == (32, 5) and len({tuple(m) for m in masks}) == 32
    np.testing.assert_allclose(ens.mask_probs(masks, 0.3).sum(), 1.0, rtol=1e-14)


def test_exact_moments_match_brute_force_loops():
    rng = np.random.default_rng(3)
    params = ens.init_params(4, 3, 2, 3)
    x = rng.normal(size=(2, 3))
    rate, q = 0.4, 0.6
    want = np.zeros((2, 3))
    for a in itertools.product((0, 1), repeat=3):
        for b in itertools.product((0, 1), repeat=2):
            prob = np.prod([q if v else rate for v in a + b])
            h = np.tanh((x * np.array(a) / q) @ params["w1"] + params["b1"])
            z = (h * np.array(b) / q) @ params["w2"] + params["b2"]
            want += prob * scipy.special.softmax(z, axis=-1)
    got = ens.exact_moments("mlp_tanh", params, x, rate)["probs"]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_weight_scaling_exact_for_linear_only():
    params = ens.init_params(5, 4, 3, 3)
    x = ens.make_inputs(5, 6, 4)
    lin_gap = ens.gaps("linear", params, x, 0.5)
    relu_gap = ens.gaps("mlp_relu", params, x, 0.5)
    soft = ens.gaps("softmax_regression", params, x, 0.5)
    assert lin_gap["logit_gap_max_abs"] < 1e-12
    assert relu_gap["logit_gap_max_abs"] > 1e-3
    assert soft["logit_gap_max_abs"] < 1e-12  # logits affine in the mask ...
    assert soft["prob_tv"] > 1e-3  # ... but the softmax of them is not
    assert soft["nwgm_tv"] < 1e-12  # the normalised geometric mean is exact


# ------------------------------------------------------------------ init_variance maths
def test_one_layer_second_moment_gain():
    width, rate = 512, 0.5
    weights = init.make_weights(jax.random.key(0), jnp.asarray([rate], jnp.float32), width, 2)
    first, w = init.arch_weights("plain", weights)
    x = jax.random.normal(jax.random.key(1), (128, width), jnp.float32)
    u = jax.random.normal(jax.random.key(2), (128, width), jnp.float32)
    r, one = jnp.asarray([rate], jnp.float32), jnp.ones((1,), jnp.float32)
    gains = {}
    for kind in init.KINDS:
        fwd, _ = init.second_moments("plain", first, w[kind], x, u, jax.random.key(3), r, one)
        gains[kind] = float(2.0 ** (fwd[0, 1] - fwd[0, 0]))  # log2 second moments
    # Inverted dropout: gain c / q with c = 1 (He), q (times_keep), 1/q (over_keep).
    assert gains["he"] == pytest.approx(2.0, rel=0.1)
    assert gains["times_keep"] == pytest.approx(1.0, rel=0.1)
    assert gains["over_keep"] == pytest.approx(4.0, rel=0.1)


def test_predicted_excess_bits():
    assert init.predicted_excess_bits("plain", "inverted", "times_keep", 0.5, 50) == 0.0
    assert init.predicted_excess_bits("plain", "inverted", "he", 0.5, 50) == pytest.approx(49.0)
    assert init.predicted_excess_bits("plain", "non_inverted", "over_keep", 0.3, 50) == (
        pytest.approx(0.0, abs=1e-12)
    )
    assert init.predicted_excess_bits("plain", "inverted", "times_keep", 0.5, 50, "eval") == (
        pytest.approx(-49.0)
    )


def test_log2_mean_square_survives_float32_underflow():
    z = jax.random.normal(jax.random.key(0), (64, 32), jnp.float32) * jnp.float32(2.0**-75)
    got = float(init.log2_mean_square(z))
    assert np.isfinite(got) and got == pytest.approx(-150.0, abs=0.5)
    assert float(jnp.mean(z * z)) == 0.0  # the naive second moment underflows
