"""Gao et al.'s forward / backward / augmented dropout in the experiment models, layer-exact.

Each arm's weight gradient and back-propagated error are checked against the definitions
(Definitions 1-2, Eq. 9) written out with explicit numpy masks rebuilt from the documented
mask rule (tests/reference.py), for a dense layer (:class:`DropDense`) and a convolution
(:class:`DropConv`). The elementwise forms, kept as secondary arms, are checked too, so the
test also shows where they differ from the definitions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from experiments.harness.models import DropConv, DropDense, DropoutConfig, _dropout, _layers
from tests.reference import extra_key, keep_ref, nested_keep_ref

P, Q = 0.4, 0.25  # forward (or backward-only) rate, extra nested rate (large, to be visible)
KEY = jax.random.key(7)


def _masks(kind: str, shape):
    """(forward multiplier, backward multiplier) of the input, as float64 numpy arrays."""
    ones = np.ones(shape)
    base = kind.removesuffix("_elementwise")
    if base == "forward":
        return keep_ref(KEY, shape, P) / (1 - P), ones
    if base == "backward":
        return ones, keep_ref(extra_key(KEY), shape, P) / (1 - P)
    assert base == "augmented"
    forward = keep_ref(KEY, shape, P) / (1 - P)
    backward = nested_keep_ref(KEY, shape, P, Q) / ((1 - P) * (1 - Q))
    return forward, backward


def _expected(kind: str, x, g, vjp_of_layer):
    """(d kernel, d x) from the definitions; ``vjp_of_layer(x_in, g) -> (dW, dx_in)``."""
    m_f, m_b = _masks(kind, x.shape)
    if kind.endswith("_elementwise"):
        # The elementwise custom_vjp sits before an ordinary layer: the layer's own VJP sees
        # the forward-masked input, only the error sent further back is multiplied by m_b.
        dw, dx = vjp_of_layer(x * m_f, g)
        return dw, dx * m_b
    # Layer-exact (Eq. 9): the weight gradient uses the backward-masked input, the error
    # is masked by m_b (Def. 1: m_b = 1, nothing dropped backward; Def. 2: m_f = 1).
    dw, dx = vjp_of_layer(x * m_b, g)
    return dw, dx * m_b


KINDS = [
    "forward",
    "backward",
    "augmented",
    "forward_elementwise",
    "backward_elementwise",
    "augmented_elementwise",
]


def _grads(module, x, g):
    variables = module.init(jax.random.key(0), x, False)

    def loss(params, x):
        out = module.apply({"params": params}, x, True, rngs={"dropout": jax.random.key(1)})
        return jnp.sum(out * g), out

    (_, out), (dparams, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], x
    )
    return variables["params"], out, dparams, dx


@pytest.fixture
def fixed_key(monkeypatch):
    """Every DropDense/DropConv draws KEY, so the test knows the masks."""

    def fixed(module, cfg, train):
        return KEY if train and cfg.active else None

    # DropDense lives in _dropout, DropConv in _layers; each looks the name up in its own module.
    for module in (_dropout, _layers):
        monkeypatch.setattr(module, "_draw_key", fixed)


@pytest.mark.parametrize("kind", KINDS)
def test_dense_arm_gradients_match_the_definitions(kind, fixed_key):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 9)).astype(np.float32)
    g = rng.normal(size=(6, 5)).astype(np.float32)
    module = DropDense(5, DropoutConfig(kind, P, Q if "augmented" in kind else 0.0))
    params, out, dparams, dx = _grads(module, jnp.asarray(x), jnp.asarray(g))
    w = np.asarray(params["dense"]["kernel"], np.float64)
    m_f, _ = _masks(kind, x.shape)
    np.testing.assert_allclose(out, (x * m_f) @ w + np.asarray(params["dense"]["bias"]), rtol=1e-5)
    dw_ref, dx_ref = _expected(kind, x.astype(np.float64), g, lambda h, gg: (h.T @ gg, gg @ w.T))
    np.testing.assert_allclose(dparams["dense"]["kernel"], dw_ref, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_ref, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(dparams["dense"]["bias"], g.sum(0), rtol=1e-5)


def _conv_ref(x, w):
    return lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_conv_arm_gradients_match_the_definitions(kind, fixed_key):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    g = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    module = DropConv(4, (3, 3), DropoutConfig(kind, P, Q if "augmented" in kind else 0.0))
    params, out, dparams, dx = _grads(module, jnp.asarray(x), jnp.asarray(g))
    w = params["conv"]["kernel"]
    m_f, _ = _masks(kind, x.shape)
    expect_out = _conv_ref(jnp.asarray(x * m_f, jnp.float32), w) + params["conv"]["bias"]
    np.testing.assert_allclose(out, expect_out, rtol=1e-4, atol=1e-5)

    def vjp(h, gg):  # the convolution's own VJP at input h (plain lax, no dropjax)
        _, pullback = jax.vjp(_conv_ref, jnp.asarray(h, jnp.float32), w)
        dh, dw = pullback(jnp.asarray(gg))
        return np.asarray(dw, np.float64), np.asarray(dh, np.float64)

    dw_ref, dx_ref = _expected(kind, x.astype(np.float64), g, vjp)
    np.testing.assert_allclose(dparams["conv"]["kernel"], dw_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5)


def test_definitions_differ_where_the_paper_says():
    """Def. 1 vs the elementwise forward form: only the weight gradient's input differs."""
    x = np.arange(12.0).reshape(3, 4)
    m_f, m_b = _masks("forward", x.shape)
    assert (m_b == 1).all() and not (m_f == 1).all()
    m_f, m_b = _masks("backward", x.shape)
    assert (m_f == 1).all() and not (m_b == 1).all()
