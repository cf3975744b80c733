r"""Equinox adapters: ``eqx.Module`` layers over dropjax's functional ops.

``dropjax.equinox.Dropout`` is a drop-in for ``eqx.nn.Dropout``: the same fields (``p``,
``inference``), the same call ``layer(x, *, key=None, inference=None)`` and the same key
rules (a key is needed unless the layer is in inference mode or ``p`` is a Python 0; a
missing key raises ``RuntimeError``), with its mask drawn by :func:`dropjax.dropout`. The
other layers follow Equinox's conventions too: one example per call (``jax.vmap`` over a
batch, one key per example), channels first (as ``eqx.nn.Conv``), an ``inference`` field
toggled by ``eqx.nn.inference_mode``, and every drop probability named ``p``
(``forward_p``, ``max_p``, ...): the probability of *dropping*, which dropjax's functional
ops call ``rate``. Layers that change a weight layer wrap an existing one, as
``eqx.nn.WeightNorm`` does: ``DecoupledLayer(eqx.nn.Linear(...), 0.5, 1e-4)``.

Every layer calls one functional op of dropjax and has no maths of its own.

Monte Carlo dropout: :func:`mc_dropout` returns the model with every dropout layer on and
everything else (``eqx.nn.BatchNorm``, ...) in inference mode, as ``eqx.nn.inference_mode``
does for evaluation; :func:`sample` draws MC samples of a model through
:func:`dropjax.mc.sample`.

Equinox is an optional dependency: ``pip install "dropjax[equinox]"``. ``import dropjax``
never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.typing import ArrayLike

try:
    import equinox as eqx
except ImportError as err:  # the optional extra is missing
    raise ImportError(
        'dropjax.equinox needs Equinox, which is not installed: pip install "dropjax[equinox]" '
        "(or pip install equinox)"
    ) from err

import dropjax
from dropjax._src import checks as _checks
from dropjax._src import mc_mode

__all__ = [
    "AlphaDropout",
    "AugmentedDropout",
    "ConcreteDropout",
    "DecoupledDropout",
    "DecoupledLayer",
    "DropBlock",
    "DropConnectLinear",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "MultiheadAttention",
    "RandomRateDropout",
    "SpatialDropout",
    "VariationalConv",
    "VariationalLinear",
    "dot_product_attention",
    "mc_dropout",
    "sample",
    "sparsity",
    "total_kl",
]

_RATE_FIELDS = ("p", "max_p", "forward_p", "backward_p")


def _check_p(owner: str, **rates: ArrayLike) -> None:
    """Validates concrete drop probabilities at construction; traced ones pass unchanged."""
    for name, value in rates.items():
        _checks.check_rate(value, f"{owner}.{name}")


def _is_python_zero(p: object) -> bool:
    return isinstance(p, (int, float)) and not isinstance(p, bool) and p == 0


def _rate(p: ArrayLike) -> ArrayLike:
    """``p`` as the op's rate: a Python number as is, an array without a gradient.

    As in ``eqx.nn.Dropout``, ``p`` is a hyperparameter, never learned: an array ``p``
    (a schedule, say) is passed through ``lax.stop_gradient``.
    """
    return p if isinstance(p, (int, float)) else jax.lax.stop_gradient(p)


def _resolve_key(
    owner: str,
    rates: Sequence[ArrayLike],
    default_inference: bool,
    key: jax.Array | None,
    inference: bool | None,
) -> jax.Array | None:
    """The key for this call, or None when the layer acts as in inference mode.

    Equinox's rules: the call-time ``inference`` overrides the field; a layer whose drop
    probabilities are all a Python 0 is the identity and needs no key; otherwise a layer
    that is not in inference mode needs a key.
    """
    if inference is None:
        inference = default_inference
    if rates and all(_is_python_zero(p) for p in rates):
        inference = True
    if inference:
        return None
    if key is None:
        raise RuntimeError(
            f"{owner} requires a key when running in non-deterministic mode (inference=False): "
            "pass key=jax.random.key(0) (one key per call, split per example under jax.vmap), "
            "or switch it off with inference=True / eqx.nn.inference_mode(model)"
        )
    return key


class _Stochastic(eqx.Module):
    """Shared plumbing of dropjax's Equinox layers: the ``inference`` switch and the key."""

    if TYPE_CHECKING:  # a field of every subclass, declared there (not a field here)
        inference: bool

    def _key(self, key: jax.Array | None, inference: bool | None) -> jax.Array | None:
        fields = self.__dataclass_fields__
        rates = [getattr(self, name) for name in _RATE_FIELDS if name in fields]
        return _resolve_key(type(self).__name__, rates, self.inference, key, inference)


class Dropout(_Stochastic):
    r"""Inverted dropout; a drop-in for ``eqx.nn.Dropout`` built on :func:`dropjax.dropout`.

    .. math::

        y = \frac{x \odot m}{1 - p}, \qquad m = \texttt{keep\_mask}(key, x.shape, p)

    Same fields, call and key rules as ``eqx.nn.Dropout``: ``p`` and ``inference`` are
    ordinary (non-static) fields, so ``eqx.nn.inference_mode`` and ``eqx.tree_at`` change
    them; a call needs ``key`` unless the layer is in inference mode or ``p`` is a Python
    0; an array ``p`` gets no gradient. The mask is dropjax's (a counter hash of the key,
    see :func:`dropjax.keep_mask`), not ``jax.random.bernoulli``'s, so the masks differ
    from Equinox's for the same key while the distribution is the same; ``p = 1`` gives
    zeros with a finite zero gradient, and ``x.dtype`` is kept.

    Args:
      p: the probability of dropping an element (*not* the keep rate!), in ``[0, 1]``;
        validated here when it is a Python number.
      inference: if True, the layer is the identity.
      broadcast_dims: axes of ``x`` that share one mask entry (an extension: e.g. ``(0,)``
        on a ``(time, features)`` input gives one mask over time, locked dropout).

    Raises:
      ValueError: a concrete ``p`` outside ``[0, 1]``.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> layer = dropjax.equinox.Dropout(0.5)
      >>> y = layer(jnp.ones(8), key=jax.random.key(0))
      >>> set(y.tolist()) <= {0.0, 2.0}
      True
      >>> layer(jnp.ones(2), inference=True).tolist()
      [1.0, 1.0]
    """

    p: float
    inference: bool
    broadcast_dims: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self, p: float = 0.5, inference: bool = False, *, broadcast_dims: Sequence[int] = ()
    ):
        _check_p("Dropout", p=p)
        self.p = p
        self.inference = inference
        self.broadcast_dims = tuple(broadcast_dims)

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Drops ``x`` with probability ``p`` and rescales the rest by ``1 / (1 - p)``.

        Args:
          x: a floating-point array of any shape.
          key: a PRNG key, e.g. ``jax.random.key(0)``; needed unless in inference mode.
          inference: overrides the ``inference`` field for this call when not None.

        Returns:
          An array of ``x``'s shape and dtype.

        Raises:
          RuntimeError: no ``key`` while not in inference mode.
        """
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.dropout(key, x, _rate(self.p), broadcast_dims=self.broadcast_dims)


class DecoupledDropout(_Stochastic):
    """Forward/backward-decoupled dropout, elementwise; see :func:`dropjax.decoupled_dropout`.

    The forward pass drops with ``forward_p``; the backward pass uses the decoupled mask
    (``"nested"``: Gao et al.'s augmented dropout, or ``"independent"``).

    Args:
      forward_p: drop probability of the forward pass.
      backward_p: drop probability of the backward mask (the extra one when nested).
      backward: ``"nested"`` or ``"independent"``.
      broadcast_dims: axes of ``x`` that share one mask entry.
      inference: if True, the identity in both passes.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> layer = dropjax.equinox.DecoupledDropout(0.3, 0.1)
      >>> layer(jnp.ones(3), key=jax.random.key(0)).shape
      (3,)
    """

    forward_p: float
    backward_p: float
    inference: bool
    backward: str = eqx.field(static=True)
    broadcast_dims: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        forward_p: float,
        backward_p: float,
        *,
        backward: str = "nested",
        broadcast_dims: Sequence[int] = (),
        inference: bool = False,
    ):
        _check_p("DecoupledDropout", forward_p=forward_p, backward_p=backward_p)
        self.forward_p = forward_p
        self.backward_p = backward_p
        self.backward = backward
        self.broadcast_dims = tuple(broadcast_dims)
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Forward: dropout at ``forward_p``; backward: the decoupled mask."""
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.decoupled_dropout(
            key,
            x,
            _rate(self.forward_p),
            _rate(self.backward_p),
            backward=self.backward,
            broadcast_dims=self.broadcast_dims,
        )


class AugmentedDropout(_Stochastic):
    """Gao et al.'s augmented dropout (nested backward noise); :func:`dropjax.augmented_dropout`.

    The forward value is standard dropout at ``p``; the backward pass drops a further
    fraction ``backward_p`` on top of the forward mask (the paper uses 1e-4 to 2e-4).

    Args:
      p: forward drop probability.
      backward_p: the extra backward drop probability.
      broadcast_dims: axes of ``x`` that share one mask entry.
      inference: if True, the identity in both passes.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax, dropjax.equinox
      >>> key, x = jax.random.key(1), jnp.ones(8)
      >>> y = dropjax.equinox.AugmentedDropout(0.3, 1e-4)(x, key=key)
      >>> bool((y == dropjax.dropout(key, x, 0.3)).all())  # the forward value
      True
    """

    p: float
    backward_p: float
    inference: bool
    broadcast_dims: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        p: float,
        backward_p: float,
        *,
        broadcast_dims: Sequence[int] = (),
        inference: bool = False,
    ):
        _check_p("AugmentedDropout", p=p, backward_p=backward_p)
        self.p = p
        self.backward_p = backward_p
        self.broadcast_dims = tuple(broadcast_dims)
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Forward: dropout at ``p``; backward: the nested mask."""
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.augmented_dropout(
            key, x, _rate(self.p), _rate(self.backward_p), broadcast_dims=self.broadcast_dims
        )


class DecoupledLayer(_Stochastic):
    r"""An affine layer with input dropout in the layer-exact form of Gao et al.'s Eq. 9.

    Wraps an ``eqx.nn.Linear``, an ``eqx.nn.Conv`` (``Conv1d``/``Conv2d``/``Conv3d``) or any
    other affine Equinox layer ``layer(x)``, and calls :func:`dropjax.decoupled_call` with
    the layer's floating-point arrays as the parameters. Forward: ``layer(x * eps_f)``.
    Backward: every Jacobian is taken at the backward-masked input ``x * eps_b``, so for
    :math:`z = W h + b`

    .. math::

        \frac{\partial J}{\partial W} = \delta\, (h \odot \epsilon_b)^\top, \qquad
        \delta_h = (W^\top \delta) \odot \epsilon_b

    which an elementwise mask on ``h`` cannot give. Put the activation outside ``layer``
    (its Jacobian would also be taken at ``x * eps_b``). In inference mode, ``layer(x)``.

    Args:
      layer: the affine layer, called as ``layer(x)``.
      forward_p: forward drop probability of the input.
      backward_p: backward drop probability (the extra one when nested).
      backward: ``"nested"`` or ``"independent"``.
      broadcast_dims: axes of ``x`` that share one mask entry (e.g. ``(1, 2)`` on a
        ``(channels, height, width)`` input drops whole channels).
      inference: if True, the plain layer.

    Examples:
      >>> import jax, jax.numpy as jnp, equinox as eqx, dropjax.equinox
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> dense = dropjax.equinox.DecoupledLayer(eqx.nn.Linear(5, 3, key=k1), 0.5, 1e-4)
      >>> dense(jnp.ones(5), key=k2).shape
      (3,)
      >>> conv = dropjax.equinox.DecoupledLayer(eqx.nn.Conv2d(2, 4, 3, key=k1), 0.2, 0.1)
      >>> conv(jnp.ones((2, 6, 6)), key=k2).shape
      (4, 4, 4)
    """

    layer: Any
    forward_p: float
    backward_p: float
    inference: bool
    backward: str = eqx.field(static=True)
    broadcast_dims: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        layer: Callable[..., jax.Array],
        forward_p: float,
        backward_p: float,
        *,
        backward: str = "nested",
        broadcast_dims: Sequence[int] = (),
        inference: bool = False,
    ):
        _check_p("DecoupledLayer", forward_p=forward_p, backward_p=backward_p)
        self.layer = layer
        self.forward_p = forward_p
        self.backward_p = backward_p
        self.backward = backward
        self.broadcast_dims = tuple(broadcast_dims)
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Applies the layer to the decoupled-dropout input."""
        key = self._key(key, inference)
        if key is None:
            return self.layer(x)
        params, static = eqx.partition(self.layer, eqx.is_inexact_array)
        apply = lambda p, h: eqx.combine(p, static)(h)
        return dropjax.decoupled_call(
            key,
            apply,
            params,
            x,
            _rate(self.forward_p),
            _rate(self.backward_p),
            backward=self.backward,
            broadcast_dims=self.broadcast_dims,
        )


class RandomRateDropout(_Stochastic):
    """Bouthillier et al.'s random dropout, ``rho ~ U(0, max_p)``.

    See :func:`dropjax.random_rate_dropout`.

    Args:
      max_p: upper end of the drop-probability range, in ``[0, 1]``.
      per_example: one rate per example along ``batch_axis`` (for a batched input; under
        ``jax.vmap`` with one key per example every example draws its own rate anyway).
      batch_axis: the example axis used with ``per_example``.
      broadcast_dims: axes of ``x`` that share one mask entry.
      inference: if True, the identity.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> layer = dropjax.equinox.RandomRateDropout(0.5)
      >>> layer(jnp.ones(4), key=jax.random.key(0)).shape
      (4,)
    """

    max_p: float
    inference: bool
    per_example: bool = eqx.field(static=True)
    batch_axis: int = eqx.field(static=True)
    broadcast_dims: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        max_p: float,
        *,
        per_example: bool = False,
        batch_axis: int = 0,
        broadcast_dims: Sequence[int] = (),
        inference: bool = False,
    ):
        _check_p("RandomRateDropout", max_p=max_p)
        self.max_p = max_p
        self.per_example = per_example
        self.batch_axis = batch_axis
        self.broadcast_dims = tuple(broadcast_dims)
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Drops with a random rate unless in inference mode."""
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.random_rate_dropout(
            key,
            x,
            _rate(self.max_p),
            per_example=self.per_example,
            batch_axis=self.batch_axis,
            broadcast_dims=self.broadcast_dims,
        )


class GaussianDropout(_Stochastic):
    """Multiplicative ``N(1, p / (1 - p))`` noise; see :func:`dropjax.gaussian_dropout`.

    Args:
      p: the drop probability whose variance the noise matches.
      inference: if True, the identity.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> dropjax.equinox.GaussianDropout(0.2)(jnp.ones(4), key=jax.random.key(0)).shape
      (4,)
    """

    p: float
    inference: bool

    def __init__(self, p: float, *, inference: bool = False):
        _check_p("GaussianDropout", p=p)
        self.p = p
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Multiplies by Gaussian noise unless in inference mode."""
        key = self._key(key, inference)
        return x if key is None else dropjax.gaussian_dropout(key, x, _rate(self.p))


class AlphaDropout(_Stochastic):
    """SELU-preserving dropout; see :func:`dropjax.alpha_dropout`.

    Args:
      p: drop probability.
      inference: if True, the identity.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> dropjax.equinox.AlphaDropout(0.1)(jnp.ones(4), key=jax.random.key(0)).shape
      (4,)
    """

    p: float
    inference: bool

    def __init__(self, p: float, *, inference: bool = False):
        _check_p("AlphaDropout", p=p)
        self.p = p
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Applies alpha dropout unless in inference mode."""
        key = self._key(key, inference)
        return x if key is None else dropjax.alpha_dropout(key, x, _rate(self.p))


class SpatialDropout(_Stochastic):
    """Drops whole feature maps; see :func:`dropjax.spatial_dropout`.

    The defaults fit Equinox's layout, one example with channels first (``eqx.nn.Conv``'s
    ``(channels, *spatial)``): ``channel_axis=0``, ``batch_axis=None``.

    Args:
      p: probability of dropping a feature map.
      channel_axis: the channel axis.
      batch_axis: the example axis, or None for one example.
      inference: if True, the identity.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> y = dropjax.equinox.SpatialDropout(0.5)(jnp.ones((3, 4, 4)), key=jax.random.key(0))
      >>> bool((y == y[:, :1, :1]).all())  # each channel is kept or dropped whole
      True
    """

    p: float
    inference: bool
    channel_axis: int = eqx.field(static=True)
    batch_axis: int | None = eqx.field(static=True)

    def __init__(
        self,
        p: float,
        *,
        channel_axis: int = 0,
        batch_axis: int | None = None,
        inference: bool = False,
    ):
        _check_p("SpatialDropout", p=p)
        self.p = p
        self.channel_axis = channel_axis
        self.batch_axis = batch_axis
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Drops feature maps unless in inference mode."""
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.spatial_dropout(
            key, x, _rate(self.p), channel_axis=self.channel_axis, batch_axis=self.batch_axis
        )


class DropBlock(_Stochastic):
    """DropBlock, contiguous blocks of a feature map; see :func:`dropjax.dropblock`.

    Defaults for one channels-first example: ``channel_axis=0``, ``batch_axis=None``.

    Args:
      p: the target fraction of dropped positions.
      block_size: the block side (an int, or one per spatial axis).
      channel_axis: the channel axis, or None.
      batch_axis: the example axis, or None for one example.
      share_channels: one block pattern for all channels.
      inference: if True, the identity.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> layer = dropjax.equinox.DropBlock(0.1, block_size=3)
      >>> layer(jnp.ones((3, 8, 8)), key=jax.random.key(0)).shape
      (3, 8, 8)
    """

    p: float
    inference: bool
    block_size: int | tuple[int, ...] = eqx.field(static=True)
    channel_axis: int | None = eqx.field(static=True)
    batch_axis: int | None = eqx.field(static=True)
    share_channels: bool = eqx.field(static=True)

    def __init__(
        self,
        p: float,
        *,
        block_size: int | Sequence[int] = 7,
        channel_axis: int | None = 0,
        batch_axis: int | None = None,
        share_channels: bool = False,
        inference: bool = False,
    ):
        _check_p("DropBlock", p=p)
        self.p = p
        self.block_size = block_size if isinstance(block_size, int) else tuple(block_size)
        self.channel_axis = channel_axis
        self.batch_axis = batch_axis
        self.share_channels = share_channels
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Drops blocks unless in inference mode."""
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.dropblock(
            key,
            x,
            _rate(self.p),
            block_size=self.block_size,
            batch_axis=self.batch_axis,
            channel_axis=self.channel_axis,
            share_channels=self.share_channels,
        )


class DropPath(_Stochastic):
    """Stochastic depth for a residual branch; see :func:`dropjax.drop_path`.

    With the default ``batch_axis=None`` the whole (one-example) input is kept or dropped:
    ``x + drop_path(branch(x), key=k)`` skips the branch for that example.

    Args:
      p: probability of dropping the branch.
      batch_axis: the example axis of a batched input, or None for one example.
      inference: if True, the identity.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> y = dropjax.equinox.DropPath(0.5)(jnp.ones(6), key=jax.random.key(0))
      >>> y.tolist() in ([0.0] * 6, [2.0] * 6)
      True
    """

    p: float
    inference: bool
    batch_axis: int | None = eqx.field(static=True)

    def __init__(self, p: float, *, batch_axis: int | None = None, inference: bool = False):
        _check_p("DropPath", p=p)
        self.p = p
        self.batch_axis = batch_axis
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Drops the whole input (per example) unless in inference mode."""
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.drop_path(key, x, _rate(self.p), batch_axis=self.batch_axis)


def _linear_in(linear: eqx.nn.Linear, x: jax.Array) -> jax.Array:
    """``x`` as the ``(in_features,)`` vector an ``eqx.nn.Linear`` computes with."""
    return jnp.reshape(x, (1,)) if linear.in_features == "scalar" else x


def _linear_out(linear: eqx.nn.Linear, y: jax.Array) -> jax.Array:
    return jnp.reshape(y, ()) if linear.out_features == "scalar" else y


def _check_linear(owner: str, linear: object) -> None:
    if not isinstance(linear, eqx.nn.Linear):
        raise TypeError(f"{owner} wraps an eqx.nn.Linear; got {type(linear).__name__}")


class DropConnectLinear(_Stochastic):
    """An ``eqx.nn.Linear`` with dropped weights; see :func:`dropjax.dropconnect_dense`.

    Each call drops every weight with probability ``p`` (inverted scaling; the bias is
    never dropped): ``dropconnect_dense(key, x, linear.weight.T, linear.bias, p)``. Under
    ``jax.vmap`` with one key per example every example gets its own weight mask, as in
    Wan et al. (2013). In inference mode, ``linear(x)``.

    Args:
      linear: the wrapped ``eqx.nn.Linear``.
      p: probability of dropping a weight.
      inference: if True, the plain layer.

    Examples:
      >>> import jax, jax.numpy as jnp, equinox as eqx, dropjax.equinox
      >>> linear = eqx.nn.Linear(4, 3, key=jax.random.key(0))
      >>> layer = dropjax.equinox.DropConnectLinear(linear, 0.5)
      >>> layer(jnp.ones(4), key=jax.random.key(1)).shape
      (3,)
    """

    linear: eqx.nn.Linear
    p: float
    inference: bool

    def __init__(self, linear: eqx.nn.Linear, p: float, *, inference: bool = False):
        _check_linear("DropConnectLinear", linear)
        _check_p("DropConnectLinear", p=p)
        self.linear = linear
        self.p = p
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Applies the layer with dropped weights unless in inference mode."""
        key = self._key(key, inference)
        if key is None:
            return self.linear(x)
        w, b = self.linear.weight, self.linear.bias
        y = dropjax.dropconnect_dense(key, _linear_in(self.linear, x), w.T, b, _rate(self.p))
        return _linear_out(self.linear, y)


class ConcreteDropout(_Stochastic):
    """Concrete dropout with a learned rate (Gal, Hron & Kendall 2017).

    ``rate_logit`` (the logit of the drop probability) is an array field, so
    ``eqx.filter_grad`` learns it with the weights. Training calls
    :func:`dropjax.concrete_dropout`; :meth:`regularizer` is
    :func:`dropjax.concrete_dropout_regularizer` for this layer: add it to the loss,
    with the following layer's weight as ``weight`` for the weight term.

    Args:
      init_p: the initial drop probability, in ``(0, 1)``.
      temperature: the relaxation temperature.
      weight_regularizer: :math:`\\lambda_w` of the regulariser.
      dropout_regularizer: :math:`\\lambda_p` of the regulariser.
      inference: if True, the identity.

    Raises:
      ValueError: ``init_p`` not in ``(0, 1)``.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> layer = dropjax.equinox.ConcreteDropout()
      >>> layer(jnp.ones(4), key=jax.random.key(0)).shape, layer.regularizer(input_dim=4).shape
      ((4,), ())
    """

    rate_logit: jax.Array
    inference: bool
    temperature: float = eqx.field(static=True)
    weight_regularizer: float = eqx.field(static=True)
    dropout_regularizer: float = eqx.field(static=True)

    def __init__(
        self,
        *,
        init_p: float = 0.1,
        temperature: float = 0.1,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        inference: bool = False,
    ):
        init = _checks.concrete_value(init_p)
        if init is None or not 0.0 < init < 1.0:
            raise ValueError(
                "ConcreteDropout: init_p is the initial drop probability and must be a number "
                f"in (0, 1) (its logit is learned); got {init_p!r}"
            )
        p = jnp.float32(init)
        self.rate_logit = jnp.log(p) - jnp.log1p(-p)
        self.temperature = temperature
        self.weight_regularizer = weight_regularizer
        self.dropout_regularizer = dropout_regularizer
        self.inference = inference

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Applies concrete dropout unless in inference mode."""
        key = self._key(key, inference)
        if key is None:
            return x
        return dropjax.concrete_dropout(key, x, self.rate_logit, temperature=self.temperature)

    def regularizer(self, *, input_dim: int, weight: Any = None) -> jax.Array:
        """The layer's regulariser (the weight term only when ``weight`` is given).

        Args:
          input_dim: the number of features the dropout is applied to.
          weight: the next layer's weight (an array or a pytree, e.g. its ``eqx.nn.Linear``
            filtered with ``eqx.filter(linear, eqx.is_array)``), or None.

        Returns:
          A scalar.
        """
        return dropjax.concrete_dropout_regularizer(
            self.rate_logit,
            () if weight is None else weight,
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
            input_dim=input_dim,
        )


# --- Sparse variational dropout (Kingma et al. 2015; Molchanov et al. 2017) -----------------


class _Variational(_Stochastic):
    """Shared parameters of the variational layers: the wrapped layer's weight is theta."""

    if TYPE_CHECKING:  # fields of every subclass, declared there (not fields here)
        log_sigma2: jax.Array
        threshold: float
        clip: float | None
        train_clip: bool

    def _weight(self) -> jax.Array:
        raise NotImplementedError

    def log_alpha(self) -> jax.Array:
        """:math:`\\log\\alpha` per weight, the wrapped layer's weight layout.

        :func:`dropjax.variational_log_alpha` of the weight and ``log_sigma2``, clipped to
        ``[-clip, clip]``.
        """
        return dropjax.variational_log_alpha(self._weight(), self.log_sigma2, clip=self.clip)

    def kl(self) -> jax.Array:
        """This layer's KL term: :func:`dropjax.kl_molchanov` summed over the weights."""
        return dropjax.kl_molchanov(self.log_alpha()).sum()

    def _threshold(self, training: bool) -> float | None:
        return (self.threshold if self.train_clip else None) if training else self.threshold


def _init_log_sigma2(weight: jax.Array, value: float) -> jax.Array:
    return jnp.full(weight.shape, value, weight.dtype)


class VariationalLinear(_Variational):
    r"""Sparse variational dropout on an ``eqx.nn.Linear`` (Molchanov, Ashukha & Vetrov, 2017).

    The wrapped layer's ``weight`` is :math:`\theta`; ``log_sigma2`` (same shape) is the
    learned :math:`\log\sigma^2`, and :meth:`log_alpha` gives
    :math:`\log\alpha = \log\sigma^2 - \log\theta^2` (:func:`dropjax.variational_log_alpha`).
    Training samples the pre-activations by the local reparameterisation trick
    (:func:`dropjax.variational_dense`); inference mode is the mean layer with every weight
    whose :math:`\log\alpha` exceeds ``threshold`` set to zero. Add :meth:`kl` (or
    :func:`total_kl` of the model), times a KL weight, to the data term (per example:
    ``cross_entropy_mean + total_kl(model) / num_train``); :func:`sparsity` reports the
    pruning.

    Args:
      linear: the wrapped ``eqx.nn.Linear`` (its weight and bias are the means).
      log_sigma2_init: the initial :math:`\log\sigma^2` (-10, as the authors' code).
      threshold: the :math:`\log\alpha` above which a weight is pruned (3).
      clip: :math:`\log\alpha` is clipped to ``[-clip, clip]`` (8).
      train_clip: also zero the pruned weights while training.
      inference: if True, the pruned mean layer.

    Examples:
      >>> import jax, jax.numpy as jnp, equinox as eqx, dropjax.equinox
      >>> layer = dropjax.equinox.VariationalLinear(eqx.nn.Linear(5, 3, key=jax.random.key(0)))
      >>> layer(jnp.ones(5), key=jax.random.key(1)).shape, layer.kl().shape
      ((3,), ())
    """

    linear: eqx.nn.Linear
    log_sigma2: jax.Array
    inference: bool
    threshold: float = eqx.field(static=True)
    clip: float | None = eqx.field(static=True)
    train_clip: bool = eqx.field(static=True)

    def __init__(
        self,
        linear: eqx.nn.Linear,
        *,
        log_sigma2_init: float = -10.0,
        threshold: float = 3.0,
        clip: float | None = 8.0,
        train_clip: bool = False,
        inference: bool = False,
    ):
        _check_linear("VariationalLinear", linear)
        self.linear = linear
        self.log_sigma2 = _init_log_sigma2(linear.weight, log_sigma2_init)
        self.threshold = threshold
        self.clip = clip
        self.train_clip = train_clip
        self.inference = inference

    def _weight(self) -> jax.Array:
        return self.linear.weight

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Samples the pre-activations (training) or applies the pruned mean layer."""
        key = self._key(key, inference)
        y = dropjax.variational_dense(
            key,
            _linear_in(self.linear, x),
            self.linear.weight.T,
            self.log_alpha().T,
            self.linear.bias,
            threshold=self._threshold(key is not None),
            deterministic=key is None,
        )
        return _linear_out(self.linear, y)


class VariationalConv(_Variational):
    """Sparse variational dropout on an ``eqx.nn.Conv``; see :func:`dropjax.variational_conv`.

    As :class:`VariationalLinear`, for a convolution: the wrapped ``eqx.nn.Conv`` (or
    ``Conv1d``/``Conv2d``/``Conv3d``, ``padding_mode="ZEROS"``) gives :math:`\\theta`, the
    bias, the stride, padding, dilation and groups; the input is one channels-first
    example, as for the wrapped layer.

    Args:
      conv: the wrapped ``eqx.nn.Conv``.
      log_sigma2_init: the initial :math:`\\log\\sigma^2`.
      threshold: the :math:`\\log\\alpha` above which a weight is pruned.
      clip: :math:`\\log\\alpha` is clipped to ``[-clip, clip]``.
      train_clip: also zero the pruned weights while training.
      inference: if True, the pruned mean convolution.

    Raises:
      TypeError: ``conv`` is not an ``eqx.nn.Conv``.
      ValueError: a ``padding_mode`` other than ``"ZEROS"``.

    Examples:
      >>> import jax, jax.numpy as jnp, equinox as eqx, dropjax.equinox
      >>> conv = eqx.nn.Conv2d(3, 4, 3, padding=1, key=jax.random.key(0))
      >>> layer = dropjax.equinox.VariationalConv(conv)
      >>> layer(jnp.ones((3, 6, 6)), key=jax.random.key(1)).shape
      (4, 6, 6)
    """

    conv: eqx.nn.Conv
    log_sigma2: jax.Array
    inference: bool
    threshold: float = eqx.field(static=True)
    clip: float | None = eqx.field(static=True)
    train_clip: bool = eqx.field(static=True)

    def __init__(
        self,
        conv: eqx.nn.Conv,
        *,
        log_sigma2_init: float = -10.0,
        threshold: float = 3.0,
        clip: float | None = 8.0,
        train_clip: bool = False,
        inference: bool = False,
    ):
        if not isinstance(conv, eqx.nn.Conv):
            raise TypeError(f"VariationalConv wraps an eqx.nn.Conv; got {type(conv).__name__}")
        if conv.padding_mode != "ZEROS":
            raise ValueError(
                f"VariationalConv supports zero padding only; got padding_mode="
                f"{conv.padding_mode!r}. Pad the input yourself and use padding_mode='ZEROS'"
            )
        self.conv = conv
        self.log_sigma2 = _init_log_sigma2(conv.weight, log_sigma2_init)
        self.threshold = threshold
        self.clip = clip
        self.train_clip = train_clip
        self.inference = inference

    def _weight(self) -> jax.Array:
        return self.conv.weight

    def __call__(
        self, x: jax.Array, *, key: jax.Array | None = None, inference: bool | None = None
    ) -> jax.Array:
        """Samples the pre-activations (training) or applies the pruned mean convolution."""
        key = self._key(key, inference)
        conv = self.conv
        # Equinox: x (in, *spatial), weight (out, in / groups, *window); dropjax: channels
        # last with a batch axis, kernel (*window, in / groups, out).
        to_kernel = lambda w: jnp.transpose(w, (*range(2, w.ndim), 1, 0))
        y = dropjax.variational_conv(
            key,
            jnp.moveaxis(x, 0, -1)[None],
            to_kernel(conv.weight),
            to_kernel(self.log_alpha()),
            None if conv.bias is None else jnp.reshape(conv.bias, (-1,)),
            strides=conv.stride,
            padding=conv.padding,
            kernel_dilation=conv.dilation,
            feature_group_count=conv.groups,
            threshold=self._threshold(key is not None),
            deterministic=key is None,
        )
        return jnp.moveaxis(y[0], -1, 0)


def _variational_layers(model: Any) -> list[tuple[str, _Variational]]:
    """``(path, layer)`` for every variational layer of ``model``, paths like ``"fc1"``."""
    is_layer = lambda node: isinstance(node, _Variational)
    found = jax.tree_util.tree_flatten_with_path(model, is_leaf=is_layer)[0]
    return [
        (jax.tree_util.keystr(p, simple=True, separator="/"), n) for p, n in found if is_layer(n)
    ]


def total_kl(model: Any) -> jax.Array:
    """The sum of :meth:`VariationalLinear.kl` over every variational layer of ``model``.

    Examples:
      >>> import jax, equinox as eqx, dropjax.equinox
      >>> layer = dropjax.equinox.VariationalLinear(eqx.nn.Linear(4, 2, key=jax.random.key(0)))
      >>> bool(dropjax.equinox.total_kl([layer, layer]) == 2 * layer.kl())
      True
    """
    total = jnp.zeros((), jnp.float32)
    for _, layer in _variational_layers(model):
        total = total + layer.kl()
    return total


def sparsity(
    model: Any, threshold: float | None = None, clip: float | Literal["layer"] | None = "layer"
) -> dict[str, Any]:
    """Pruned fraction and compression of an Equinox model's variational layers.

    Each :class:`VariationalLinear` / :class:`VariationalConv` is pruned with its own
    ``threshold`` and ``clip``, exactly as its inference-mode forward pass prunes it (as
    :func:`dropjax.linen.sparsity` and :func:`dropjax.nnx.sparsity` do); paths are
    attribute paths such as ``"layers/0"``.

    Args:
      model: an Equinox model (any pytree).
      threshold: overrides every layer's pruning threshold on :math:`\\log\\alpha`.
      clip: overrides every layer's clip (``"layer"``: each layer's own).

    Returns:
      ``{"layers": {path: stats}, "total": stats}`` as :func:`dropjax.sparsity`.

    Raises:
      ValueError: no variational layer.

    Examples:
      >>> import jax, equinox as eqx, dropjax.equinox
      >>> layer = dropjax.equinox.VariationalLinear(eqx.nn.Linear(4, 2, key=jax.random.key(0)))
      >>> s = dropjax.equinox.sparsity({"fc": layer})
      >>> s["total"]["weights"], s["total"]["compression"]
      (8, 1.0)
    """
    from dropjax._src.variational import layer_sparsity

    layers = _variational_layers(model)
    if not layers:
        raise ValueError(
            "dropjax.equinox.sparsity found no variational layer (VariationalLinear or "
            "VariationalConv) in the model"
        )
    return layer_sparsity(
        (
            path,
            layer._weight(),
            layer.log_sigma2,
            layer.threshold if threshold is None else threshold,
            layer.clip if clip == "layer" else clip,
        )
        for path, layer in layers
    )


# --- Attention ---------------------------------------------------------------------------------


def dot_product_attention(
    query: jax.Array,
    key_: jax.Array,
    value: jax.Array,
    mask: jax.Array | None = None,
    dropout: Dropout | eqx.nn.Dropout | None = None,
    *,
    key: jax.Array | None = None,
    inference: bool | None = None,
    implementation: str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
) -> jax.Array:
    """Attention of one example with weight dropout: :func:`dropjax.dot_product_attention`.

    Equinox's argument names (``key_`` the attention keys, ``key`` the PRNG key) and
    layout: ``query`` ``(q_seq, heads, head_dim)`` and ``key_``/``value``
    ``(kv_seq, heads, head_dim)``, or a single head ``(seq, head_dim)``. The ``dropout``
    layer gives the drop probability ``p``, its ``inference`` flag and the key rules of
    :class:`Dropout`; with ``dropout=None`` nothing is dropped. The weight ``[h, t, s]``
    is kept iff ``dropjax.keep_mask(key, (heads, q_seq, kv_seq), p,
    broadcast_dims=dropout.broadcast_dims)[h, t, s]`` (broadcast dims index that array),
    in every ``implementation``: ``"blockwise"`` never builds the ``q_seq x kv_seq``
    weights, ``None`` picks it for long sequences (see :func:`dropjax.dot_product_attention`).

    Args:
      query: queries.
      key_: attention keys (not a PRNG key).
      value: values, the same shape as ``key_``.
      mask: optional boolean mask broadcastable to ``(heads, q_seq, kv_seq)``; True attends.
      dropout: a :class:`Dropout` or ``eqx.nn.Dropout``, or None.
      key: the PRNG key of the dropout.
      inference: overrides ``dropout.inference`` when not None.
      implementation: ``None``, ``"xla"``, ``"blockwise"`` or ``"pallas"``.
      block_q: query tile length of the tiled implementations.
      block_kv: key/value tile length.

    Returns:
      The attention output, ``query``'s shape and dtype.

    Raises:
      RuntimeError: no ``key`` while dropping.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.equinox
      >>> q = k = v = jnp.ones((5, 2, 4))
      >>> drop = dropjax.equinox.Dropout(0.1)
      >>> out = dropjax.equinox.dot_product_attention(
      ...     q, k, v, dropout=drop, key=jax.random.key(0), implementation="blockwise")
      >>> out.shape
      (5, 2, 4)
    """
    single = jnp.ndim(query) == 2
    if single:  # one head: Equinox's per-head layout
        query, key_, value = query[:, None], key_[:, None], value[:, None]
    rate: ArrayLike = 0.0
    bdims: Sequence[int] = ()
    drop_key: jax.Array | None = None
    if dropout is not None:
        owner = type(dropout).__name__
        drop_key = _resolve_key(owner, [dropout.p], dropout.inference, key, inference)
        if drop_key is not None:
            rate = _rate(dropout.p)
            bdims = getattr(dropout, "broadcast_dims", ())
    out = dropjax.dot_product_attention(
        query,
        key_,
        value,
        mask=mask,
        dropout_key=drop_key,
        dropout_rate=rate,
        broadcast_dims=bdims,
        deterministic=drop_key is None,
        implementation=implementation,
        block_q=block_q,
        block_kv=block_kv,
    )
    return out[:, 0] if single else out


class MultiheadAttention(eqx.Module):
    """``eqx.nn.MultiheadAttention`` with dropjax's attention-weight dropout.

    The constructor and the call take ``eqx.nn.MultiheadAttention``'s arguments, and the
    parameters are initialised by it (the same key gives the same projections), so the
    output equals Equinox's when no weight is dropped. The attention itself is
    :func:`dot_product_attention`: weights dropped with ``keep_mask(key, (heads, q_seq,
    kv_seq), dropout_p)`` and, with ``implementation="blockwise"`` (or ``None`` on long
    sequences), the ``q_seq x kv_seq`` weights never materialised. ``dropout`` is a
    :class:`Dropout`, so ``eqx.nn.inference_mode`` and :func:`mc_dropout` switch it.
    dropjax's attention takes keys and values of one shape, so ``qk_size`` must equal
    ``vo_size`` (the default). :meth:`from_equinox` converts an existing layer.

    Args:
      num_heads: the number of heads.
      query_size: query input channels.
      key_size: key input channels (``query_size`` when None).
      value_size: value input channels (``query_size`` when None).
      output_size: output channels (``query_size`` when None).
      qk_size: per-head query/key channels (``query_size // num_heads`` when None).
      vo_size: per-head value/output channels (``query_size // num_heads`` when None).
      use_query_bias: bias in the query projection.
      use_key_bias: bias in the key projection.
      use_value_bias: bias in the value projection.
      use_output_bias: bias in the output projection.
      dropout_p: the probability of dropping an attention weight.
      inference: if True, no dropout.
      dtype: the parameters' dtype.
      implementation: ``None``, ``"xla"``, ``"blockwise"`` or ``"pallas"``
        (:func:`dropjax.dot_product_attention`).
      block_q: query tile length of the tiled implementations.
      block_kv: key/value tile length.
      key: the PRNG key of the initialisation.

    Raises:
      ValueError: ``qk_size != vo_size``.

    Examples:
      >>> import jax, jax.numpy as jnp, equinox as eqx, dropjax.equinox
      >>> ours = dropjax.equinox.MultiheadAttention(2, 8, dropout_p=0.1, key=jax.random.key(0))
      >>> theirs = eqx.nn.MultiheadAttention(2, 8, dropout_p=0.1, key=jax.random.key(0))
      >>> x = jnp.ones((5, 8))
      >>> bool(jnp.allclose(ours(x, x, x, inference=True), theirs(x, x, x, inference=True),
      ...                   atol=1e-6))
      True
      >>> ours(x, x, x, key=jax.random.key(1)).shape
      (5, 8)
    """

    query_proj: eqx.nn.Linear
    key_proj: eqx.nn.Linear
    value_proj: eqx.nn.Linear
    output_proj: eqx.nn.Linear
    dropout: Dropout
    num_heads: int = eqx.field(static=True)
    implementation: str | None = eqx.field(static=True)
    block_q: int | None = eqx.field(static=True)
    block_kv: int | None = eqx.field(static=True)

    def __init__(
        self,
        num_heads: int,
        query_size: int,
        key_size: int | None = None,
        value_size: int | None = None,
        output_size: int | None = None,
        qk_size: int | None = None,
        vo_size: int | None = None,
        use_query_bias: bool = False,
        use_key_bias: bool = False,
        use_value_bias: bool = False,
        use_output_bias: bool = False,
        dropout_p: float = 0.0,
        inference: bool = False,
        dtype: Any = None,
        *,
        implementation: str | None = None,
        block_q: int | None = None,
        block_kv: int | None = None,
        key: jax.Array,
    ):
        reference = eqx.nn.MultiheadAttention(
            num_heads,
            query_size,
            key_size,
            value_size,
            output_size,
            qk_size,
            vo_size,
            use_query_bias,
            use_key_bias,
            use_value_bias,
            use_output_bias,
            0.0,
            inference,
            dtype,
            key=key,
        )
        if reference.qk_size != reference.vo_size:
            raise ValueError(
                f"dropjax.equinox.MultiheadAttention needs qk_size == vo_size (keys and values "
                f"of one shape, as dropjax.dot_product_attention); got qk_size="
                f"{reference.qk_size}, vo_size={reference.vo_size}"
            )
        self.query_proj = reference.query_proj
        self.key_proj = reference.key_proj
        self.value_proj = reference.value_proj
        self.output_proj = reference.output_proj
        self.dropout = Dropout(dropout_p, inference)
        self.num_heads = num_heads
        self.implementation = implementation
        self.block_q = block_q
        self.block_kv = block_kv

    @classmethod
    def from_equinox(
        cls,
        attention: eqx.nn.MultiheadAttention,
        *,
        implementation: str | None = None,
        block_q: int | None = None,
        block_kv: int | None = None,
    ) -> MultiheadAttention:
        """This layer with the projections, ``dropout.p`` and ``inference`` of ``attention``.

        Examples:
          >>> import jax, equinox as eqx, dropjax.equinox
          >>> mha = eqx.nn.MultiheadAttention(2, 8, dropout_p=0.2, key=jax.random.key(0))
          >>> ours = dropjax.equinox.MultiheadAttention.from_equinox(mha)
          >>> ours.dropout.p, bool((ours.query_proj.weight == mha.query_proj.weight).all())
          (0.2, True)
        """
        new = cls(
            attention.num_heads,
            attention.query_size,
            attention.key_size,
            attention.value_size,
            attention.output_size,
            attention.qk_size,
            attention.vo_size,
            attention.use_query_bias,
            attention.use_key_bias,
            attention.use_value_bias,
            attention.use_output_bias,
            attention.dropout.p,
            attention.dropout.inference,
            attention.query_proj.weight.dtype,
            implementation=implementation,
            block_q=block_q,
            block_kv=block_kv,
            key=jax.random.key(0),  # replaced just below
        )
        parts = lambda m: (m.query_proj, m.key_proj, m.value_proj, m.output_proj)
        return eqx.tree_at(parts, new, parts(attention))

    def _heads(self, proj: eqx.nn.Linear, x: jax.Array) -> jax.Array:
        return jax.vmap(proj)(x).reshape(x.shape[0], self.num_heads, -1)

    def __call__(
        self,
        query: jax.Array,
        key_: jax.Array,
        value: jax.Array,
        mask: jax.Array | None = None,
        *,
        key: jax.Array | None = None,
        inference: bool | None = None,
        process_heads: Callable | None = None,
    ) -> jax.Array:
        """Multi-head attention of one example, as ``eqx.nn.MultiheadAttention.__call__``.

        Args:
          query: ``(q_seq, query_size)``.
          key_: ``(kv_seq, key_size)``.
          value: ``(kv_seq, value_size)``.
          mask: optional boolean ``(q_seq, kv_seq)`` or ``(num_heads, q_seq, kv_seq)``.
          key: the PRNG key of the weight dropout.
          inference: overrides ``dropout.inference`` when not None.
          process_heads: ``f(q_heads, k_heads, v_heads) -> (q, k, v)`` of unchanged shapes
            (e.g. rotary embeddings).

        Returns:
          ``(q_seq, output_size)``.
        """
        heads = (
            self._heads(self.query_proj, query),
            self._heads(self.key_proj, key_),
            self._heads(self.value_proj, value),
        )
        if process_heads is not None:
            shapes = [h.shape for h in heads]
            heads = tuple(process_heads(*heads))
            if [h.shape for h in heads] != shapes:
                raise ValueError("process_heads must not change the shape of the heads")
        out = dot_product_attention(
            *heads,
            mask,
            self.dropout,
            key=key,
            inference=inference,
            implementation=self.implementation,
            block_q=self.block_q,
            block_kv=self.block_kv,
        )
        return jax.vmap(self.output_proj)(out.reshape(out.shape[0], -1))


# --- Monte Carlo dropout -------------------------------------------------------------------


def _is_dropout(node: object) -> bool:
    return isinstance(node, (_Stochastic, eqx.nn.Dropout))


def _dropout_flags(tree: Any) -> list[bool]:
    """The ``inference`` field of every dropout layer in ``tree``, nested ones included."""
    flags = [tree.inference] if _is_dropout(tree) else []
    inner = lambda node: _is_dropout(node) and node is not tree
    for node in jax.tree.leaves(tree, is_leaf=inner):
        if inner(node):
            flags += _dropout_flags(node)
    return flags


def mc_dropout(model: Any) -> Any:
    """Monte Carlo mode: ``model`` with every dropout layer on and the rest in inference mode.

    Like ``eqx.nn.inference_mode(model)``, a pure function returning a new model: every
    ``inference`` field is set to True (``eqx.nn.BatchNorm`` uses its running statistics,
    ...), then that of every dropout layer (dropjax's Equinox layers, including the
    variational and concrete ones and :class:`MultiheadAttention`'s dropout, and
    ``eqx.nn.Dropout``) back to False. Call the result with a key per pass, or use
    :func:`sample`.

    Args:
      model: an Equinox model (any pytree).

    Returns:
      The model in Monte Carlo mode.

    Examples:
      >>> import jax, equinox as eqx, dropjax.equinox
      >>> model = eqx.nn.Sequential([eqx.nn.Dropout(0.5), dropjax.equinox.Dropout(0.5),
      ...                            eqx.nn.BatchNorm(4, "batch", mode="batch")])
      >>> mc = dropjax.equinox.mc_dropout(model)
      >>> [layer.inference for layer in mc.layers]
      [False, False, True]
    """
    model = eqx.nn.inference_mode(model, mc_mode.inference(is_dropout=False))
    return eqx.tree_at(
        _dropout_flags, model, replace_fn=lambda _: mc_mode.inference(is_dropout=True)
    )


def _call(model: Any, x: Any, state: Any, key: jax.Array) -> Any:
    if state is None:
        return model(x, key=key)
    out, _ = model(x, state, key=key)
    return out


def sample(
    key: jax.Array,
    model: Any,
    x: Any,
    num_samples: int,
    state: Any = None,
    *,
    batch_axis: int | None = 0,
    consistent: bool = False,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    axis_name: str = "samples",
) -> Any:
    """MC dropout samples of an Equinox model, through :func:`dropjax.mc.sample`.

    The model is put in Monte Carlo mode (:func:`mc_dropout`: dropout on, BatchNorm on its
    running statistics) and called ``num_samples`` times, vmapped over keys. With
    ``keys = jax.random.split(key, num_samples)`` and ``n`` examples along ``batch_axis``:

    .. code-block:: python

        m = mc_dropout(model)
        ks = jax.random.split(keys[i], n)  # one key per example
        out[i] = eqx.filter_vmap(lambda xj, kj: m(xj, key=kj), axis_name="batch")(x, ks)

    (``m(xj, state, key=kj)[0]`` when a ``state`` is given; the state is read, never
    updated). ``batch_axis=None`` calls the model once on the whole ``x`` with
    ``keys[i]``; ``consistent=True`` gives every example ``keys[i]``, one dropout mask
    per sample for the whole batch. ``chunk_size`` and ``mesh`` are those of
    :func:`dropjax.mc.sample` and never change which key drives which sample.

    Args:
      key: one PRNG key.
      model: an Equinox model called as ``model(x, key=...)`` (or
        ``model(x, state, key=...) -> (out, state)``) on one example.
      x: the inputs (an array or a pytree of arrays), batched along ``batch_axis``.
      num_samples: the number of samples, a static Python int >= 1.
      state: an ``eqx.nn.State`` for stateful models (BatchNorm), or None.
      batch_axis: the example axis of ``x``, or None to call the model on ``x`` whole.
      consistent: share one key by all the examples of a sample.
      chunk_size: at most this many samples at once (memory), or None.
      mesh: a ``jax.sharding.Mesh`` to spread the samples over, or None.
      axis_name: the mesh axis of the samples.

    Returns:
      The model outputs with a new leading axis of size ``num_samples``.

    Examples:
      >>> import jax, jax.numpy as jnp, equinox as eqx, dropjax.equinox
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> model = eqx.nn.Sequential([eqx.nn.Linear(4, 8, key=k1), dropjax.equinox.Dropout(0.5),
      ...                            eqx.nn.Linear(8, 2, key=k2)])
      >>> ys = dropjax.equinox.sample(jax.random.key(1), model, jnp.ones((3, 4)), 10)
      >>> ys.shape, bool(ys.std(axis=0).min() > 0)
      ((10, 3, 2), True)
    """
    return _sample(
        key,
        mc_dropout(model),
        x,
        state,
        num_samples,
        batch_axis,
        consistent,
        chunk_size,
        mesh,
        axis_name,
    )


@eqx.filter_jit  # one compiled program per model structure and setting, keys traced
def _sample(key, model, x, state, num_samples, batch_axis, consistent, chunk_size, mesh, axis_name):
    def one(k, model, x, state):
        if batch_axis is None:
            return _call(model, x, state, k)
        n = jax.tree.leaves(x)[0].shape[batch_axis]
        keys = k if consistent else jax.random.split(k, n)
        in_axes = (None, batch_axis, None, None if consistent else 0)
        batched = eqx.filter_vmap(_call, in_axes=in_axes, axis_name="batch")
        return batched(model, x, state, keys)

    return dropjax.mc.sample(
        one,
        key,
        num_samples,
        model,
        x,
        state,
        chunk_size=chunk_size,
        mesh=mesh,
        axis_name=axis_name,
    )
