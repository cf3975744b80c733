"""Flax linen models for the dropout experiments, with the dropout kind as configuration.

Every model takes a :class:`DropoutConfig` and is called as ``model.apply(v, x, train=...)``
(the GCN also takes the edge lists). Switching an experiment from standard to augmented
dropout is a change of ``DropoutConfig.kind``, nothing else:

======================= =====================================================================
kind                    what the layer does (``rate`` is always a probability of *dropping*)
======================= =====================================================================
``none``                identity
``standard``            inverted dropout, :class:`dropjax.linen.Dropout`
``forward``             Gao et al.'s forward dropout (Definition 1), layer-exact: features
                        dropped in the forward pass; in the backward pass neither features
                        nor errors are dropped, so the weight gradient of the layer the
                        dropout feeds uses the *unmasked* input
``backward``            Gao et al.'s backward dropout (Definition 2), layer-exact: nothing
                        dropped in the forward pass; in the backward pass features and
                        errors are dropped at ``rate`` "as the standard dropout", so the
                        weight gradient uses the *backward-masked* input
``augmented``           Gao et al.'s augmented dropout (Eq. 9, Algorithm 1), layer-exact:
                        forward mask at ``rate``, backward mask nested in it with the extra
                        rate ``backward_rate``; the weight gradient uses the backward-masked
                        input
``forward_elementwise`` secondary arm: forward dropout as an elementwise ``custom_vjp``
                        (:class:`dropjax.linen.DecoupledDropout`); the next layer's weight
                        gradient then sees the forward-*masked* input, unlike Definition 1
``backward_elementwise`` secondary arm: elementwise backward dropout; the weight gradient
                        sees the *unmasked* input, unlike Definition 2
``augmented_elementwise`` secondary arm: elementwise augmented dropout (only the error is
                        masked by the backward mask, not the weight gradient's input)
``random_rate``         dropout at a rate drawn from U(0, ``rate``) (``random_rate_dropout``)
``gaussian``            multiplicative Gaussian noise matched to ``rate`` (``gaussian_dropout``)
``alpha``               alpha dropout, for SELU networks (``alpha_dropout``)
``dropblock``           DropBlock on NHWC maps, blocks of ``block_size`` (``dropblock``)
``spatial``             one keep decision per (example, channel) (``spatial_dropout``)
======================= =====================================================================

The three layer-exact kinds fuse the dropout with the layer it feeds
(:func:`dropjax.decoupled_call`), so they exist only where dropout feeds a dense layer
(:class:`DropDense`) or a convolution (:class:`DropConv`); :func:`make_dropout` refuses them.

**Pairing.** A layer that drops the input of a dense or convolutional layer draws its key
once, in :class:`DropDense`/:class:`DropConv`, and the wrapped layer keeps the name ``dense``
or ``conv`` for every kind. So for the same ``params`` seed the initial parameters are the
same for every kind, and for the same ``dropout`` key ``standard``, ``forward``,
``augmented`` and their elementwise forms use the very same forward mask (``backward`` draws
its backward mask from the same bits): paired arms of an experiment differ only in what the
kind changes.

The other variants (``random_rate``, ``gaussian``, ``alpha``, ``dropblock``, ``spatial``)
are their :mod:`dropjax.linen` modules too, so :func:`dropjax.linen.mc_dropout` turns every
kind on at evaluation time.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import dropjax
import dropjax.linen
from dropjax.cpu_conv import conv_general_dilated, patch_conv

__all__ = [
    "DROPOUT_KINDS",
    "LAYER_EXACT_KINDS",
    "GCN",
    "MLP",
    "ConvNetQuick",
    "DropConv",
    "DropDense",
    "DropoutConfig",
    "Identity",
    "LeNet",
    "NO_DROPOUT",
    "ResNet",
    "build_model",
    "decoupled_rates",
    "make_dropout",
    "caffe_pool",
    "max_pool_2x2",
]

LAYER_EXACT_KINDS = ("forward", "backward", "augmented")
"""Kinds that exist only fused with the dense/conv layer they feed (Gao et al.'s definitions)."""

DROPOUT_KINDS = (
    "none",
    "standard",
    "forward",
    "backward",
    "augmented",
    "forward_elementwise",
    "backward_elementwise",
    "augmented_elementwise",
    "random_rate",
    "gaussian",
    "alpha",
    "dropblock",
    "spatial",
)


@dataclasses.dataclass(frozen=True)
class DropoutConfig:
    """Which dropout a model uses, and at what rates.

    Attributes:
      kind: one of :data:`DROPOUT_KINDS` (see the module docstring).
      rate: the drop probability (*not* the keep rate!). For ``forward`` and ``augmented``
        (and their elementwise forms) the forward rate; for ``backward`` the rate of the
        backward mask; for ``random_rate`` the upper end of the rate's range; for ``gaussian`` the
        rate whose variance the noise matches; for ``dropblock`` the expected dropped
        fraction.
      backward_rate: the extra backward drop probability of ``augmented`` and
        ``augmented_elementwise`` (nested: the backward mask is the forward mask times a mask of
        this rate; Gao et al. use 1e-4 or 2e-4). Ignored by the other kinds.
      block_size: the block side of ``dropblock``.
      per_example: ``random_rate`` draws one rate per example instead of one per call.
      broadcast_dims: axes sharing one mask entry (``standard`` and the decoupled kinds).

    Raises:
      ValueError: an unknown kind or a rate outside ``[0, 1]``.

    Examples:
      >>> from experiments.models import DropoutConfig
      >>> DropoutConfig("augmented", 0.3, 1e-4).label
      'augmented 0.3/0.0001'
    """

    kind: str = "standard"
    rate: float = 0.0
    backward_rate: float = 0.0
    block_size: int = 3
    per_example: bool = False
    broadcast_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in DROPOUT_KINDS:
            raise ValueError(f"unknown dropout kind {self.kind!r}; use one of {DROPOUT_KINDS}")
        for field in ("rate", "backward_rate"):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"DropoutConfig.{field} must be in [0, 1]; got {value}")
        if self.kind == "gaussian" and self.rate >= 1.0:
            raise ValueError("gaussian dropout needs rate < 1 (its noise variance is p/(1-p))")
        object.__setattr__(self, "broadcast_dims", tuple(self.broadcast_dims))

    @property
    def active(self) -> bool:
        """Whether the layer changes anything in training (needs a key)."""
        if self.kind == "none":
            return False
        if self.kind in ("augmented", "augmented_elementwise"):
            return self.rate > 0.0 or self.backward_rate > 0.0
        return self.rate > 0.0

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``standard 0.5`` or ``augmented 0.5/0.0001``."""
        if self.kind == "none":
            return "none"
        if self.kind in ("augmented", "augmented_elementwise"):
            return f"{self.kind} {self.rate:g}/{self.backward_rate:g}"
        return f"{self.kind} {self.rate:g}"


NO_DROPOUT = DropoutConfig("none")

# nn.Conv whose backward pass stays fast inside lax.scan on XLA:CPU (see dropjax.cpu_conv).
_Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
# LeNet's stride-1 5x5 convolutions: shifted slices and one matrix product (faster on CPU).
_PatchConv = functools.partial(nn.Conv, conv_general_dilated=patch_conv)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 on NHWC maps of even size, as a reshape and a max.

    The same values as ``nn.max_pool(x, (2, 2), strides=(2, 2))``; its gradient is an
    elementwise select instead of XLA's select-and-scatter, which is slow on CPU (ties,
    which conv outputs almost never have, share the gradient instead of the first taking
    it).

    Examples:
      >>> import jax.numpy as jnp
      >>> from experiments.models import max_pool_2x2
      >>> max_pool_2x2(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0].tolist()
      [[5.0, 7.0], [13.0, 15.0]]
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2 needs even spatial sizes; got {x.shape}")
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Identity(nn.Module):
    """The ``none`` kind: returns its input (same call signature as the dropout layers)."""

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None, rng=None) -> jax.Array:
        """Returns ``x``."""
        del deterministic, rng
        return x


def decoupled_rates(cfg: DropoutConfig) -> tuple[float, float, str]:
    """``(forward_rate, backward_rate, mode)`` of a decoupled kind (exact or elementwise).

    Forward-only is ``(p, 0, "independent")``, backward-only ``(0, p, "independent")``
    and augmented ``(p, q, "nested")``, in :func:`dropjax.decoupled_call`'s terms.

    Examples:
      >>> from experiments.models import DropoutConfig, decoupled_rates
      >>> decoupled_rates(DropoutConfig("backward", 0.3))
      (0.0, 0.3, 'independent')
    """
    base = cfg.kind.removesuffix("_elementwise")
    if base == "forward":
        return cfg.rate, 0.0, "independent"
    if base == "backward":
        return 0.0, cfg.rate, "independent"
    if base == "augmented":
        return cfg.rate, cfg.backward_rate, "nested"
    raise ValueError(f"{cfg.kind!r} is not a decoupled (forward/backward/augmented) kind")


def make_dropout(cfg: DropoutConfig, *, name: str | None = None) -> nn.Module:
    """The dropout layer for ``cfg``: a module called as ``layer(x, deterministic, rng=None)``.

    Args:
      cfg: the dropout configuration.
      name: the submodule name (use the same name for every kind to pair keys).

    Returns:
      A linen module. ``standard`` is :class:`dropjax.linen.Dropout`; the ``*_elementwise``
      kinds are :class:`dropjax.linen.DecoupledDropout`; the other variants their
      :mod:`dropjax.linen` modules; ``none`` (or a zero rate) :class:`Identity`.

    Raises:
      ValueError: for the layer-exact ``forward``, ``backward`` and ``augmented``, which are
        not standalone layers: they fuse the dropout with the layer it feeds (use
        :class:`DropDense` or :class:`DropConv`).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from experiments.models import DropoutConfig, make_dropout
      >>> layer = make_dropout(DropoutConfig("augmented_elementwise", 0.5, 1e-4))
      >>> y = layer.apply({}, jnp.ones((2, 8)), False, rngs={"dropout": jax.random.key(0)})
      >>> y.shape
      (2, 8)
    """
    kw: dict[str, Any] = {} if name is None else {"name": name}
    kind = cfg.kind
    if kind in LAYER_EXACT_KINDS:
        raise ValueError(
            f"{kind!r} dropout is layer-exact (Gao et al.'s definitions fix which input the "
            "next layer's weight gradient sees), so it is not a standalone layer: use "
            f"DropDense or DropConv, or kind={kind + '_elementwise'!r} for the elementwise form"
        )
    if not cfg.active:
        return Identity(**kw)
    bdims = cfg.broadcast_dims
    if kind == "standard":
        return dropjax.linen.Dropout(cfg.rate, broadcast_dims=bdims, **kw)
    if kind.endswith("_elementwise"):
        forward, backward, mode = decoupled_rates(cfg)
        return dropjax.linen.DecoupledDropout(
            forward, backward, backward=mode, broadcast_dims=bdims, **kw
        )
    if kind == "random_rate":
        return dropjax.linen.RandomRateDropout(
            cfg.rate, per_example=cfg.per_example, broadcast_dims=bdims, **kw
        )
    if kind == "gaussian":
        return dropjax.linen.GaussianDropout(cfg.rate, **kw)
    if kind == "alpha":
        return dropjax.linen.AlphaDropout(cfg.rate, **kw)
    if kind == "dropblock":
        return dropjax.linen.DropBlock(cfg.rate, block_size=cfg.block_size, **kw)
    assert kind == "spatial", kind
    return dropjax.linen.SpatialDropout(cfg.rate, **kw)


def _check_feature_map(cfg: DropoutConfig, x: jax.Array) -> None:
    if cfg.kind in ("dropblock", "spatial") and x.ndim != 4:
        raise ValueError(
            f"{cfg.kind} dropout needs an NHWC feature map; got an input of shape "
            f"{x.shape}. Use it where dropout feeds a convolution (ResNet), or use "
            "kind='standard'"
        )


def _draw_key(module: nn.Module, cfg: DropoutConfig, train: bool) -> jax.Array | None:
    return module.make_rng("dropout") if train and cfg.active else None


class DropDense(nn.Module):
    """Dropout on the input of a dense layer: ``Dense(drop(x))``, any kind.

    The key is drawn here (one per call) and the dense layer is always named ``dense``, so
    every kind has the same parameters and the decoupled kinds the same forward mask. The
    layer-exact ``forward``, ``backward`` and ``augmented`` are
    :class:`dropjax.linen.DecoupledDense` (Eq. 9: the kernel gradient uses the
    backward-masked input, and the unmasked one when the backward rate is 0).

    Attributes:
      features: output size.
      cfg: the dropout configuration.
      use_bias: whether the dense layer has a bias.
      kernel_init: kernel initializer.
      bias_init: bias initializer.
    """

    features: int
    cfg: DropoutConfig = NO_DROPOUT
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Drops ``x`` (in training) and applies the dense layer."""
        cfg = self.cfg
        key = _draw_key(self, cfg, train)
        if cfg.kind in LAYER_EXACT_KINDS:
            forward, backward, mode = decoupled_rates(cfg)
            layer = dropjax.linen.DecoupledDense(
                self.features,
                forward,
                backward,
                backward=mode,
                use_bias=self.use_bias,
                kernel_init=self.kernel_init,
                bias_init=self.bias_init,
                broadcast_dims=cfg.broadcast_dims,
                name="dense",
            )
            return layer(x, deterministic=key is None, rng=key)
        if key is not None:
            _check_feature_map(cfg, x)
        x = make_dropout(cfg, name="drop")(x, key is None, rng=key)
        return nn.Dense(
            self.features,
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            bias_init=self.bias_init,
            name="dense",
        )(x)


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
      >>> from experiments.models import caffe_pool
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


class ConvNetQuick(nn.Module):
    """Caffe's ``cifar10_quick`` with dropout on the inputs of both fully connected layers.

    conv 32 5x5 pad 2 -> maxpool 3x3/2 -> ReLU -> conv 32 5x5 pad 2 -> ReLU -> avgpool 3x3/2
    -> conv 64 5x5 pad 2 -> ReLU -> avgpool 3x3/2 -> dropout -> fc 64 -> dropout -> fc 10.
    As in Caffe: pooling rounds the output size up (32 -> 16 -> 8 -> 4), average pooling
    divides by the number of in-bounds inputs, there is no ReLU between the two fully
    connected layers, and weights use Caffe's Gaussian fillers (std 1e-4, 0.01, 0.01, 0.1,
    0.1) with zero biases. Input ``(N, 32, 32, C)``.

    Attributes:
      num_classes: output size.
      dropout: the dropout on the inputs of the two fully connected layers.
      caffe_init: Caffe's Gaussian fillers (else Flax's LeCun normal).
    """

    num_classes: int = 10
    dropout: DropoutConfig = NO_DROPOUT
    caffe_init: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC images."""

        def init(std: float) -> dict[str, Any]:
            if not self.caffe_init:
                return {}
            return {"kernel_init": nn.initializers.normal(std)}

        same = ((2, 2), (2, 2))
        x = _Conv(32, (5, 5), padding=same, name="conv1", **init(1e-4))(x)
        x = nn.relu(caffe_pool(x, "max"))
        x = nn.relu(_Conv(32, (5, 5), padding=same, name="conv2", **init(0.01))(x))
        x = caffe_pool(x, "avg")
        x = nn.relu(_Conv(64, (5, 5), padding=same, name="conv3", **init(0.01))(x))
        x = caffe_pool(x, "avg")
        x = x.reshape(x.shape[0], -1)
        x = DropDense(64, self.dropout, name="ip1", **init(0.1))(x, train)
        return DropDense(self.num_classes, self.dropout, name="ip2", **init(0.1))(x, train)


class _BasicBlock(nn.Module):
    """Conv-BN-ReLU-Dropout-Conv-BN-(+shortcut)-ReLU, with the option-A shortcut."""

    features: int
    strides: int
    dropout: DropoutConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        he = nn.initializers.he_normal()
        bn = lambda name: nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name
        )
        s = (self.strides, self.strides)
        y = _Conv(
            self.features,
            (3, 3),
            s,
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=he,
            name="conv1",
        )(x)
        y = nn.relu(bn("bn1")(y))
        y = DropConv(
            self.features,
            (3, 3),
            self.dropout,
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=he,
            name="conv2",
        )(y, train)
        y = bn("bn2")(y)
        shortcut = x
        if self.strides != 1:
            shortcut = shortcut[:, :: self.strides, :: self.strides, :]
        extra = self.features - shortcut.shape[-1]
        if extra > 0:  # option A: zero-pad the new channels
            lo = extra // 2
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (lo, extra - lo)))
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet (He et al., 2016) with dropout between the two convolutions of a block.

    A 3x3 conv (``widths[0]`` channels) with BN and ReLU, then ``len(stage_blocks)`` stages of
    basic blocks Conv-BN-ReLU-Dropout-Conv-BN-(+shortcut)-ReLU (the Wide-ResNet placement Gao
    et al. use), the first block of every stage after the first with stride 2 and the
    parameter-free option-A shortcut (subsample, zero-pad channels), then global average
    pooling and a dense layer. The defaults, three stages of three blocks with 16/32/64
    channels, are ResNet-20. Convolutions use He-normal weights and no bias.

    Attributes:
      num_classes: output size.
      dropout: the dropout inside every block.
      stage_blocks: blocks per stage.
      widths: channels per stage.
    """

    num_classes: int = 10
    dropout: DropoutConfig = NO_DROPOUT
    stage_blocks: Sequence[int] = (3, 3, 3)
    widths: Sequence[int] = (16, 32, 64)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC images."""
        if len(self.stage_blocks) != len(self.widths):
            raise ValueError("ResNet needs one width per stage (stage_blocks and widths)")
        x = _Conv(
            self.widths[0],
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=nn.initializers.he_normal(),
            name="stem",
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
        x = nn.relu(x)
        for stage, (blocks, width) in enumerate(zip(self.stage_blocks, self.widths, strict=True)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = _BasicBlock(width, strides, self.dropout, name=f"stage{stage}_block{block}")(
                    x, train
                )
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


class MLP(nn.Module):
    """A ReLU multilayer perceptron with input and hidden dropout (Bouthillier et al.).

    ``drop_in(x) -> fc -> ReLU -> [drop -> fc -> ReLU]* -> drop -> fc(num_classes)``: the
    input dropout before the first layer, the hidden dropout before every later layer.
    Images are flattened.

    Attributes:
      hidden: hidden layer sizes, e.g. ``(2500, 1250)``.
      num_classes: output size.
      input_dropout: dropout on the inputs.
      dropout: dropout on the hidden units.
    """

    hidden: Sequence[int] = (1500, 1500)
    num_classes: int = 10
    input_dropout: DropoutConfig = NO_DROPOUT
    dropout: DropoutConfig = NO_DROPOUT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for inputs of shape ``(N, ...)``."""
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            cfg = self.input_dropout if i == 0 else self.dropout
            x = nn.relu(DropDense(width, cfg, name=f"fc{i}")(x, train))
        cfg = self.input_dropout if not self.hidden else self.dropout
        return DropDense(self.num_classes, cfg, name="out")(x, train)


class GCN(nn.Module):
    """Kipf & Welling's two-layer graph convolutional network with dropout and DropEdge.

    ``logits = A' drop(ReLU(A' drop(x) W1 + b1)) W2 + b2`` with
    ``A' = D^-1/2 (A + I) D^-1/2`` from :func:`dropjax.gcn_normalize`. In training, with
    ``edge_rate > 0``, edges are first dropped with :func:`dropjax.edge_dropout` and the
    surviving graph is renormalised. Biases are added after propagation.

    Attributes:
      hidden: hidden size.
      num_classes: output size.
      dropout: the dropout on the inputs of both graph convolutions.
      edge_rate: DropEdge probability of dropping an edge in training.
    """

    hidden: int = 16
    num_classes: int = 7
    dropout: DropoutConfig = NO_DROPOUT
    edge_rate: float = 0.0

    @nn.compact
    def __call__(
        self, x: jax.Array, senders: jax.Array, receivers: jax.Array, train: bool = False
    ) -> jax.Array:
        """Node logits ``(N, num_classes)`` for node features ``(N, F)`` and an edge list."""
        n = x.shape[0]
        weight = None
        if train and self.edge_rate > 0.0:
            kept = dropjax.edge_dropout(
                self.make_rng("dropout"), senders, receivers, self.edge_rate
            )
            weight = kept.weight
        graph = dropjax.gcn_normalize(senders, receivers, n, edge_weight=weight)

        def propagate(h):
            messages = graph.weight[:, None].astype(h.dtype) * h[graph.senders]
            return jax.ops.segment_sum(messages, graph.receivers, num_segments=n)

        for i, width in enumerate((self.hidden, self.num_classes)):
            h = propagate(DropDense(width, self.dropout, use_bias=False, name=f"gc{i}")(x, train))
            x = h + self.param(f"bias{i}", nn.initializers.zeros_init(), (width,))
            if i == 0:
                x = nn.relu(x)
        return x


def build_model(name: str, cfg: DropoutConfig, num_classes: int = 10):
    """``convnet_quick`` (Caffe cifar10_quick), ``resnet20``, or the small smoke-test stand-ins
    ``resnet8`` (one block per stage, 4/8/8 channels) and ``mlp`` (one hidden layer of 32)."""
    if name == "convnet_quick":
        return ConvNetQuick(num_classes=num_classes, dropout=cfg)
    if name == "mlp":
        return MLP(hidden=(32,), num_classes=num_classes, dropout=cfg)
    if name == "resnet20":
        return ResNet(num_classes=num_classes, dropout=cfg)
    if name == "resnet8":
        return ResNet(
            num_classes=num_classes, dropout=cfg, stage_blocks=(1, 1, 1), widths=(4, 8, 8)
        )
    raise ValueError(f"unknown model {name!r}")
