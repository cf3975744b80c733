"""dropjax.nnx: the drop-in property for flax.nnx.Dropout, rng overrides, decoupled layers, MC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropjax.nnx as djx
from tests.reference import (
    assert_sum_close,
    extra_key,
    keep_ref,
    nested_keep_ref,
    sigma_bound,
)

BOTH = [nnx.Dropout, djx.Dropout]


@pytest.mark.parametrize("cls", BOTH)
def test_different_streams_give_different_masks_and_the_stream_advances(cls):
    x = jnp.ones(200)
    a = cls(0.5, rngs=nnx.Rngs(dropout=0))
    b = cls(0.5, rngs=nnx.Rngs(dropout=1))
    ya1, ya2, yb = a(x), a(x), b(x)
    assert not np.array_equal(ya1, yb)
    assert not np.array_equal(ya1, ya2), "each call draws a fresh key from the stream"


@pytest.mark.parametrize("cls", BOTH)
def test_deterministic_and_train_eval(cls):
    x = jax.random.normal(jax.random.key(0), (50,))
    layer = cls(0.5, rngs=nnx.Rngs(dropout=0))
    np.testing.assert_array_equal(layer(x, deterministic=True), x)
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    layer.train()
    assert (np.asarray(layer(x)) == 0).any()
    np.testing.assert_array_equal(cls(0.5, deterministic=True)(x), x)


@pytest.mark.parametrize("cls", BOTH)
@pytest.mark.parametrize("rate", [0.2, 0.7])
def test_rate_statistics(cls, rate):
    n = 50_000
    y = np.asarray(cls(rate, rngs=nnx.Rngs(dropout=3))(jnp.ones(n)))
    assert abs((y != 0).mean() - (1 - rate)) < sigma_bound(n, 1 - rate)


@pytest.mark.parametrize("cls", BOTH)
def test_rate_limits_and_non_nan_gradient(cls):
    x = jnp.arange(1.0, 5.0)
    for rate in [0.0, 1.0]:
        layer = cls(rate, rngs=nnx.Rngs(dropout=0))
        g = jax.grad(lambda x, layer=layer: layer(x).sum())(x)
        assert np.isfinite(g).all()
        np.testing.assert_array_equal(g, np.full(4, 1.0 - rate))


@pytest.mark.parametrize("cls", BOTH)
def test_call_time_rngs_override(cls):
    x = jnp.ones(100)
    layer = cls(0.5, rngs=nnx.Rngs(dropout=0))
    key = jax.random.key(42)
    np.testing.assert_array_equal(layer(x, rngs=key), layer(x, rngs=key))
    r1 = layer(x, rngs=nnx.Rngs(dropout=7))
    r2 = layer(x, rngs=nnx.Rngs(dropout=7))
    np.testing.assert_array_equal(r1, r2)
    no_stream = cls(0.5)
    assert (np.asarray(no_stream(x, rngs=key)) == 0).any()


def test_missing_rngs_is_a_clear_error():
    with pytest.raises(ValueError, match="rngs"):
        djx.Dropout(0.5)(jnp.ones(3))


def test_dropjax_dropout_uses_the_documented_mask():
    key = jax.random.key(9)
    y = djx.Dropout(0.3)(jnp.ones(40), rngs=key)
    np.testing.assert_allclose(y, np.where(keep_ref(key, (40,), 0.3), 1 / np.float32(0.7), 0))


def test_broadcast_dims():
    y = np.asarray(
        djx.Dropout(0.5, broadcast_dims=(1,), rngs=nnx.Rngs(dropout=0))(jnp.ones((5, 40)))
    )
    assert (y == y[:, :1]).all() and len(np.unique(y)) == 2


def test_decoupled_dense_is_eq9():
    key = jax.random.key(4)
    layer = djx.DecoupledDense(5, 3, 0.5, 0.25, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (6, 5))
    delta = jax.random.normal(jax.random.key(2), (6, 3))
    grads = nnx.grad(lambda m: (m(x, rngs=key) * delta).sum())(layer)
    eps_b = np.where(nested_keep_ref(key, x.shape, 0.5, 0.25), 1 / 0.5 / 0.75, 0)
    xb, d = np.asarray(x, np.float64) * eps_b, np.asarray(delta, np.float64)
    # Sums over the 6 examples (kernel gradient) and the 5 inputs (+ bias): float32 bounds.
    assert_sum_close(grads.kernel[...], xb.T @ d, np.abs(xb).T @ np.abs(d), 6 + 3)
    kernel, bias = np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...])
    x64 = np.asarray(x, np.float64)
    magnitude = np.abs(x64) @ np.abs(kernel) + np.abs(bias)
    assert_sum_close(layer(x, deterministic=True), x64 @ kernel + bias, magnitude, 5 + 1)


def test_decoupled_dropout_backward_mask():
    key, x = jax.random.key(1), jnp.ones(30)
    layer = djx.DecoupledDropout(0.4, 0.2, backward="independent")
    g = jax.grad(lambda x: layer(x, rngs=key).sum())(x)
    np.testing.assert_allclose(g, np.where(keep_ref(extra_key(key), (30,), 0.2), 1 / 0.8, 0))


class _Net(nnx.Module):
    def __init__(self, dropout_cls, rngs):
        self.lin = nnx.Linear(4, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = dropout_cls(0.5, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(self.bn(self.lin(x))))


@pytest.mark.parametrize("cls", BOTH)
def test_mc_mode_dropout_on_batchnorm_eval_and_restored(cls):
    net = _Net(cls, nnx.Rngs(0, dropout=1))
    x = jax.random.normal(jax.random.key(0), (8, 4))
    net.bn.mean[...] = jnp.full(16, 0.3)
    net.bn.var[...] = jnp.full(16, 2.0)
    net.eval()
    eval_out = net(x)
    stats_before = (np.asarray(net.bn.mean[...]), np.asarray(net.bn.var[...]))
    with djx.mc_dropout(net):
        assert net.bn.use_running_average and not net.drop.deterministic
        s1, s2 = net(x), net(x)
    assert not np.allclose(s1, s2)
    np.testing.assert_array_equal(net.bn.mean[...], stats_before[0])
    np.testing.assert_array_equal(net.bn.var[...], stats_before[1])
    assert net.drop.deterministic and net.bn.use_running_average
    np.testing.assert_array_equal(net(x), eval_out)
    # From train mode too: BatchNorm is switched to eval inside and back to train after.
    net.train()
    with djx.mc_dropout(net):
        assert net.bn.use_running_average
        net(x)
    np.testing.assert_array_equal(net.bn.mean[...], stats_before[0])
    assert not net.bn.use_running_average
