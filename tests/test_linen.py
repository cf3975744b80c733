"""dropjax.linen: the drop-in property for flax.linen.Dropout, the decoupled layers, MC mode."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
import dropjax.linen as djnn
from tests.reference import keep_ref, nested_keep_ref, sigma_bound

# The same behavioural cases Flax's own Dropout tests cover, run on both classes.
BOTH = [nn.Dropout, djnn.Dropout]


@pytest.mark.parametrize("cls", BOTH)
def test_different_keys_give_different_masks(cls):
    layer = cls(0.5, deterministic=False)
    x = jnp.ones((100,))
    a = layer.apply({}, x, rngs={"dropout": jax.random.key(0)})
    b = layer.apply({}, x, rngs={"dropout": jax.random.key(1)})
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, layer.apply({}, x, rngs={"dropout": jax.random.key(0)}))


@pytest.mark.parametrize("cls", BOTH)
def test_deterministic_ignores_keys(cls):
    x = jax.random.normal(jax.random.key(0), (10,))
    layer = cls(0.5)
    for k in range(3):
        y = layer.apply({}, x, deterministic=True, rngs={"dropout": jax.random.key(k)})
        np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(cls(0.5, deterministic=True).apply({}, x), x)


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_rate_statistics(cls, rate):
    n = 50_000
    y = np.asarray(cls(rate).apply({}, jnp.ones(n), False, rngs={"dropout": jax.random.key(3)}))
    assert abs((y != 0).mean() - (1 - rate)) < sigma_bound(n, 1 - rate)
    np.testing.assert_allclose(np.unique(y[y != 0]), [1 / (1 - rate)], rtol=1e-6)


@pytest.mark.parametrize("cls", BOTH)
def test_rate_limits_and_non_nan_gradient(cls):
    x = jnp.arange(1.0, 6.0)
    for rate, expected in [(0.0, np.arange(1.0, 6.0)), (1.0, np.zeros(5))]:
        f = lambda x, rate=rate: (
            cls(rate).apply({}, x, False, rngs={"dropout": jax.random.key(0)}).sum()
        )
        np.testing.assert_array_equal(
            cls(rate).apply({}, x, False, rngs={"dropout": jax.random.key(0)}), expected
        )
        g = jax.grad(f)(x)
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, np.ones(5) if rate == 0.0 else np.zeros(5))


@pytest.mark.parametrize("cls", BOTH)
def test_broadcast_dims(cls):
    y = np.asarray(
        cls(0.5, broadcast_dims=(0, 2)).apply(
            {}, jnp.ones((4, 30, 3)), False, rngs={"dropout": jax.random.key(2)}
        )
    )
    assert (y == y[:1, :, :1]).all() and len(np.unique(y)) == 2


@pytest.mark.parametrize("cls", BOTH)
def test_call_time_rng_and_collection_name(cls):
    x = jnp.ones(64)
    y = cls(0.5, rng_collection="noise").apply({}, x, False, rngs={"noise": jax.random.key(5)})
    assert (np.asarray(y) == 0).any()
    z = cls(0.5).apply({}, x, False, rng=jax.random.key(5))
    assert (np.asarray(z) == 0).any()


@pytest.mark.parametrize("cls", BOTH)
def test_deterministic_given_twice_or_never_is_an_error(cls):
    with pytest.raises(ValueError, match="deterministic"):
        cls(0.5, deterministic=True).apply({}, jnp.ones(3), deterministic=True)
    with pytest.raises(ValueError, match="deterministic"):
        cls(0.5).apply({}, jnp.ones(3))


def test_dropjax_dropout_uses_the_documented_mask():
    key = jax.random.key(9)
    y = djnn.Dropout(0.3).apply({}, jnp.ones(50), False, rng=key)
    np.testing.assert_allclose(y, np.where(keep_ref(key, (50,), 0.3), 1 / np.float32(0.7), 0))


def test_decoupled_dropout_module_matches_function():
    key, x = jax.random.key(1), jax.random.normal(jax.random.key(0), (20,))
    layer = djnn.DecoupledDropout(0.4, 0.2)
    f_mod = lambda x: (layer.apply({}, x, False, rng=key) * jnp.arange(20.0)).sum()
    gx = jax.grad(f_mod)(x)
    m_b = nested_keep_ref(key, (20,), 0.4, 0.2)
    np.testing.assert_allclose(gx, np.where(m_b, np.arange(20.0) / 0.6 / 0.8, 0), rtol=1e-5)


def test_decoupled_dense_is_eq9():
    key = jax.random.key(4)
    layer = djnn.DecoupledDense(3, 0.5, 0.25)
    x = jax.random.normal(jax.random.key(0), (6, 5))
    v = layer.init(jax.random.key(1), x, deterministic=True)
    delta = jax.random.normal(jax.random.key(2), (6, 3))
    grads = jax.grad(lambda v: (layer.apply(v, x, False, rng=key) * delta).sum())(v)
    eps_b = np.where(nested_keep_ref(key, x.shape, 0.5, 0.25), 1 / 0.5 / 0.75, 0)
    np.testing.assert_allclose(
        grads["params"]["kernel"], (np.asarray(x) * eps_b).T @ np.asarray(delta), rtol=1e-5
    )
    # Deterministic: a plain dense layer.
    k, b = v["params"]["kernel"], v["params"]["bias"]
    np.testing.assert_allclose(layer.apply(v, x, True), np.asarray(x) @ k + b, rtol=1e-6)


class _BNNet(nn.Module):
    dropout_cls: type

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(16)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = self.dropout_cls(0.5, deterministic=not train)(x)
        return nn.Dense(3)(x)


@pytest.mark.parametrize("cls", BOTH)
def test_mc_mode_samples_with_batchnorm_in_eval(cls):
    net = _BNNet(cls)
    x = jax.random.normal(jax.random.key(0), (8, 4))
    v = net.init(jax.random.key(1), x, train=False)
    # Give BatchNorm non-trivial running statistics.
    v["batch_stats"]["BatchNorm_0"]["mean"] = jnp.full(16, 0.3)
    v["batch_stats"]["BatchNorm_0"]["var"] = jnp.full(16, 2.0)
    eval_out = net.apply(v, x, train=False)
    with djnn.mc_dropout():
        s1 = net.apply(v, x, train=False, rngs={"dropout": jax.random.key(2)})
        s2 = net.apply(v, x, train=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(s1, s2)
    assert not np.allclose(s1, eval_out)
    # Reference: BatchNorm with the running statistics, then explicit dropout with the key.
    params = v["params"]
    h = np.asarray(x) @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(
        params["Dense_0"]["bias"]
    )
    bn = params["BatchNorm_0"]
    h = (h - 0.3) / np.sqrt(2.0 + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
    keys = jax.random.split(jax.random.key(4), 400)
    with djnn.mc_dropout():
        samples = jax.vmap(lambda k: net.apply(v, x, train=False, rngs={"dropout": k}))(keys)
    mean_of_samples = np.asarray(samples).mean(0)
    det = h @ np.asarray(params["Dense_1"]["kernel"]) + np.asarray(params["Dense_1"]["bias"])
    # Dropout before a linear layer is unbiased: the MC mean tends to the eval output, which
    # uses the running statistics (not the batch's).
    np.testing.assert_allclose(det, eval_out, rtol=1e-4, atol=1e-4)
    assert np.abs(mean_of_samples - det).max() < 0.25 * np.abs(det).max()
    # Outside the context, eval mode is deterministic again.
    np.testing.assert_array_equal(
        net.apply(v, x, train=False, rngs={"dropout": jax.random.key(2)}), eval_out
    )


def test_mc_mode_leaves_batch_stats_untouched():
    net = _BNNet(djnn.Dropout)
    x = jax.random.normal(jax.random.key(0), (8, 4))
    v = net.init(jax.random.key(1), x, train=False)
    with djnn.mc_dropout():
        _, updates = net.apply(
            v, x, train=False, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
        )
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(v["batch_stats"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dropout_equals_functional_op_in_a_model():
    x = jnp.ones((2, 10))
    key = jax.random.key(7)
    y = djnn.Dropout(0.2, broadcast_dims=(0,)).apply({}, x, False, rng=key)
    np.testing.assert_array_equal(y, dropjax.dropout(key, x, 0.2, broadcast_dims=(0,)))
