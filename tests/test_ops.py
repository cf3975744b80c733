"""dropout: statistics, edges, transforms, and semantics against explicit masks."""

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.test_util import check_grads

import dropjax
from tests.reference import keep_ref, sigma_bound


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.8, 0.95])
def test_kept_fraction_and_mean_preserved(rate):
    n = 200_000
    y = np.asarray(dropjax.dropout(jax.random.key(1), jnp.ones(n), rate))
    assert abs((y != 0).mean() - (1 - rate)) < sigma_bound(n, 1 - rate)
    # y_i is 0 or 1/(1-p): mean 1, standard deviation sqrt(p/(1-p)).
    assert abs(y.mean() - 1.0) < 4 * np.sqrt(rate / (1 - rate) / n)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dims", [(), (0,), (-1,), (0, 2)])
def test_value_equals_explicit_mask_reference(rate, dims):
    key = jax.random.key(4)
    x = jax.random.normal(jax.random.key(5), (5, 7, 3))
    expected = np.where(keep_ref(key, x.shape, rate, dims), np.asarray(x) / np.float32(1 - rate), 0)
    got = dropjax.dropout(key, x, rate, broadcast_dims=dims)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_broadcast_slices_are_constant():
    y = np.asarray(
        dropjax.dropout(jax.random.key(0), jnp.ones((4, 50, 3)), 0.5, broadcast_dims=(1,))
    )
    assert (y == y[:, :1, :]).all()
    assert len(np.unique(y)) == 2


def test_locked_dropout_over_time():
    # Variational ("locked") dropout: one mask per sequence, shared over the time axis.
    x = jnp.ones((2, 10, 8))  # (batch, time, features)
    y = np.asarray(dropjax.dropout(jax.random.key(3), x, 0.5, broadcast_dims=(1,)))
    for b in range(2):
        assert (y[b] == y[b, 0]).all()
    assert not np.array_equal(y[0, 0], y[1, 0])


def test_rate_zero_and_deterministic_return_input():
    x = jnp.arange(6.0)
    assert dropjax.dropout(jax.random.key(0), x, 0.0) is x
    assert dropjax.dropout(None, x, 0.7, deterministic=True) is x


@pytest.mark.parametrize("traced", [False, True])
def test_rate_one_gives_zeros_with_finite_zero_gradient(traced):
    x = jnp.arange(1.0, 5.0)
    key = jax.random.key(0)
    if traced:
        f = jax.jit(lambda x, r: dropjax.dropout(key, x, r).sum())
        value, grad = jax.value_and_grad(f)(x, jnp.float32(1.0))
    else:
        f = lambda x: dropjax.dropout(key, x, 1.0).sum()
        value, grad = jax.value_and_grad(f)(x)
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros(4))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_is_kept_and_no_promotion(dtype):
    x = jnp.ones((8, 8), dtype)
    y = dropjax.dropout(jax.random.key(0), x, 0.1)
    assert y.dtype == dtype
    g = jax.grad(lambda x: dropjax.dropout(jax.random.key(0), x, 0.1).astype(jnp.float32).sum())(x)
    assert g.dtype == dtype
    # The scale is computed in float32 and rounded once: bf16(1/0.9), not bf16(1)/bf16(0.9).
    kept = np.asarray(y.astype(jnp.float32))[np.asarray(y.astype(jnp.float32)) != 0]
    np.testing.assert_array_equal(kept, np.float32(jnp.asarray(1 / 0.9, jnp.float32).astype(dtype)))


def test_gradient_is_masked_and_scaled_cotangent():
    key, rate = jax.random.key(8), 0.4
    x = jax.random.normal(jax.random.key(1), (30,))
    g = jax.random.normal(jax.random.key(2), (30,))
    _, vjp = jax.vjp(lambda x: dropjax.dropout(key, x, rate), x)
    expected = np.where(keep_ref(key, (30,), rate), np.asarray(g) / np.float32(1 - rate), 0)
    np.testing.assert_allclose(vjp(g)[0], expected, rtol=1e-6)
    check_grads(lambda x: dropjax.dropout(key, x, rate), (x,), order=1, modes=["rev"])


def test_jit_equals_eager_bit_for_bit():
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(0), (33, 17))
    eager = dropjax.dropout(key, x, 0.3, broadcast_dims=(0,))
    jitted = jax.jit(lambda k, x, r: dropjax.dropout(k, x, r, broadcast_dims=(0,)))(
        key, x, jnp.float32(0.3)
    )
    np.testing.assert_array_equal(eager, jitted)


def test_vmap_over_keys_equals_python_loop():
    keys = jax.random.split(jax.random.key(0), 5)
    x = jnp.ones((4, 6))
    batched = jax.vmap(lambda k: dropjax.dropout(k, x, 0.5))(keys)
    grads = jax.vmap(jax.grad(lambda x, k: dropjax.dropout(k, x, 0.5).sum()), (None, 0))(x, keys)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], dropjax.dropout(keys[i], x, 0.5))
        np.testing.assert_array_equal(
            grads[i], jax.grad(lambda x: dropjax.dropout(keys[i], x, 0.5).sum())(x)
        )


def test_vmap_over_rates():
    key, x = jax.random.key(6), jnp.ones(20)
    rates = jnp.array([0.0, 0.25, 0.5, 1.0])
    batched = jax.vmap(lambda r: dropjax.dropout(key, x, r))(rates)
    for i, r in enumerate([0.0, 0.25, 0.5, 1.0]):
        expected = np.where(keep_ref(key, (20,), r), 1 / (1 - r) if r < 1 else 0.0, 0.0)
        np.testing.assert_allclose(batched[i], expected, rtol=1e-6)


def test_traced_rate_does_not_recompile():
    traces = []

    @jax.jit
    def step(key, x, rate):
        traces.append(1)
        return dropjax.dropout(key, x, rate)

    x = jnp.ones(10)
    for r in [0.1, 0.2, 0.5, 0.9]:
        step(jax.random.key(0), x, jnp.float32(r))
    assert len(traces) == 1


def test_backward_keeps_the_key_not_a_mask(capsys):
    key = jax.random.key(0)
    w = jnp.arange(512.0)
    jax.ad_checkpoint.print_saved_residuals(lambda x: (dropjax.dropout(key, x, 0.5) * w).sum(), w)
    residuals = capsys.readouterr().out
    assert "key<fry>[]" in residuals
    assert "bool[512]" not in residuals


def test_same_values_when_sharded_over_eight_devices():
    mesh = Mesh(np.array(jax.devices()), ("d",))
    sharding = NamedSharding(mesh, PartitionSpec("d", None))
    key = jax.random.key(2)
    x = jax.random.normal(jax.random.key(1), (64, 8))
    xs = jax.device_put(x, sharding)
    y = jax.jit(lambda k, x: dropjax.dropout(k, x, 0.5))(key, xs)
    assert len(y.sharding.device_set) == 8
    np.testing.assert_array_equal(y, dropjax.dropout(key, x, 0.5))


def test_bad_inputs_name_the_fix():
    key, x = jax.random.key(0), jnp.ones(3)
    with pytest.raises(ValueError, match="1.5"):
        dropjax.dropout(key, x, 1.5)
    with pytest.raises(ValueError, match="-0.2"):
        dropjax.dropout(key, x, -0.2)
    with pytest.raises(TypeError, match="floating"):
        dropjax.dropout(key, jnp.arange(3), 0.5)
    with pytest.raises(ValueError, match="out of range"):
        dropjax.dropout(key, x, 0.5, broadcast_dims=(1,))
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        dropjax.dropout(42, x, 0.5)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        dropjax.dropout(jax.random.split(key, 3), x, 0.5)
    with pytest.raises(ValueError, match=r"key=jax\.random\.key"):
        dropjax.dropout(None, x, 0.5)
