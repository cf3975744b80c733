"""The Bouthillier et al. (2015) back-projection experiment (random_dropout_mlp has its own
file): the smoke preset runs end to end and writes results with a verdict and a figure; the
pieces it relies on (the noisy activations, the back-projection arm's forward pass) are
checked on small inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from experiments import backprojection as bp
from experiments.catalog import experiments
from experiments.models import MLP
from experiments.registry import RunContext, execute

VERDICTS = {"reproduced", "not reproduced", "inconclusive"}
NAMES = (bp.NAME,)
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
