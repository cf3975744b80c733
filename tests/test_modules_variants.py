"""The variant modules in dropjax.linen and dropjax.nnx call the functional ops faithfully."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropjax
import dropjax.linen as djnn
import dropjax.nnx as djx

X4 = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))

# (linen module, nnx module, functional op taking (key, x)), all on the same NHWC input.
CASES = {
    "random_rate": (
        djnn.RandomRateDropout(0.5, per_example=True),
        lambda r: djx.RandomRateDropout(0.5, per_example=True, rngs=r),
        lambda k, x: dropjax.random_rate_dropout(k, x, 0.5, per_example=True),
    ),
    "gaussian": (
        djnn.GaussianDropout(0.3),
        lambda r: djx.GaussianDropout(0.3, rngs=r),
        lambda k, x: dropjax.gaussian_dropout(k, x, 0.3),
    ),
    "alpha": (
        djnn.AlphaDropout(0.2),
        lambda r: djx.AlphaDropout(0.2, rngs=r),
        lambda k, x: dropjax.alpha_dropout(k, x, 0.2),
    ),
    "spatial": (
        djnn.SpatialDropout(0.5),
        lambda r: djx.SpatialDropout(0.5, rngs=r),
        lambda k, x: dropjax.spatial_dropout(k, x, 0.5),
    ),
    "dropblock": (
        djnn.DropBlock(0.2, block_size=3),
        lambda r: djx.DropBlock(0.2, block_size=3, rngs=r),
        lambda k, x: dropjax.dropblock(k, x, 0.2, block_size=3),
    ),
    "drop_path": (
        djnn.DropPath(0.5),
        lambda r: djx.DropPath(0.5, rngs=r),
        lambda k, x: dropjax.drop_path(k, x, 0.5),
    ),
    "decoupled": (
        djnn.DecoupledDropout(0.4, 0.1),
        lambda r: djx.DecoupledDropout(0.4, 0.1, rngs=r),
        lambda k, x: dropjax.decoupled_dropout(k, x, 0.4, 0.1),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_linen_module_equals_functional_op(name):
    module, _, op = CASES[name]
    key = jax.random.key(3)
    y = module.apply({}, X4, deterministic=False, rng=key)
    np.testing.assert_array_equal(y, op(key, X4))
    via_collection = module.apply({}, X4, deterministic=False, rngs={"dropout": key})
    assert via_collection.shape == X4.shape and via_collection.dtype == X4.dtype
    np.testing.assert_array_equal(module.apply({}, X4, deterministic=True), X4)
    g = jax.grad(lambda x: module.apply({}, x, deterministic=False, rng=key).sum())(X4)
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_nnx_module_equals_functional_op(name):
    _, make, op = CASES[name]
    layer = make(nnx.Rngs(dropout=0))
    key = jax.random.key(3)
    np.testing.assert_array_equal(layer(X4, rngs=key), op(key, X4))
    np.testing.assert_array_equal(layer(X4, deterministic=True), X4)
    layer.eval()
    np.testing.assert_array_equal(layer(X4), X4)
    layer.train()
    outs = [np.asarray(layer(X4)) for _ in range(6)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:]), "a new key each call"


@pytest.mark.parametrize("name", sorted(CASES))
def test_mc_mode_turns_variants_on(name):
    module, make, _ = CASES[name]
    with djnn.mc_dropout():
        y = module.apply({}, X4, deterministic=True, rngs={"dropout": jax.random.key(1)})
    assert not np.array_equal(y, X4)
    layer = make(nnx.Rngs(dropout=0))
    layer.eval()
    with djx.mc_dropout(layer):
        assert not np.array_equal(layer(X4), X4)
    np.testing.assert_array_equal(layer(X4), X4)


def test_dropconnect_dense_modules():
    x = jax.random.normal(jax.random.key(0), (4, 6))
    key = jax.random.key(5)
    layer = djnn.DropConnectDense(3, 0.5)
    v = layer.init(jax.random.key(1), x, deterministic=True)
    k, b = v["params"]["kernel"], v["params"]["bias"]
    np.testing.assert_array_equal(
        layer.apply(v, x, False, rng=key), dropjax.dropconnect_dense(key, x, k, b, 0.5)
    )
    np.testing.assert_allclose(layer.apply(v, x, True), x @ k + b, rtol=1e-6)
    nl = djx.DropConnectDense(6, 3, 0.5, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(
        nl(x, rngs=key), dropjax.dropconnect_dense(key, x, nl.kernel[...], nl.bias[...], 0.5)
    )


def test_concrete_dropout_modules_learn_the_rate():
    x = jax.random.normal(jax.random.key(0), (16, 5))
    layer = djnn.ConcreteDropout(init_rate=0.2, dropout_regularizer=1.0)
    v = layer.init(jax.random.key(1), x, deterministic=True)
    np.testing.assert_allclose(jax.nn.sigmoid(v["params"]["rate_logit"]), 0.2, rtol=1e-6)

    def loss(params):
        y, state = layer.apply(
            {"params": params}, x, deterministic=False, rng=jax.random.key(2), mutable=["losses"]
        )
        return jnp.sum(y**2) + sum(jax.tree.leaves(state["losses"]))

    grad = jax.grad(loss)(v["params"])["rate_logit"]
    assert np.isfinite(float(grad)) and float(grad) != 0.0
    expected_reg = dropjax.concrete_dropout_regularizer(
        v["params"]["rate_logit"],
        (),
        weight_regularizer=1e-6,
        dropout_regularizer=1.0,
        input_dim=5,
    )
    _, state = layer.apply(v, x, deterministic=False, rng=jax.random.key(2), mutable=["losses"])
    np.testing.assert_allclose(state["losses"]["concrete_dropout"][0], expected_reg, rtol=1e-6)
    nl = djx.ConcreteDropout(init_rate=0.2, rngs=nnx.Rngs(dropout=0))
    g = nnx.grad(lambda m: jnp.sum(m(x) ** 2) + m.regularizer(input_dim=5))(nl)
    assert float(g.rate_logit[...]) != 0.0


def test_linen_modules_in_a_model_with_train_flag():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            x = djnn.SpatialDropout(0.5, deterministic=not train)(x)
            x = djnn.DropBlock(0.1, block_size=3, deterministic=not train)(x)
            x = x.reshape(x.shape[0], -1)
            return djnn.DecoupledDense(4, 0.3, 1e-4, deterministic=not train)(x)

    net = Net()
    v = net.init(jax.random.key(0), X4, train=False)
    a = net.apply(v, X4, train=True, rngs={"dropout": jax.random.key(1)})
    b = net.apply(v, X4, train=False)
    assert a.shape == b.shape == (2, 4) and not np.allclose(a, b)
