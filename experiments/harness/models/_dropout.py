"""Part of :mod:`experiments.harness.models` (see there)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

import dropjax
import dropjax.linen
from dropjax.cpu_conv import conv_general_dilated, patch_conv

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
      >>> from experiments.harness.models import DropoutConfig
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
      >>> from experiments.harness.models import max_pool_2x2
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
      >>> from experiments.harness.models import DropoutConfig, decoupled_rates
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
      >>> from experiments.harness.models import DropoutConfig, make_dropout
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
