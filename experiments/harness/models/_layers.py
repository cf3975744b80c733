"""Part of :mod:`experiments.harness.models` (see there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import dropjax
import dropjax.linen
from dropjax.cpu_conv import conv_general_dilated
from experiments.harness.models._dropout import (
    LAYER_EXACT_KINDS,
    NO_DROPOUT,
    DropDense,
    DropoutConfig,
    _check_feature_map,
    _Conv,
    _draw_key,
    _PatchConv,
    decoupled_rates,
    make_dropout,
    max_pool_2x2,
)


def _conv(params: dict[str, jax.Array], x: jax.Array, strides, padding) -> jax.Array:
    y = conv_general_dilated(
        x, params["kernel"], strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    if "bias" in params:
        y = y + params["bias"]
    return y


class _DecoupledConv(nn.Module):
    """A 2-D NHWC convolution whose input dropout is decoupled as in Eq. 9.

    Parameters are named and initialised as ``nn.Conv``'s (``kernel`` HWIO, ``bias``).
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int]
    padding: Any
    forward_rate: float
    backward_rate: float
    mode: str
    use_bias: bool
    kernel_init: Callable[..., Any]
    bias_init: Callable[..., Any]

    @nn.compact
    def __call__(self, x: jax.Array, rng: jax.Array | None) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        params = {"kernel": self.param("kernel", self.kernel_init, shape)}
        if self.use_bias:
            params["bias"] = self.param("bias", self.bias_init, (self.features,))
        fn = lambda p, h: _conv(p, h, self.strides, self.padding)
        if rng is None:
            return fn(params, x)
        return dropjax.decoupled_call(
            rng, fn, params, x, self.forward_rate, self.backward_rate, backward=self.mode
        )


class DropConv(nn.Module):
    """Dropout on the input of a 2-D convolution: ``Conv(drop(x))``, any kind.

    As :class:`DropDense`: one key drawn here, the convolution always named ``conv``. With
    the layer-exact kinds the convolution's kernel gradient uses the backward-masked input
    (:func:`dropjax.decoupled_call` on the convolution, Eq. 9 for an affine layer).

    Attributes:
      features: output channels.
      kernel_size: the window, e.g. ``(3, 3)``.
      cfg: the dropout configuration.
      strides: the strides.
      padding: ``"SAME"``, ``"VALID"`` or explicit ``((lo, hi), (lo, hi))`` pairs.
      use_bias: whether the convolution has a bias.
      kernel_init: kernel initializer.
      bias_init: bias initializer.
    """

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    cfg: DropoutConfig = NO_DROPOUT
    strides: tuple[int, int] = (1, 1)
    padding: Any = "SAME"
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Drops ``x`` (in training) and applies the convolution."""
        cfg = self.cfg
        key = _draw_key(self, cfg, train)
        if cfg.kind in LAYER_EXACT_KINDS:
            forward, backward, mode = decoupled_rates(cfg)
            return _DecoupledConv(
                self.features,
                tuple(self.kernel_size),
                tuple(self.strides),
                self.padding,
                forward,
                backward,
                mode,
                self.use_bias,
                self.kernel_init,
                self.bias_init,
                name="conv",
            )(x, key)
        if key is not None:
            _check_feature_map(cfg, x)
        x = make_dropout(cfg, name="drop")(x, key is None, rng=key)
        return _Conv(
            self.features,
            tuple(self.kernel_size),
            strides=tuple(self.strides),
            padding=self.padding,
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            name="conv",
        )(x)


# Caffe's "xavier" filler: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), i.e. LeCun uniform.
_caffe_xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class LeNet(nn.Module):
    """Caffe's MNIST LeNet (``examples/mnist/lenet_train_test.prototxt``) with dropout.

    conv 20 5x5 -> maxpool 2x2/2 -> conv 50 5x5 -> maxpool 2x2/2 -> fc 500 -> ReLU ->
    dropout -> fc 10. As in Caffe there is no non-linearity after the convolutions, weights
    use the "xavier" filler (LeCun uniform) and biases start at 0; dropout is on the input of
    the last fully connected layer (Gao et al., Section 6.2). Input: ``(N, 28, 28, 1)``.
    Caffe's bias learning-rate multiplier of 2 is not modelled.

    Attributes:
      num_classes: output size.
      dropout: the dropout before the last layer.
    """

    num_classes: int = 10
    dropout: DropoutConfig = NO_DROPOUT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC images."""
        init = {"kernel_init": _caffe_xavier}
        x = _PatchConv(20, (5, 5), padding="VALID", name="conv1", **init)(x)
        x = max_pool_2x2(x)
        x = _PatchConv(50, (5, 5), padding="VALID", name="conv2", **init)(x)
        x = max_pool_2x2(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(500, name="ip1", **init)(x))
        return DropDense(self.num_classes, self.dropout, name="ip2", **init)(x, train)


def _pool_along(x: jax.Array, axis: int, kind: str) -> jax.Array:
    """Caffe's ceil-mode 3-wide, stride-2 max or sum along one axis, as three strided slices."""
    n = x.shape[axis]
    out = -(-(n - 3) // 2) + 1
    pads = [(0, 0)] * x.ndim
    pads[axis] = (0, 2 * (out - 1) + 3 - n)
    x = jnp.pad(x, pads, constant_values=-jnp.inf if kind == "max" else 0)
    a, b, c = (lax.slice_in_dim(x, i, i + 2 * (out - 1) + 1, 2, axis) for i in range(3))
    return jnp.maximum(jnp.maximum(a, b), c) if kind == "max" else a + b + c


def _in_bounds(n: int) -> np.ndarray:
    """How many of each ceil-mode window's three inputs lie inside a length-``n`` axis."""
    out = -(-(n - 3) // 2) + 1
    return np.minimum(3, n - 2 * np.arange(out)).astype(np.float32)


def caffe_pool(x: jax.Array, kind: str) -> jax.Array:
    """Caffe's 3x3, stride-2 max or average pooling of NHWC maps, output size rounded up.

    Equal to ``nn.max_pool`` / ``nn.avg_pool(..., count_include_pad=False)`` with the
    right padding that gives Caffe's ceil-mode size (32 -> 16, 28 -> 14, 7 -> 3), but
    written as a separable pair of three strided slices each. Its gradient is then made of
    elementwise selects and pads; XLA:CPU's select-and-scatter for the overlapping max
    pool's gradient is about 10x slower (``benchmarks/torch_vs_harness.py``). Ties share
    the gradient instead of the first taking it.

    Args:
      x: ``(N, H, W, C)`` feature maps.
      kind: ``"max"`` or ``"avg"`` (the mean over the in-bounds inputs of each window).

    Examples:
      >>> import jax.numpy as jnp
      >>> from experiments.harness.models import caffe_pool
      >>> x = jnp.arange(25.0).reshape(1, 5, 5, 1)
      >>> caffe_pool(x, "max")[0, :, :, 0].tolist()
      [[12.0, 14.0], [22.0, 24.0]]
      >>> caffe_pool(x, "avg")[0, :, :, 0].tolist()
      [[6.0, 8.0], [16.0, 18.0]]
    """
    if kind not in ("max", "avg"):
        raise ValueError(f"kind must be 'max' or 'avg'; got {kind!r}")
    y = _pool_along(_pool_along(x, 1, kind), 2, kind)
    if kind == "avg":
        counts = _in_bounds(x.shape[1])[:, None] * _in_bounds(x.shape[2])[None, :]
        y = y / jnp.asarray(counts[None, :, :, None], y.dtype)
    return y
