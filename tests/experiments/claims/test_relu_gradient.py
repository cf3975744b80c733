"""The relu_gradient experiment (claim 8): the smoke preset end to end, and the maths its
verdicts rest on, checked against expectations enumerated over explicit masks."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import dropjax
from experiments.catalog import claims
from experiments.claims import relu_gradient as grad
from tests.experiments.smoke import PNG, run_preset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_preset(tmp_path_factory.mktemp("relu_gradient"), "relu_gradient")


def test_smoke_writes_results_evidence_and_figure(smoke):
    payload, path, out_dir = smoke
    assert path == out_dir / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert "seed 000" in results["source"] and results["claim"]
    assert results["figure"] == "smoke_relu_gradient.png"
    assert (out_dir / results["figure"]).read_bytes()[:8] == PNG
    ev = results["evidence"]
    assert ev["coverage"] == 1.0 and ev["data"] == "real" and ev["pairs"] == 3
    cfg = results["config"]
    assert list(cfg)[:9] == [*grad.Preset.__dataclass_fields__, "seed_list"]
    assert cfg["seed_list"] == [0, 1, 2] and cfg["masks_per_estimate"] == 16 * 256
    assert cfg["tolerance"] == grad.TOL and set(cfg["cases"]) == set(grad.CASES)
    table = claims()["relu_gradient"].render(results)
    assert table.startswith("|") and "non-inverted" in table


def test_smoke_unit_level_holds_network_level_fails(smoke):
    results = smoke[0]["results"]
    v = results["verdicts"]
    assert v["unit"] == "reproduced"  # inverted unit: E g = g0 within 5 %
    assert v["non_inverted_unit"] == "reproduced"  # no rescaling: E g = (1 - p) g0
    assert v["network"] == "refuted"  # deep nets: E g moves by more than 5 %
    assert results["verdict"] == "unit-level reproduced; network-level refuted"
    for r in results["config"]["rates"]:
        gain = results["summary"]["non_inverted"]["unit_linear_loss"][str(r)]["W1"]["gain"]
        assert gain["mean"] == pytest.approx(1.0 - r, abs=0.02)
    cells = v["network_stability"]["cells"]["deep_linear_loss"]
    assert set(cells) == {str(r) for r in results["config"]["rates"]}
    assert all(
        c["verdict"] in ("reproduced", "refuted", "contradicted", "inconclusive")
        for c in cells.values()
    )


# ----------------------------------------------------------------------------- maths
def _explicit_unit_grads(params, x, targets, rate, case, arm="inverted"):
    """E over every explicit hidden mask of dL/dx for one ReLU layer -> mask -> read-out,
    with the inverted (m / q) or the non-inverted (m) scaling; and the no-dropout dL/dx."""
    w1, b1, v = params["w"][0], params["b"][0], params["v"]
    width = w1.shape[1]
    q = 1.0 - rate
    scale = 1.0 / q if arm == "inverted" else 1.0

    def loss(xx, m):
        out = (jax.nn.relu(xx @ w1 + b1) * m * scale) @ v
        if case == "unit_linear_loss":
            return jnp.mean(out)
        return jnp.mean((out - targets) ** 2)

    total = jnp.zeros_like(x)
    for bits in itertools.product((0.0, 1.0), repeat=width):
        m = jnp.asarray(bits, jnp.float32)
        prob = float(np.prod([q if b else rate for b in bits]))
        total = total + prob * jax.grad(loss)(x, m)
    g0 = jax.grad(loss)(x, jnp.full((width,), 1.0 / scale, jnp.float32))
    return np.asarray(total), np.asarray(g0)


def test_expected_gradient_p_independent_only_for_linear_loss():
    params = grad.init_params(0, 3, 4, 1)
    x, _, targets = grad.make_batch(0, 2, 3)
    for rate in (0.2, 0.7):
        e_lin, g0_lin = _explicit_unit_grads(params, x, targets, rate, "unit_linear_loss")
        np.testing.assert_allclose(e_lin, g0_lin, rtol=1e-5, atol=1e-6)
        e_mse, g0_mse = _explicit_unit_grads(params, x, targets, rate, "unit_mse")
        assert np.max(np.abs(e_mse - g0_mse)) > 1e-3


def test_non_inverted_unit_gradient_shrinks_by_keep_probability():
    params = grad.init_params(2, 3, 4, 1)
    x, _, targets = grad.make_batch(2, 2, 3)
    for rate in (0.2, 0.7):
        e, g0 = _explicit_unit_grads(params, x, targets, rate, "unit_linear_loss", "non_inverted")
        np.testing.assert_allclose(e, (1.0 - rate) * g0, rtol=1e-5, atol=1e-6)


def test_non_inverted_dropout_applies_dropouts_mask_without_rescaling():
    x = jax.random.normal(jax.random.key(0), (64, 32), jnp.float32)
    key = jax.random.key(1)
    y = np.asarray(grad.non_inverted_dropout(key, x, jnp.float32(0.3)))
    kept = np.asarray(dropjax.dropout(key, x, 0.3)) != 0
    np.testing.assert_array_equal(y != 0, kept)
    np.testing.assert_array_equal(y[kept], np.asarray(x)[kept])
    assert 0.6 < kept.mean() < 0.8


@pytest.mark.parametrize("arm", ["inverted", "non_inverted"])
def test_mc_gradient_moments_agree_with_enumeration(arm):
    params = grad.init_params(1, 3, 4, 1)
    x, labels, targets = grad.make_batch(1, 2, 3)
    rate = 0.5
    exact, g0_ref = _explicit_unit_grads(params, x, targets, rate, "unit_mse", arm)
    gw, gx, _, gx0 = grad.mc_gradient_moments(
        "unit_mse",
        params,
        x,
        labels,
        targets,
        jax.random.key(0),
        40,
        256,
        jnp.float32(rate),
        arm=arm,
    )
    gx = np.asarray(gx)
    np.testing.assert_allclose(np.asarray(gx0), g0_ref, rtol=1e-5, atol=1e-6)
    se = gx.std(0, ddof=1) / np.sqrt(gx.shape[0])
    assert np.all(np.abs(gx.mean(0) - exact) < 5 * se + 1e-6)
    stats = grad.deviation_stats(gx, exact)  # against the true mean: no bias
    assert abs(stats["dev2_z"]) < 4
    stats = grad.deviation_stats(gx, gx0)  # against the no-dropout gradient: biased
    assert stats["dev2_z"] > 4 and stats["dev2_unbiased"] > 0


def test_deviation_stats_unbiased_on_synthetic_chunks():
    rng = np.random.default_rng(4)
    g0 = rng.normal(size=50)
    bias = 0.3 * rng.normal(size=50)
    chunks = g0 + bias + rng.normal(size=(400, 50))
    out = grad.deviation_stats(chunks, g0)
    assert out["dev2_unbiased"] == pytest.approx(bias @ bias / (g0 @ g0), rel=0.25)
    out0 = grad.deviation_stats(g0 + rng.normal(size=(400, 50)), g0)
    assert abs(out0["dev2_unbiased"]) < 0.02 and out0["rel_dev_naive"] > 0.05


def _rule_on_squares(dev2: list[float]) -> str:
    """The rule on the squared deviation, with scipy's t interval: within when its upper
    bound is below TOL**2, outside when its lower bound is above, else undecided."""
    n = len(dev2)
    half = scipy.stats.t.ppf(0.975, n - 1) * np.std(dev2, ddof=1) / np.sqrt(n)
    lo, hi = np.mean(dev2) - half, np.mean(dev2) + half
    tol2 = grad.TOL**2
    return "within" if hi < tol2 else ("outside" if lo > tol2 else "undecided")


def test_rate_check_follows_the_rule_on_squared_deviations():
    rng = np.random.default_rng(0)
    seen = set()
    for centre in (-0.001, 0.0005, 0.002, 0.0025, 0.003, 0.02):
        for _ in range(6):
            dev2 = {w: list(centre + 0.001 * rng.normal(size=6)) for w in grad.WRT}
            row = {
                w: {"g0": grad._ref_summary([{**_STATS, "dev2_unbiased": v} for v in dev2[w]])}
                for w in grad.WRT
            }
            pair = [_rule_on_squares(dev2[w]) for w in grad.WRT]
            want = (
                "outside"
                if "outside" in pair
                else "within"
                if set(pair) == {"within"}
                else "undecided"
            )
            assert grad.rate_check(row, "g0") == want
            seen.add(want)
    assert seen == {"within", "outside", "undecided"}
    one_seed = {w: {"g0": grad._ref_summary([{**_STATS, "dev2_unbiased": 0.0}])} for w in grad.WRT}
    assert grad.rate_check(one_seed, "g0") == "undecided"  # no interval from one network


_STATS = {"dev2_z": 0.0, "rel_dev_naive": 0.0, "noise_floor": 0.0}
