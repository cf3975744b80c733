"""Drop-in gaps from issue 12: jitted ConcreteDropout, traced rates, errors, lazy imports."""

import inspect
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
import dropjax.linen as djnn
import dropjax.nnx as djnnx
from dropjax import mc
from tests.reference import keep_ref

KEY = jax.random.key(3)


# --- item 2: ConcreteDropout under jit ---------------------------------------------------


class _ConcreteNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = djnn.ConcreteDropout(init_rate=0.2)(x, deterministic=not train)
        return nn.Dense(2)(h)


def test_linen_concrete_dropout_jitted_init_apply_and_chunked_sampling():
    net, x = _ConcreteNet(), jnp.ones((3, 4))
    variables = jax.jit(lambda k: net.init(k, x, train=False))(jax.random.key(0))
    logit = variables["params"]["ConcreteDropout_0"]["rate_logit"]
    np.testing.assert_allclose(logit, np.log(0.2 / 0.8), rtol=1e-6)

    def apply(v, k):
        return net.apply(v, x, train=True, rngs={"dropout": k}, mutable=["losses"])

    y, state = jax.jit(apply)(variables, jax.random.key(1))
    assert y.shape == (3, 2) and "concrete_dropout" in state["losses"]["ConcreteDropout_0"]
    ys = mc.sample_linen(net, variables, x, jax.random.key(2), 4, chunk_size=2, train=True)
    assert ys.shape == (4, 3, 2) and not np.allclose(ys[0], ys[1])


# --- item 4: traced rates ----------------------------------------------------------------


def test_linen_and_nnx_dropout_accept_a_traced_rate():
    x = jax.random.normal(jax.random.key(4), (6, 5))

    @jax.jit
    def linen(rate):
        layer = djnn.Dropout(rate, deterministic=False)
        return layer.apply({}, x, rngs={"dropout": KEY}, rng=KEY)

    @jax.jit
    def nnx_call(rate):
        return djnnx.Dropout(rate)(x, rngs=KEY)

    for rate in (0.25, 0.6):
        expected = np.where(keep_ref(KEY, x.shape, rate), np.asarray(x) / np.float32(1 - rate), 0)
        np.testing.assert_allclose(linen(rate), expected, rtol=1e-6)
        np.testing.assert_allclose(nnx_call(rate), expected, rtol=1e-6)
    np.testing.assert_array_equal(linen(0.0), x)
    np.testing.assert_array_equal(nnx_call(1.0), np.zeros_like(x))


_INVALID = [1.5, -0.1, float("nan"), float("inf")]


def _traced_ops():
    x4 = jnp.ones((2, 6, 6, 3))
    x2 = jnp.ones((4, 5))
    senders, receivers = jnp.array([0, 1, 2]), jnp.array([1, 2, 0])
    return {
        "dropout": lambda r: dropjax.dropout(KEY, x2, r),
        "spatial_dropout": lambda r: dropjax.spatial_dropout(KEY, x4, r),
        "drop_path": lambda r: dropjax.drop_path(KEY, x2, r),
        "dropconnect": lambda r: dropjax.dropconnect(KEY, x2, r),
        "random_rate_dropout": lambda r: dropjax.random_rate_dropout(KEY, x2, r),
        "alpha_dropout": lambda r: dropjax.alpha_dropout(KEY, x2, r),
        "dropblock": lambda r: dropjax.dropblock(KEY, x4, r, block_size=3),
        "gaussian_dropout": lambda r: dropjax.gaussian_dropout(KEY, x2, r),
        "edge_dropout": lambda r: (
            dropjax.edge_dropout(KEY, senders, receivers, r, rescale=False).weight
        ),
        "linen.Dropout": lambda r: djnn.Dropout(r, deterministic=False).apply(
            {}, x2, rngs={"dropout": KEY}
        ),
        "nnx.Dropout": lambda r: djnnx.Dropout(r)(x2, rngs=KEY),
    }


@pytest.mark.parametrize("name", sorted(_traced_ops()))
def test_invalid_traced_rate_gives_nan_not_a_silent_value(name):
    fn = jax.jit(_traced_ops()[name])
    for rate in _INVALID:
        assert np.isnan(np.asarray(fn(rate))).all(), (name, rate)
    assert np.isfinite(np.asarray(fn(0.3))).all()


# --- item 5: errors that name the fix -----------------------------------------------------


def test_swapped_key_and_input_name_the_argument_order():
    x = jnp.ones(4)
    for call in (
        lambda: dropjax.dropout(x, KEY, 0.5),
        lambda: dropjax.spatial_dropout(x[None, :, None], KEY, 0.5),
        lambda: dropjax.alpha_dropout(x, KEY, 0.5),
    ):
        with pytest.raises(TypeError, match=r"argument order is \(key, x, rate\)"):
            call()


def test_keep_mask_accepts_an_int_shape_like_jax_random():
    np.testing.assert_array_equal(dropjax.keep_mask(KEY, 5, 0.5), dropjax.keep_mask(KEY, (5,), 0.5))
    np.testing.assert_array_equal(dropjax.keep_mask(KEY, 5, 0.5), keep_ref(KEY, (5,), 0.5))
    with pytest.raises(TypeError, match="shape must be a tuple of ints"):
        dropjax.keep_mask(KEY, 2.5, 0.5)


def test_dropconnect_dense_rate_in_the_bias_slot_is_refused():
    x, w = jnp.ones((2, 3)), jnp.ones((3, 4))
    with pytest.raises(TypeError, match=r"binds to the bias.*rate=0\.5"):
        dropjax.dropconnect_dense(KEY, x, w, 0.5)
    with pytest.raises(ValueError, match="b must have shape"):
        dropjax.dropconnect_dense(KEY, x, w, 0.5, 0.5)


def test_dropblock_error_names_the_assumed_layout():
    nchw = jnp.ones((2, 3, 8, 8))  # channels second, read as NHWC by default
    with pytest.raises(ValueError, match=r"spatial axes \(1, 2\).*channel_axis=1"):
        dropjax.dropblock(KEY, nchw, 0.2, block_size=5)
    y = dropjax.dropblock(KEY, nchw, 0.2, block_size=5, channel_axis=1)
    assert y.shape == nchw.shape


@pytest.mark.parametrize(
    "build",
    [
        lambda: djnn.Dropout(1.5),
        lambda: djnn.DecoupledDropout(0.2, -0.1),
        lambda: djnn.RandomRateDropout(2.0),
        lambda: djnn.DropConnectDense(3, 1.5),
        lambda: djnn.ConcreteDropout(init_rate=1.0),
        lambda: djnnx.Dropout(1.5),
        lambda: djnnx.DecoupledDropout(0.2, -0.1),
        lambda: djnnx.SpatialDropout(1.2),
        lambda: djnnx.ConcreteDropout(init_rate=0.0),
    ],
)
def test_constructors_validate_a_concrete_rate(build):
    with pytest.raises(ValueError, match=r"must be in"):
        build()


# --- item 6: lazy submodules, docstrings, warnings ----------------------------------------


def test_submodules_load_lazily_without_importing_flax():
    code = (
        "import sys, dropjax\n"
        "assert not any(m == 'flax' or m.startswith('flax.') for m in sys.modules), 'eager'\n"
        "assert dropjax.linen.Dropout and dropjax.nnx.Dropout\n"
        "assert dropjax.uncertainty and dropjax.acquisition\n"
        "assert 'flax' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu"})


def test_linen_classes_document_their_attributes():
    for name in djnn.__all__:
        obj = getattr(djnn, name)
        if inspect.isclass(obj) and issubclass(obj, nn.Module):
            assert "Attributes:" in (obj.__doc__ or ""), name


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool):
        return nn.Dense(2)(djnn.Dropout(0.5, deterministic=not train)(x))


def test_sample_linen_warns_when_every_sample_is_identical():
    net, x = _Net(), jnp.ones((3, 4))
    variables = net.init(jax.random.key(0), x, train=False)
    with pytest.warns(UserWarning, match="samples are identical.*deterministic=False"):
        mc.sample_linen(net, variables, x, jax.random.key(1), 2, train=False)
    ys = mc.sample_linen(net, variables, x, jax.random.key(1), 2, train=True)  # no warning
    assert not np.allclose(ys[0], ys[1])
