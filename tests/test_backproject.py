"""backproject: against the closed-form inverse of a linear layer, and on dropout noise."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax


def test_linear_layer_recovers_the_closed_form_preimage():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 6)) / np.sqrt(6) + np.eye(6)
    x = rng.normal(size=(3, 6))
    target = rng.normal(size=(3, 6))
    res = dropjax.backproject(
        lambda z: z @ jnp.asarray(w, jnp.float32),
        jnp.asarray(target, jnp.float32),
        jnp.asarray(x, jnp.float32),
        steps=2000,
        learning_rate=0.02,
    )
    expected = np.linalg.solve(w.T, target.T).T  # x* W = target
    np.testing.assert_allclose(res.x, expected, atol=2e-3)
    assert res.losses.shape == (2000,) and res.losses[-1] < 1e-5 * res.losses[0]


def test_matches_dropout_noised_relu_activations():
    w = jax.random.normal(jax.random.key(0), (20, 50)) / np.sqrt(20)
    layer = lambda z: jax.nn.relu(z @ w)
    x = jax.random.uniform(jax.random.key(1), (4, 20))
    noisy = dropjax.dropout(jax.random.key(2), layer(x), 0.5)
    res = dropjax.backproject(layer, noisy, x, steps=500, learning_rate=0.02)
    start = float(jnp.sum((layer(x) - noisy) ** 2))
    end = float(jnp.sum((layer(res.x) - noisy) ** 2))
    assert end < 0.5 * start
    assert not np.allclose(res.x, x)


def test_bounds_and_layer_weights():
    w1 = jax.random.normal(jax.random.key(0), (5, 8))
    w2 = jax.random.normal(jax.random.key(1), (8, 4))
    two = lambda z: (jax.nn.relu(z @ w1), jax.nn.relu(jax.nn.relu(z @ w1) @ w2))
    x = jax.random.uniform(jax.random.key(2), (2, 5))
    targets = tuple(t * 1.3 for t in two(x))
    res = dropjax.backproject(two, targets, x, steps=50, learning_rate=0.01, bounds=(0.0, 1.0))
    assert float(res.x.min()) >= 0.0 and float(res.x.max()) <= 1.0
    only_first = dropjax.backproject(
        two, targets, x, steps=50, learning_rate=0.01, layer_weights=[1.0, 0.0]
    )
    one_layer = dropjax.backproject(
        lambda z: jax.nn.relu(z @ w1), targets[0], x, steps=50, learning_rate=0.01
    )
    np.testing.assert_allclose(only_first.x, one_layer.x, rtol=1e-5, atol=1e-6)


def test_jit_matches_eager():
    f = lambda z: jnp.tanh(z * 2.0)
    x, t = jnp.linspace(-1, 1, 7), jnp.linspace(-0.5, 0.5, 7)
    run = functools.partial(dropjax.backproject, f, steps=30, learning_rate=0.1)
    np.testing.assert_allclose(jax.jit(run)(t, x).x, run(t, x).x, rtol=1e-6)


def test_bad_arguments():
    f = lambda z: z
    with pytest.raises(ValueError, match="steps"):
        dropjax.backproject(f, jnp.ones(2), jnp.ones(2), steps=0)
    with pytest.raises(ValueError, match="momentum"):
        dropjax.backproject(f, jnp.ones(2), jnp.ones(2), momentum=1.0)
    with pytest.raises(ValueError, match="layer_weights"):
        dropjax.backproject(f, jnp.ones(2), jnp.ones(2), layer_weights=[1.0, 2.0])


def test_gauss_newton_on_a_linear_map_is_the_minimum_norm_correction():
    # x* = x0 + argmin ||d|| s.t. (x0 + d) A = t: numpy's pseudo-inverse, per example
    rng = np.random.default_rng(1)
    a = rng.normal(size=(7, 4))  # 7 inputs -> 4 features: underdetermined
    x0 = rng.normal(size=(3, 7))
    t = rng.normal(size=(3, 4))
    res = dropjax.backproject(
        lambda z: z @ jnp.asarray(a, jnp.float32),
        jnp.asarray(t, jnp.float32),
        jnp.asarray(x0, jnp.float32),
        steps=1,
        method="gauss_newton",
        cg_steps=7,
        damping=1e-7,
    )
    expected = x0 + (t - x0 @ a) @ np.linalg.pinv(a)
    np.testing.assert_allclose(res.x, expected, atol=2e-3)
    assert res.losses[0] == pytest.approx(np.sum((x0 @ a - t) ** 2), rel=1e-5)


def test_gauss_newton_matches_dropout_noise_of_a_relu_layer():
    # wide input (30), 12 units: every dropout pattern of the active units has a preimage
    rng = np.random.default_rng(2)
    w = rng.normal(size=(30, 12)) / np.sqrt(30)
    x = rng.uniform(size=(5, 30))
    clean = np.maximum(x @ w, 0.0)
    t = 2.0 * (rng.uniform(size=clean.shape) > 0.5) * clean  # inverted dropout at 0.5
    f = lambda z: jax.nn.relu(z @ jnp.asarray(w, jnp.float32))
    res = dropjax.backproject(
        f,
        jnp.asarray(t, jnp.float32),
        jnp.asarray(x, jnp.float32),
        steps=5,
        method="gauss_newton",
        cg_steps=12,
        damping=1e-4,
    )
    got = np.maximum(np.asarray(res.x, np.float64) @ w, 0.0)
    assert np.linalg.norm(got - t) < 1e-3 * np.linalg.norm(t - clean)


def test_gauss_newton_inverts_a_two_layer_relu_net_on_a_reachable_target():
    rng = np.random.default_rng(3)
    w1, w2 = rng.normal(size=(30, 12)) / np.sqrt(30), rng.normal(size=(12, 6)) / np.sqrt(12)
    relu = lambda z: np.maximum(z, 0.0)
    x_true = rng.uniform(size=(4, 30))
    t = relu(relu(x_true @ w1) @ w2)
    x0 = x_true + 0.05 * rng.normal(size=x_true.shape)
    f = lambda z: jax.nn.relu(
        jax.nn.relu(z @ jnp.asarray(w1, jnp.float32)) @ jnp.asarray(w2, jnp.float32)
    )
    res = dropjax.backproject(
        f,
        jnp.asarray(t, jnp.float32),
        jnp.asarray(x0, jnp.float32),
        steps=10,
        method="gauss_newton",
        cg_steps=10,
        damping=1e-4,
    )
    got = relu(relu(np.asarray(res.x, np.float64) @ w1) @ w2)
    assert np.linalg.norm(got - t) < 1e-2 * np.linalg.norm(relu(relu(x0 @ w1) @ w2) - t)


def test_gauss_newton_treats_examples_independently():
    w = jax.random.normal(jax.random.key(0), (9, 4))
    f = lambda z: jax.nn.relu(z @ w)
    x = jax.random.uniform(jax.random.key(1), (3, 9))
    t = 1.5 * f(x)
    run = functools.partial(dropjax.backproject, f, steps=3, method="gauss_newton", cg_steps=4)
    batch = run(t, x).x
    for i in range(3):
        np.testing.assert_allclose(
            batch[i], run(t[i : i + 1], x[i : i + 1]).x[0], rtol=1e-4, atol=1e-5
        )


def test_gauss_newton_bad_arguments():
    f = lambda z: z
    with pytest.raises(ValueError, match="method"):
        dropjax.backproject(f, jnp.ones(2), jnp.ones(2), method="newton")
    with pytest.raises(ValueError, match="cg_steps"):
        dropjax.backproject(f, jnp.ones(2), jnp.ones(2), method="gauss_newton", cg_steps=0)
    with pytest.raises(ValueError, match="damping"):
        dropjax.backproject(f, jnp.ones(2), jnp.ones(2), method="gauss_newton", damping=0.0)
