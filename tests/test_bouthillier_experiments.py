"""The Bouthillier et al. (2015) experiments (random_dropout_mlp, backprojection): each smoke
preset runs end to end and writes results with a verdict and a figure; the pieces they rely
on (the sweep grid, the noisy activations, the back-projection arm's forward pass) are
checked on small inputs."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import dropjax
from experiments import backprojection as bp
from experiments import random_dropout_mlp as rdm
from experiments.catalog import experiments
from experiments.models import MLP
from experiments.registry import RunContext, execute

VERDICTS = {"reproduced", "not reproduced", "inconclusive"}
NAMES = (rdm.NAME, bp.NAME)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("bouthillier")
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
    assert "seed 002" in results["source"] and results["claim"]
    assert (out_dir / results["figure"]).read_bytes()[:8] == PNG
    assert results["seeds"] == [0, 1]
    table = experiments()[name].render(results)
    assert "|---|" in table and results["verdict"] in table


def test_smoke_random_dropout_comparisons(smoke):
    results = smoke[rdm.NAME][0]["results"]
    assert set(results["summary"]) == set(rdm.settings(rdm.PRESETS["smoke"]))
    best = results["comparisons"]["best random vs best dropout"]
    assert best["standard"] == results["best"]["standard"]
    for key, s in results["summary"].items():
        assert 0.0 <= s["mean"] <= 100.0 and s["n"] == 2, key


def test_smoke_backprojection_figures_and_matching(smoke):
    payload, _, out_dir = smoke[bp.NAME]
    results = payload["results"]
    for name in results["figures"]:
        assert (out_dir / name).read_bytes()[:8] == PNG
    errors = results["backprojection"]["errors"]
    assert len(errors) == 4  # (dropout, random dropout) x two hidden layers
    # Back-projection reduces the mismatch relative to the clean input x itself.
    assert all(e["rel_to_noise"] < 1.0 for e in errors.values())
    assert set(results["summary"]) == set(bp.ARMS)


def test_smoke_random_dropout_dropped_proportion_figure(smoke):
    payload, _, out_dir = smoke[rdm.NAME]
    results = payload["results"]
    assert results["figures"] == ["smoke.png", "smoke_dropped_proportion.png"]
    for name in results["figures"]:
        assert (out_dir / name).read_bytes()[:8] == PNG
    dropped = results["dropped_proportion"]
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
    std = np.asarray(rdm._dropped_counts(keys, n, jnp.float32(p), "standard"))
    rnd = np.asarray(rdm._dropped_counts(keys, n, jnp.float32(p), "random_rate"))
    for i, key in enumerate(keys):
        assert std[i] == n - int(dropjax.keep_mask(key, (n,), p).sum())
        # random_rate_dropout's documented recipe: rho = p * U(rate_key), mask at rho
        rate_key, mask_key = jax.random.split(key)
        rho = p * jax.random.uniform(rate_key, (), jnp.float32)
        assert rnd[i] == n - int(dropjax.keep_mask(mask_key, (n,), rho).sum())


def test_random_dropout_grid_merges_shared_points():
    preset = rdm.PRESETS["quick"]
    grid = rdm.settings(preset)
    # sweeps (a) and (b) share (0.2, 0.5); random has its own three arms
    assert len(grid) == 3 + 3 - 1 + 3
    assert grid["dropout in 0.2 hid 0.5"] == ("standard", 0.2, 0.5)
    assert grid["random [0,0.8]"] == ("random_rate", 0.8, 0.8)
    paper = rdm.PRESETS["paper"]
    assert paper.epochs == 501 and len(paper.input_sweep) == 8 and len(paper.random_sweep) == 9


def _params(hidden=(6, 5), d=4, seed=0):
    model = bp.BackprojMLP(hidden, "plain")
    return model, model.init(jax.random.key(seed), jnp.zeros((1, d)))["params"]


def test_noisy_activations_match_clean_at_rate_zero_and_scale_survivors():
    _, params = _params()
    x = jax.random.uniform(jax.random.key(1), (3, 4))
    clean = bp.hidden_activations(params, x, 2)
    for kind in ("standard", "random_rate"):
        noisy = bp.noisy_activations(params, x, 2, jax.random.key(2), 0.0, kind)
        for c, n in zip(clean, noisy, strict=True):
            np.testing.assert_allclose(n, c, rtol=1e-6)
    # first layer with dropout 0.5: every unit is 0 or twice its clean value
    noisy = bp.noisy_activations(params, x, 2, jax.random.key(3), 0.5, "standard")
    h1, c1 = np.asarray(noisy[0]), np.asarray(clean[0])
    assert np.all(np.isclose(h1, 0.0) | np.isclose(h1, 2.0 * c1, rtol=1e-5))


def test_backproject_arm_shares_parameters_and_trains_on_x_star():
    model, params = _params()
    for mode in ("dropout", "backproject"):
        other = bp.BackprojMLP((6, 5), mode).init(jax.random.key(0), jnp.zeros((1, 4)))
        jax.tree.map(np.testing.assert_array_equal, params, other["params"])
    # the same names and values as experiments.models.MLP (the harness pairs arms by seed)
    mlp = MLP(hidden=(6, 5)).init(jax.random.key(0), jnp.zeros((1, 4)))
    jax.tree.map(np.testing.assert_array_equal, params, mlp["params"])
    x = jax.random.uniform(jax.random.key(4), (4, 4))
    arm = bp.BackprojMLP((6, 5), "backproject", rate=0.5, bp_steps=3, bp_lr=0.05)
    rngs = {"dropout": jax.random.key(5)}
    loss = lambda p: arm.apply({"params": p}, x, train=True, rngs=rngs)
    logits, vjp = jax.jit(lambda p: jax.vjp(loss, p))(params)
    clean = model.apply({"params": params}, x)
    assert logits.shape == (4, 10)
    np.testing.assert_allclose(logits[:2], clean[:2], rtol=1e-5, atol=1e-6)  # clean half
    assert not np.allclose(logits[2:], clean[2:])  # the other half is the network at x*
    (grads,) = vjp(jnp.ones_like(logits))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_backproject_library_call_reduces_the_matching_loss():
    _, params = _params(d=4)
    x = jax.random.uniform(jax.random.key(6), (2, 4))
    targets = bp.noisy_activations(params, x, 2, jax.random.key(7), 0.5, "standard")
    res = dropjax.backproject(
        lambda u: bp.hidden_activations(params, u, 2)[0],
        targets[0],
        x,
        steps=50,
        learning_rate=0.05,
        bounds=(0.0, 1.0),
    )
    assert float(res.losses[-1]) <= float(res.losses[0])
    assert bool(((res.x >= 0.0) & (res.x <= 1.0)).all())
