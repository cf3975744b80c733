"""Issue 25, item 3: sparse variational dropout as its layers actually behave.

* ``sparsity`` (linen and NNX) prunes each layer with its own ``threshold`` and ``clip``;
  the reference is the layer's own evaluation pass (a bias-free layer applied to the
  identity returns its pruned kernel) and an explicit numpy formula.
* ``VariationalConv`` takes an int ``kernel_size`` as ``nn.Conv``/``nnx.Conv`` do.
* ``kl_kingma`` clips log alpha to its fitted range, log alpha <= 0.
* The swapped-argument errors suggest calls that work.
"""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropjax
import dropjax.linen as djnn
import dropjax.nnx as djx

C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921  # Kingma et al. (2015), Section 3.3


def _nonzero_ref(theta, log_sigma2, threshold, clip):
    """Weights kept by Molchanov et al.'s rule, in float64 numpy."""
    theta = np.asarray(theta, np.float64)
    la = np.asarray(log_sigma2, np.float64) - np.log(theta**2 + 1e-8)
    if clip is not None:
        la = np.clip(la, -clip, clip)
    return int(((la <= threshold) & (theta != 0)).sum())


def _pruned_by_eval_linen(layer, variables, n_in):
    """The kernel the layer's deterministic pass uses: a bias-free layer at the identity."""
    return np.asarray(layer.apply(variables, jnp.eye(n_in), deterministic=True))


# ----------------------------------------------------------------------- sparsity, NNX


def test_nnx_sparsity_uses_a_layer_threshold_that_prunes_every_weight():
    layer = djx.VariationalDense(4, 3, use_bias=False, threshold=-20.0, rngs=nnx.Rngs(0))
    pruned = np.asarray(layer(jnp.eye(4), deterministic=True))
    assert not pruned.any()  # the layer itself prunes everything in eval
    s = djx.sparsity(layer)
    assert s["total"]["nonzero"] == 0 and s["total"]["compression"] == math.inf


def test_nnx_sparsity_uses_a_layer_clip_that_prevents_pruning():
    layer = djx.VariationalDense(4, 3, use_bias=False, clip=2.0, rngs=nnx.Rngs(0))
    layer.log_sigma2[...] = jnp.full((4, 3), 10.0)  # raw log alpha > 8, clipped to 2 < 3
    pruned = np.asarray(layer(jnp.eye(4), deterministic=True))
    np.testing.assert_array_equal(pruned, np.asarray(layer.kernel[...]))  # nothing pruned
    s = djx.sparsity(layer)
    assert s["total"]["nonzero"] == 12 and s["total"]["compression"] == 1.0


class _TwoLayers(nnx.Module):
    def __init__(self, rngs):
        self.a = djx.VariationalDense(5, 4, use_bias=False, threshold=-1.0, rngs=rngs)
        self.b = djx.VariationalConv(2, 3, (3, 3), threshold=1.0, clip=None, rngs=rngs)


def test_nnx_sparsity_per_layer_settings_match_numpy_and_override():
    model = _TwoLayers(nnx.Rngs(1))
    rng = np.random.default_rng(0)
    for layer in (model.a, model.b):
        shape = layer.kernel[...].shape
        layer.log_sigma2[...] = jnp.asarray(rng.uniform(-8.0, 12.0, shape), jnp.float32)
    s = djx.sparsity(model)
    expected = {
        "a": _nonzero_ref(model.a.kernel[...], model.a.log_sigma2[...], -1.0, 8.0),
        "b": _nonzero_ref(model.b.kernel[...], model.b.log_sigma2[...], 1.0, None),
    }
    assert {k: v["nonzero"] for k, v in s["layers"].items()} == expected
    assert 0 < expected["a"] < 20 and 0 < expected["b"] < 54  # both settings matter
    # The layer's own eval pass agrees.
    assert np.count_nonzero(model.a(jnp.eye(5), deterministic=True)) == expected["a"]
    # An explicit threshold/clip applies to every layer instead.
    s3 = djx.sparsity(model, 3.0, clip=8.0)
    for name, layer in (("a", model.a), ("b", model.b)):
        ref = _nonzero_ref(layer.kernel[...], layer.log_sigma2[...], 3.0, 8.0)
        assert s3["layers"][name]["nonzero"] == ref


# --------------------------------------------------------------------- sparsity, linen


def test_linen_sparsity_uses_a_layer_threshold_that_prunes_every_weight():
    layer = djnn.VariationalDense(3, use_bias=False, threshold=-20.0)
    v = layer.init(jax.random.key(0), jnp.ones((1, 4)), deterministic=True)
    assert not _pruned_by_eval_linen(layer, {"params": v["params"]}, 4).any()
    s = djnn.sparsity(v)
    assert s["total"]["nonzero"] == 0 and s["total"]["compression"] == math.inf
    # Jitted init records the settings as well.
    vj = jax.jit(lambda k: layer.init(k, jnp.ones((1, 4)), deterministic=True))(jax.random.key(0))
    assert djnn.sparsity(vj)["total"]["compression"] == math.inf


def test_linen_sparsity_uses_a_layer_clip_that_prevents_pruning():
    layer = djnn.VariationalDense(3, use_bias=False, clip=2.0)
    v = layer.init(jax.random.key(0), jnp.ones((1, 4)), deterministic=True)
    v = {**v, "params": {**v["params"], "log_sigma2": jnp.full((4, 3), 10.0)}}
    pruned = _pruned_by_eval_linen(layer, {"params": v["params"]}, 4)
    np.testing.assert_array_equal(pruned, np.asarray(v["params"]["kernel"]))
    s = djnn.sparsity(v)
    assert s["total"]["nonzero"] == 12 and s["total"]["compression"] == 1.0


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = djnn.VariationalConv(2, 3, threshold=1.0, clip=None, use_bias=False)(x, deterministic)
        h = h.reshape(h.shape[0], -1)
        return djnn.VariationalDense(3, threshold=-1.0, name="head")(h, deterministic)


def test_linen_sparsity_per_layer_settings_match_numpy():
    net, x = _LinenNet(), jnp.ones((1, 6, 2))
    v = net.init(jax.random.key(1), x)
    rng = np.random.default_rng(1)
    params = jax.tree.map(np.asarray, v["params"])
    for name in params:
        shape = params[name]["kernel"].shape
        params[name]["log_sigma2"] = rng.uniform(-8.0, 12.0, shape).astype(np.float32)
    v = {**v, "params": params}
    s = djnn.sparsity(v)
    conv, head = params["VariationalConv_0"], params["head"]
    expected = {
        "VariationalConv_0": _nonzero_ref(conv["kernel"], conv["log_sigma2"], 1.0, None),
        "head": _nonzero_ref(head["kernel"], head["log_sigma2"], -1.0, 8.0),
    }
    assert {k: v["nonzero"] for k, v in s["layers"].items()} == expected
    assert 0 < expected["VariationalConv_0"] < 12 and 0 < expected["head"] < 18
    # Bare params carry no settings: the documented defaults (3, 8) apply.
    bare = djnn.sparsity(params)
    for name, layer in (("VariationalConv_0", conv), ("head", head)):
        ref = _nonzero_ref(layer["kernel"], layer["log_sigma2"], 3.0, 8.0)
        assert bare["layers"][name]["nonzero"] == ref
    # An explicit threshold overrides the recorded ones.
    s3 = djnn.sparsity(v, 3.0, clip=8.0)
    assert s3["layers"] == bare["layers"]


# ----------------------------------------------------------------- int kernel_size


def test_linen_variational_conv_takes_an_int_kernel_size_like_nn_conv():
    x = jax.random.normal(jax.random.key(2), (2, 7, 3))
    ours = djnn.VariationalConv(4, 3, log_sigma2_init=-40.0)  # alpha ~ 0: nothing pruned
    v = ours.init(jax.random.key(3), x, deterministic=True)
    p = v["params"]
    assert p["kernel"].shape == (3, 3, 4)
    ref = nn.Conv(4, kernel_size=3).apply({"params": {"kernel": p["kernel"], "bias": p["bias"]}}, x)
    got = ours.apply({"params": p}, x, deterministic=True)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    sampled = ours.apply({"params": p}, x, deterministic=False, rng=jax.random.key(4))
    assert sampled.shape == ref.shape


def test_nnx_variational_conv_takes_an_int_kernel_size_like_nnx_conv():
    x = jax.random.normal(jax.random.key(5), (2, 7, 3))
    ours = djx.VariationalConv(3, 4, 3, log_sigma2_init=-40.0, rngs=nnx.Rngs(0))
    theirs = nnx.Conv(3, 4, 3, rngs=nnx.Rngs(1))
    assert ours.kernel[...].shape == theirs.kernel[...].shape == (3, 3, 4)
    theirs.kernel[...] = ours.kernel[...]
    theirs.bias[...] = jnp.linspace(-1.0, 1.0, 4)
    ours.bias[...] = theirs.bias[...]
    np.testing.assert_allclose(ours(x, deterministic=True), theirs(x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- kl_kingma


def _kingma_ref(la):
    a = np.exp(la)
    return -(0.5 * la + C1 * a + C2 * a**2 + C3 * a**3)


def test_kl_kingma_is_the_polynomial_below_zero_and_its_value_at_one_above():
    below = np.linspace(-6.0, 0.0, 25)
    np.testing.assert_allclose(
        dropjax.kl_kingma(jnp.asarray(below, jnp.float32)), _kingma_ref(below), rtol=1e-5, atol=1e-6
    )
    above = jnp.array([0.0, 0.5, 3.0, 10.0, 50.0, 1e4, np.inf], jnp.float32)
    at_one = -(C1 + C2 + C3)  # alpha = 1
    np.testing.assert_allclose(dropjax.kl_kingma(above), at_one, rtol=1e-6)
    # Bounded below and non-increasing in alpha over the whole line (no -4170, no -inf).
    grid = jnp.linspace(-10.0, 40.0, 501)
    kl = np.asarray(dropjax.kl_kingma(grid))
    assert np.isfinite(kl).all() and kl.min() >= at_one - 1e-6
    assert (np.diff(kl) <= 1e-6).all()


def test_kl_kingma_gradient_is_the_polynomial_derivative_then_zero():
    la = jnp.array([-3.0, -1.0, -0.25, 0.5, 3.0, 30.0], jnp.float32)
    grad = np.asarray(jax.grad(lambda v: dropjax.kl_kingma(v).sum())(la))
    a = np.exp(np.asarray(la, np.float64))
    expected = -(0.5 + C1 * a + 2 * C2 * a**2 + 3 * C3 * a**3)
    expected[np.asarray(la) > 0] = 0.0
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ swapped-argument errors


def _suggested_call(call, namespace):
    """Calls ``call``, which must raise TypeError, and evaluates the call it suggests."""
    with pytest.raises(TypeError, match="argument order") as info:
        call()
    match = re.search(r"e\.g\. (.+)$", str(info.value))
    assert match, str(info.value)
    return match.group(1), eval(match.group(1), {"jax": jax, "jnp": jnp, **namespace})  # noqa: S307


def test_swapped_variational_arguments_suggest_a_call_that_works():
    key = jax.random.key(0)
    x, kernel, log_alpha = jnp.ones((2, 3)), jnp.full((3, 4), 0.5), jnp.full((3, 4), -1.0)
    ns = {
        "x": x,
        "kernel": kernel,
        "log_alpha": log_alpha,
        "variational_dense": dropjax.variational_dense,
        "variational_dropout": dropjax.variational_dropout,
        "variational_conv": dropjax.variational_conv,
    }
    # The key where x goes, and x where the key goes.
    for call in (
        lambda: dropjax.variational_dense(x, key, kernel, log_alpha),
        lambda: dropjax.variational_dense(x, x, kernel, log_alpha),
    ):
        text, y = _suggested_call(call, ns)
        assert text.startswith("variational_dense(") and y.shape == (2, 4)
    ns_drop = {**ns, "log_alpha": jnp.float32(-1.0)}
    text, y = _suggested_call(lambda: dropjax.variational_dropout(x, key, -1.0), ns_drop)
    assert text.startswith("variational_dropout(") and y.shape == x.shape
    assert "log_alpha" in text  # the third argument is log alpha, not a rate
    xc, kc = jnp.ones((1, 5, 5, 2)), jnp.full((3, 3, 2, 4), 0.1)
    ns_conv = {**ns, "x": xc, "kernel": kc, "log_alpha": jnp.float32(-2.0)}
    text, y = _suggested_call(lambda: dropjax.variational_conv(xc, key, kc, -2.0), ns_conv)
    assert y.shape == (1, 5, 5, 4)


def test_other_swapped_argument_errors_suggest_calls_that_work():
    key, x, w = jax.random.key(0), jnp.ones((2, 3)), jnp.ones((3, 4))
    ns = {
        "x": x,
        "w": w,
        "fn": lambda p, h: h @ p,
        "params": w,
        "decoupled_dropout": dropjax.decoupled_dropout,
        "dropconnect_dense": dropjax.dropconnect_dense,
        "concrete_dropout": dropjax.concrete_dropout,
        "decoupled_call": dropjax.decoupled_call,
        "dropout": dropjax.dropout,
    }
    cases = [
        (lambda: dropjax.decoupled_dropout(x, key, 0.5, 0.1), x.shape),
        (lambda: dropjax.augmented_dropout(x, key, 0.5, 1e-4), x.shape),
        (lambda: dropjax.dropconnect_dense(x, key, w, rate=0.5), (2, 4)),
        (lambda: dropjax.concrete_dropout(x, key, -2.0), x.shape),
        (lambda: dropjax.decoupled_call(key, ns["fn"], w, key, 0.5, 0.1), (2, 4)),
        (lambda: dropjax.dropout(x, key, 0.5), x.shape),
    ]
    for call, shape in cases:
        _, y = _suggested_call(call, ns)
        assert y.shape == shape
