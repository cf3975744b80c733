"""experiments.harness.models: shapes, dropout configurations, the exact layers and
Caffe pooling against independent references."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.harness import models as models_lib
from experiments.harness.models import (
    DROPOUT_KINDS,
    GCN,
    MLP,
    ConvNetQuick,
    DropoutConfig,
    LeNet,
    ResNet,
    make_dropout,
)
from tests.experiments.harness.toy import dropout_cfg

# --------------------------------------------------------------------------- models

_MODELS = {
    "lenet": (lambda cfg: LeNet(dropout=cfg), (2, 28, 28, 1)),
    "convnet_quick": (lambda cfg: ConvNetQuick(dropout=cfg), (2, 32, 32, 3)),
    "resnet": (lambda cfg: ResNet(dropout=cfg, stage_blocks=(1, 1), widths=(4, 8)), (2, 8, 8, 3)),
    "mlp": (lambda cfg: MLP(hidden=(16, 8), input_dropout=cfg, dropout=cfg), (2, 8, 8, 1)),
}


@pytest.mark.parametrize("kind", DROPOUT_KINDS)
@pytest.mark.parametrize("name", sorted(_MODELS))
def test_model_output_shapes(name, kind):
    build, shape = _MODELS[name]
    model = build(dropout_cfg(kind))
    x = jax.random.normal(jax.random.key(0), shape)
    variables = model.init(jax.random.key(1), x, train=False)
    rngs = {"dropout": jax.random.key(2)}
    if kind in ("dropblock", "spatial") and name != "resnet":  # dropout feeds a dense layer
        with pytest.raises(ValueError, match="NHWC feature map"):
            model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return
    train_out, _ = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
    eval_out = model.apply(variables, x, train=False)
    for out in (train_out, eval_out):
        assert out.shape == (2, 10) and out.dtype == jnp.float32
        assert bool(jnp.isfinite(out).all())
    if kind not in ("none", "backward", "backward_elementwise"):  # forward pass untouched
        assert not np.allclose(train_out, eval_out)  # dropout (or BN in training) acted


@pytest.mark.parametrize(
    "kind", ["none", "standard", "augmented", "augmented_elementwise", "gaussian"]
)
def test_gcn_output_shape(kind):
    senders, receivers = jnp.array([0, 1, 2, 3, 4]), jnp.array([1, 2, 3, 4, 0])
    x = jax.random.normal(jax.random.key(0), (5, 6))
    model = GCN(hidden=8, num_classes=3, dropout=dropout_cfg(kind), edge_rate=0.4)
    variables = model.init(jax.random.key(1), x, senders, receivers)
    out = model.apply(
        variables, x, senders, receivers, train=True, rngs={"dropout": jax.random.key(2)}
    )
    assert out.shape == (5, 3) and bool(jnp.isfinite(out).all())
    assert model.apply(variables, x, senders, receivers).shape == (5, 3)


def test_dropout_config_validates_and_factory_refuses_exact():
    with pytest.raises(ValueError, match="unknown dropout kind"):
        DropoutConfig("bernoulli", 0.5)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        DropoutConfig("standard", 1.5)
    with pytest.raises(ValueError, match="DropDense or DropConv"):
        make_dropout(DropoutConfig("augmented", 0.5, 1e-4))
    assert isinstance(make_dropout(DropoutConfig("standard", 0.0)), models_lib.Identity)


def _lenet_grads(kind: str, backward_rate: float):
    """Initial params, train-mode logits and parameter gradients of LeNet for one kind."""
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    y = jnp.array([0, 1, 2, 3])
    model = LeNet(dropout=DropoutConfig(kind, 0.5 if kind != "none" else 0.0, backward_rate))
    params = model.init(jax.random.key(1), x, train=False)["params"]

    def loss(p):
        logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(3)})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return params, logits, grads


def test_kinds_are_paired_and_exact_changes_only_the_weight_gradient():
    ref_params, ref_logits, ref_grads = _lenet_grads("standard", 0.0)
    for kind in ("forward", "augmented", "forward_elementwise", "augmented_elementwise"):
        params, logits, _ = _lenet_grads(kind, 0.3)
        jax.tree.map(np.testing.assert_array_equal, params, ref_params)  # same init
        np.testing.assert_array_equal(logits, ref_logits)  # same forward mask
    # Backward dropout: the forward pass is the model without dropout.
    _, none_logits, _ = _lenet_grads("none", 0.0)
    _, back_logits, _ = _lenet_grads("backward", 0.0)
    np.testing.assert_allclose(back_logits, none_logits, rtol=1e-6)
    # With no extra backward rate both augmented forms are standard dropout, gradients too.
    for kind in ("augmented", "augmented_elementwise"):
        _, _, grads = _lenet_grads(kind, 0.0)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5), grads, ref_grads)
    # Eq. 9: the exact form changes the last layer's kernel gradient (it uses h * eps_b),
    # while the error sent back to the earlier layers is the same (W^T delta) * eps_b.
    _, _, elem = _lenet_grads("augmented_elementwise", 0.3)
    _, _, exact = _lenet_grads("augmented", 0.3)
    assert not np.allclose(elem["ip2"]["dense"]["kernel"], exact["ip2"]["dense"]["kernel"])
    np.testing.assert_allclose(
        elem["ip2"]["dense"]["bias"], exact["ip2"]["dense"]["bias"], rtol=1e-6
    )
    np.testing.assert_allclose(
        elem["conv1"]["kernel"], exact["conv1"]["kernel"], rtol=2e-5, atol=1e-7
    )
    assert not np.allclose(elem["conv1"]["kernel"], ref_grads["conv1"]["kernel"])


# --------------------------------------------------------------------------- pooling


def _caffe_pool_loops(x: np.ndarray, kind: str) -> np.ndarray:
    """Caffe's ceil-mode 3x3/2 pooling as explicit loops (the windows clipped at the edge)."""
    n, h, w, c = x.shape
    oh, ow = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
    out = np.zeros((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            win = x[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            out[:, i, j] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size", [(32, 32), (28, 28), (7, 7), (8, 5)])
def test_caffe_pool_matches_loops_and_flax_gradient(kind, size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    out = models_lib.caffe_pool(x, kind)
    np.testing.assert_allclose(out, _caffe_pool_loops(np.asarray(x), kind), rtol=1e-6, atol=1e-6)
    # The gradient equals Flax's pooling with the right padding that gives the ceil size.
    pad = tuple((0, (o - 1) * 2 + 3 - s) for o, s in zip(out.shape[1:3], size, strict=True))
    if kind == "max":
        ref = lambda z: nn.max_pool(z, (3, 3), strides=(2, 2), padding=pad)
    else:
        ref = lambda z: nn.avg_pool(z, (3, 3), (2, 2), padding=pad, count_include_pad=False)
    g = jax.grad(lambda z: jnp.sum(jnp.sin(models_lib.caffe_pool(z, kind))))(x)
    np.testing.assert_allclose(g, jax.grad(lambda z: jnp.sum(jnp.sin(ref(z))))(x), atol=1e-6)
