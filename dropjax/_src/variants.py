r"""Dropout variants: random rates, Gaussian and alpha noise, structured and weight masks.

Every op here is a pure function of an explicit key, like :func:`dropjax.dropout`, and draws
its Bernoulli noise through :mod:`dropjax._src.masks`. Where a variant is plain dropout with a
different mask shape it *is* :func:`dropjax.dropout` with ``broadcast_dims`` set, so the mask
is ``keep_mask(key, x.shape, rate, broadcast_dims=...)`` and the backward pass keeps the key,
not the mask. How each op uses its key, so that a result can be rebuilt from the key alone:

======================  ==================================================================
op                      randomness
======================  ==================================================================
random_rate_dropout     ``rate_key, mask_key = jax.random.split(key)``; rho from
                        ``jax.random.uniform(rate_key, ...)``; mask from ``mask_key``
gaussian_dropout        ``jax.random.normal(key, x.shape)``
alpha_dropout           ``keep_mask(key, x.shape, rate)``
spatial_dropout         ``keep_mask(key, x.shape, rate, broadcast_dims=<spatial axes>)``
drop_path               ``keep_mask(key, x.shape, rate, broadcast_dims=<non-batch axes>)``
dropconnect             ``keep_mask(key, w.shape, rate)``
dropconnect_dense       ``keep_mask(key, w.shape, rate)``, or one mask per example of
                        shape ``x.shape[:-1] + w.shape`` with ``per_example=True``
dropblock               block centres: ``keep_mask(key, <valid-centre grid>, gamma)``
concrete_dropout        ``jax.random.uniform(key, x.shape)``
======================  ==================================================================

Variational ("locked") dropout for recurrent nets (Gal & Ghahramani, 2016) needs no op of its
own: it is :func:`dropjax.dropout` with the time axis in ``broadcast_dims``, so that one mask
per sequence is reused at every time step.

>>> import jax, jax.numpy as jnp, dropjax
>>> h = jnp.ones((2, 5, 3))  # (batch, time, features)
>>> y = dropjax.dropout(jax.random.key(0), h, 0.5, broadcast_dims=(1,))
>>> bool((y == y[:, :1]).all())  # the same mask at every time step
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from dropjax._src import checks as _c
from dropjax._src import masks as _m
from dropjax._src.ops import apply_dropout

__all__ = [
    "alpha_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "drop_path",
    "dropblock",
    "dropconnect",
    "dropconnect_dense",
    "gaussian_dropout",
    "random_rate_dropout",
    "spatial_dropout",
]

# SELU constants (Klambauer et al., 2017, Eq. 14): alpha_01 and lambda_01.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
# The value a dropped unit takes: the SELU's negative saturation, -lambda * alpha.
_ALPHA_PRIME = -_SELU_SCALE * _SELU_ALPHA

# Bisection steps for the DropBlock gamma: float64 for a concrete rate, float32 when traced.
_GAMMA_STEPS_CONCRETE = 64
_GAMMA_STEPS_TRACED = 40


def _compute_dtype(dtype: DTypeLike) -> np.dtype:
    """At least float32 (``promote_types`` refuses bf16 with f32 under strict promotion)."""
    dtype = jnp.dtype(dtype)
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def _batch_and_channel(
    name: str, x: jax.Array, batch_axis: int | None, channel_axis: int | None
) -> tuple[int | None, int | None]:
    batch = _c.check_axis(batch_axis, x.ndim, "batch_axis")
    channel = _c.check_axis(channel_axis, x.ndim, "channel_axis")
    if batch is not None and batch == channel:
        raise ValueError(
            f"{name}: batch_axis={batch_axis} and channel_axis={channel_axis} name the same axis "
            f"of an input of shape {x.shape}; pass distinct axes, e.g. batch_axis=0 with "
            "channel_axis=-1 (NHWC) or channel_axis=1 (NCHW)"
        )
    return batch, channel


def random_rate_dropout(
    key: jax.Array,
    x: ArrayLike,
    max_rate: ArrayLike,
    *,
    per_example: bool = False,
    batch_axis: int = 0,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    r"""Dropout at a random rate :math:`\rho \sim \mathcal{U}(0, \text{max\_rate})`.

    Bouthillier et al., "Dropout as data augmentation" (2015), Section 4.1, Eq. 10: the
    drop probability is itself drawn uniformly, so that the strength of the implied input
    transformation varies from near-identity to strong, and the output is rescaled by the
    drawn rate:

    .. math::

        \rho \sim \mathcal{U}(0, p_{\max}), \qquad m_i \sim \mathcal{B}(1 - \rho), \qquad
        y = \frac{x \odot m}{1 - \rho}, \qquad \mathbb{E}[y \mid \rho] = x

    As in the paper, one :math:`\rho` is shared by every unit of the call (drawing one per
    unit would just be dropout at rate :math:`p_{\max}/2`). With ``per_example=True`` each
    example along ``batch_axis`` draws its own :math:`\rho`. The expected drop rate is
    :math:`p_{\max}/2`, and no inference-time scaling is needed.

    Key use: ``rate_key, mask_key = jax.random.split(key)``; then
    ``rho = max_rate * jax.random.uniform(rate_key, shape)`` in float32, with ``shape`` ``()``
    or ``(x.shape[batch_axis],)``, and the result is exactly
    ``dropjax.dropout(mask_key, x, rho, broadcast_dims=broadcast_dims)`` (``rho`` reshaped to
    broadcast along ``batch_axis``). The gradient with respect to ``max_rate`` is the
    pathwise one through :math:`\rho = p_{\max} u` with the mask and :math:`u` held fixed,
    :math:`\partial y / \partial p_{\max} = u\, x \odot m / (1 - \rho)^2`. A traced
    ``max_rate`` outside ``[0, 1]`` (or NaN) gives an all-NaN output.

    Args:
      key: one PRNG key, e.g. ``jax.random.key(0)``.
      x: floating-point input.
      max_rate: upper end :math:`p_{\max}` of the drop-rate range, a scalar in ``[0, 1]``
        (a probability of *dropping*); may be traced. 0 returns ``x``.
      per_example: draw one :math:`\rho` per example along ``batch_axis`` instead of one
        for the whole call.
      batch_axis: the example axis used when ``per_example`` is True.
      broadcast_dims: axes sharing one mask entry, as in :func:`dropjax.dropout`.

    Returns:
      The dropped-out array, same shape and dtype as ``x``.

    Raises:
      ValueError: a concrete ``max_rate`` outside ``[0, 1]`` or not a scalar; an axis out of
        range; ``batch_axis`` inside ``broadcast_dims`` with ``per_example``.
      TypeError: a non-floating ``x``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x = jnp.ones((4, 100))
      >>> y = dropjax.random_rate_dropout(jax.random.key(0), x, 0.5, per_example=True)
      >>> y.shape, y.dtype
      ((4, 100), dtype('float32'))
      >>> bool(((y == 0) | (y >= 1)).all())  # kept units are scaled by 1 / (1 - rho) >= 1
      True
    """
    name = "random_rate_dropout"
    key, x, max_rate, value = _c.check_call(name, key, x, max_rate, "max_rate")
    _c.check_scalar_rate(name, max_rate, "max_rate")
    bdims = _c.normalize_axes(broadcast_dims, x.ndim)
    batch = None
    if per_example:
        batch = _c.check_axis(batch_axis, x.ndim, "batch_axis")
        if batch is None:
            raise ValueError(f"{name} with per_example=True needs an integer batch_axis")
        if batch in bdims:
            raise ValueError(
                f"{name}: batch_axis {batch_axis} is also in broadcast_dims {tuple(broadcast_dims)}"
                "; one rate per example needs a mask per example, so remove it from "
                "broadcast_dims (or set per_example=False)"
            )
    if value == 0.0:
        return x
    return _random_rate_core(key, x, max_rate, batch, bdims)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _random_rate_core(key, x, max_rate, batch, bdims):
    rate_key, mask_key = jax.random.split(key)
    max32 = jnp.asarray(max_rate).astype(jnp.float32) * _c.rate_guard(max_rate)
    if batch is None:
        rho = max32 * jax.random.uniform(rate_key, (), jnp.float32)
    else:
        rho = max32 * jax.random.uniform(rate_key, (x.shape[batch],), jnp.float32)
        rho = rho.reshape(tuple(-1 if i == batch else 1 for i in range(x.ndim)))
    return apply_dropout(mask_key, x, rho, bdims)


def gaussian_dropout(key: jax.Array, x: ArrayLike, rate: ArrayLike) -> jax.Array:
    r"""Multiplicative Gaussian noise with the mean and variance of dropout at ``rate``.

    Srivastava et al. (2014), Section 10: instead of Bernoulli masks, multiply each unit by
    :math:`1 + \sigma \epsilon`, with the variance matched to inverted dropout at the same
    drop probability :math:`p`:

    .. math::

        y = x \odot (1 + \sigma \epsilon), \qquad \epsilon \sim \mathcal{N}(0, I), \qquad
        \sigma^2 = \frac{p}{1 - p}, \qquad \mathbb{E}[y] = x

    Rate 0 returns ``x``. Rate 1 has infinite variance and is invalid: a concrete 1 raises;
    a traced rate of 1 (which cannot be checked under ``jit``) gives an all-NaN output so the
    mistake is visible. The noise is ``jax.random.normal(key, x.shape)`` drawn in float32 (or
    ``x``'s dtype if wider); the product is computed there and rounded once to ``x.dtype``.
    ``rate`` is differentiable for ``0 < rate < 1`` (at a traced rate of exactly 0 its
    derivative is infinite, as :math:`\sigma = \sqrt{p/(1-p)}` is).

    Args:
      key: one PRNG key.
      x: floating-point input.
      rate: drop probability :math:`p` in ``[0, 1)`` whose variance the noise matches (not
        the keep rate!); a scalar or an array broadcastable to ``x``; may be traced.

    Returns:
      The noisy array, same shape and dtype as ``x``.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1)``.
      TypeError: a non-floating ``x``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> y = dropjax.gaussian_dropout(jax.random.key(0), jnp.ones(10_000), 0.5)
      >>> bool(abs(float(y.mean()) - 1.0) < 0.05), bool(abs(float(y.var()) - 1.0) < 0.1)
      (True, True)
    """
    name = "gaussian_dropout"
    key, x, rate, value = _c.check_call(name, key, x, rate)
    if _c.is_concrete(rate) and bool(np.any(np.asarray(rate) == 1.0)):
        raise ValueError(
            f"{name} at rate 1 has infinite noise variance rate / (1 - rate); use a rate below "
            "1, or dropjax.dropout(key, x, 1.0) to zero the input"
        )
    if value == 0.0:
        return x
    sigma: float | jax.Array
    if value is not None:
        sigma = math.sqrt(value / (1.0 - value))
    else:
        p = jnp.asarray(rate).astype(_compute_dtype(x.dtype))
        ok = p < 1.0
        sigma = jnp.where(ok, jnp.sqrt(p / jnp.where(ok, 1.0 - p, 1.0)), jnp.nan)
    return _gaussian_core(key, x, sigma)


# Bit-reproducibility between eager and jitted calls. XLA contracts a * b + c into one FMA
# when it fuses, and simplifies differently when a factor is a compile-time constant, so
# the same formula can round differently op by op, inside a jit, or with a Python-float rate
# baked in. Hence: the arithmetic cores are jitted (an eager call runs the same fused
# program as a call inside an outer jit), the rate-derived factors are computed on the host
# in float64 when the rate is concrete, and they pass through an optimization barrier so
# that XLA treats them as run-time values in every case.
def _runtime(values: Sequence[ArrayLike], dtype: DTypeLike) -> tuple[jax.Array, ...]:
    return lax.optimization_barrier(tuple(jnp.asarray(v).astype(dtype) for v in values))


@jax.jit
def _gaussian_core(key, x, sigma):
    compute = _compute_dtype(x.dtype)
    (sigma,) = _runtime((sigma,), compute)
    noise = jax.random.normal(key, x.shape, compute)
    y = x.astype(compute) * (1.0 + sigma * noise)
    return y.astype(x.dtype)


def alpha_dropout(key: jax.Array, x: ArrayLike, rate: ArrayLike) -> jax.Array:
    r"""Alpha dropout for self-normalising (SELU) networks (Klambauer et al., 2017).

    A dropped unit is set to the SELU's negative saturation value
    :math:`\alpha' = -\lambda\alpha` instead of 0, and an affine map restores zero mean and
    unit variance for a standard-normal input. With :math:`q` the drop probability:

    .. math::

        \tilde y = m \odot x + (1 - m)\,\alpha', \qquad y = a \tilde y + b, \qquad
        a = \left((1 - q)(1 + q\,\alpha'^2)\right)^{-1/2}, \qquad b = -a\,\alpha' q

    For :math:`x \sim \mathcal{N}(0, 1)`, :math:`\mathbb{E}[\tilde y] = q\alpha'` and
    :math:`\operatorname{Var}[\tilde y] = (1-q) + q(1-q)\alpha'^2 = (1-q)(1+q\alpha'^2)`, so
    :math:`a` and :math:`b` standardise it. (The paper writes these with the keep
    probability; substituting :math:`q \to 1-q` gives the same map.) The constants are
    :math:`\alpha = 1.6732632\ldots`, :math:`\lambda = 1.0507009\ldots`, so
    :math:`\alpha' \approx -1.7580993`.

    Rate 0 returns ``x``. Rate 1 returns zeros with a zero gradient: it is the limit of the
    map, since every unit is dropped and :math:`a\alpha'(1-q) \to 0` as :math:`q \to 1`.
    The mask is ``keep_mask(key, x.shape, rate)``, the one ``dropjax.dropout`` uses.

    Args:
      key: one PRNG key.
      x: floating-point input, typically a SELU activation.
      rate: drop probability :math:`q` in ``[0, 1]`` (not the keep rate!); may be traced.

    Returns:
      The array, same shape and dtype as ``x``.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1]``.
      TypeError: a non-floating ``x``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x = jax.random.normal(jax.random.key(1), (100_000,))
      >>> y = dropjax.alpha_dropout(jax.random.key(0), x, 0.2)
      >>> bool(abs(float(y.mean())) < 0.02), bool(abs(float(y.var()) - 1.0) < 0.03)
      (True, True)
    """
    key, x, rate, value = _c.check_call("alpha_dropout", key, x, rate)
    if value == 0.0:
        return x
    if value == 1.0:
        return jnp.zeros_like(x)
    if value is not None:
        a = ((1.0 - value) * (1.0 + value * _ALPHA_PRIME**2)) ** -0.5
        b = -a * _ALPHA_PRIME * value
        dropped = a * _ALPHA_PRIME + b
    else:
        q = jnp.asarray(rate).astype(_compute_dtype(x.dtype))
        ok = q < 1.0
        a = jnp.where(ok, lax.rsqrt(jnp.where(ok, (1.0 - q) * (1.0 + q * _ALPHA_PRIME**2), 1.0)), 0)
        a = a * _c.rate_guard(q).astype(q.dtype)  # a traced rate outside [0, 1]: NaN out
        b = -a * _ALPHA_PRIME * q
        dropped = a * _ALPHA_PRIME + b
    return _alpha_core(key, x, rate, a, b, dropped)


@jax.jit
def _alpha_core(key, x, rate, a, b, dropped):
    compute = _compute_dtype(x.dtype)
    a, b, dropped = _runtime((a, b, dropped), compute)
    keep = _m.draw_keep(key, x.shape, rate)
    return jnp.where(keep, a * x.astype(compute) + b, dropped).astype(x.dtype)


def spatial_dropout(
    key: jax.Array,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    channel_axis: int = -1,
    batch_axis: int | None = 0,
) -> jax.Array:
    r"""Drops whole feature maps: one keep decision per (example, channel).

    Spatial dropout (Tompson et al., 2015): in a convolutional feature map neighbouring
    activations are strongly correlated, so dropping single pixels barely regularises;
    instead a channel is kept or zeroed as a whole for each example,

    .. math::

        y_{n, \ldots, c} = \frac{m_{n c}}{1 - \text{rate}}\, x_{n, \ldots, c}, \qquad
        m_{nc} \sim \mathcal{B}(1 - \text{rate})

    This is ``dropjax.dropout(key, x, rate, broadcast_dims=<all other axes>)``: the mask is
    shared over every axis except ``batch_axis`` and ``channel_axis``. The axes are named,
    never guessed from ``x.ndim`` (NHWC: ``channel_axis=-1``; NCHW: ``channel_axis=1``).

    Args:
      key: one PRNG key.
      x: floating-point input with a batch and a channel axis.
      rate: probability of dropping a feature map (not the keep rate!); may be traced.
      channel_axis: the channel (feature-map) axis.
      batch_axis: the example axis, or None for an unbatched input (one mask per channel).

    Returns:
      The dropped-out array, same shape and dtype as ``x``.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1]``; an axis out of range; the batch
        and channel axes the same.
      TypeError: a non-floating ``x``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> y = dropjax.spatial_dropout(jax.random.key(0), jnp.ones((2, 4, 4, 3)), 0.5)
      >>> bool((y == y[:, :1, :1, :]).all())  # each (example, channel) map is constant
      True
    """
    name = "spatial_dropout"
    key, x, rate, _ = _c.check_call(name, key, x, rate)
    batch, channel = _batch_and_channel(name, x, batch_axis, channel_axis)
    shared = tuple(i for i in range(x.ndim) if i not in (batch, channel))
    return apply_dropout(key, x, rate, shared, compiled=True)


def drop_path(
    key: jax.Array, x: ArrayLike, rate: ArrayLike, *, batch_axis: int | None = 0
) -> jax.Array:
    r"""Stochastic depth: drops a residual branch for whole examples.

    Huang et al. (2016), in the per-example form used by modern residual networks: each
    example's branch output is zeroed with probability ``rate`` and otherwise rescaled,
    so ``x + drop_path(key, branch(x), rate)`` skips the branch for the dropped examples:

    .. math::

        y_n = \frac{m_n}{1 - \text{rate}}\, x_n, \qquad m_n \sim \mathcal{B}(1 - \text{rate})

    This is ``dropjax.dropout(key, x, rate, broadcast_dims=<all axes but batch_axis>)``.

    Args:
      key: one PRNG key.
      x: floating-point branch output.
      rate: probability of dropping an example's branch (not the keep rate!); may be traced.
      batch_axis: the example axis, or None to keep or drop the whole input at once (e.g.
        inside ``jax.vmap`` over examples).

    Returns:
      The array, same shape and dtype as ``x``: each example all zero or scaled by
      ``1 / (1 - rate)``.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1]``; ``batch_axis`` out of range.
      TypeError: a non-floating ``x``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> y = dropjax.drop_path(jax.random.key(0), jnp.ones((8, 5)), 0.5)
      >>> bool(((y == 0).all(axis=1) | (y == 2).all(axis=1)).all())
      True
    """
    key, x, rate, _ = _c.check_call("drop_path", key, x, rate)
    batch = _c.check_axis(batch_axis, x.ndim, "batch_axis")
    return apply_dropout(key, x, rate, tuple(i for i in range(x.ndim) if i != batch), compiled=True)


def dropconnect(key: jax.Array, w: ArrayLike, rate: ArrayLike) -> jax.Array:
    r"""DropConnect (Wan et al., 2013): drops individual weights, with inverted scaling.

    .. math::

        \tilde W = \frac{M \odot W}{1 - \text{rate}}, \qquad M_{ij} \sim
        \mathcal{B}(1 - \text{rate}), \qquad \mathbb{E}[\tilde W] = W

    The paper scales nothing in training and moment-matches a Gaussian at inference; with
    inverted scaling, as here, the expected layer output is the undropped layer's, so
    inference simply uses ``w``. This is ``dropjax.dropout(key, w, rate)``: elementwise
    dropout applied to a weight (any shape) instead of an activation. Use it inside the loss
    on each parameter you want masked, or use :func:`dropconnect_dense`.

    Args:
      key: one PRNG key.
      w: floating-point weight array.
      rate: probability of dropping a weight (not the keep rate!); may be traced.

    Returns:
      The masked, rescaled weight, same shape and dtype as ``w``.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1]``.
      TypeError: a non-floating ``w``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> w = dropjax.dropconnect(jax.random.key(0), jnp.ones((3, 4)), 0.75)
      >>> sorted(set(w.ravel().tolist())) in ([0.0, 4.0], [0.0], [4.0])
      True
    """
    key, w, rate, _ = _c.check_call("dropconnect", key, w, rate)
    return apply_dropout(key, w, rate, (), compiled=True)


def dropconnect_dense(
    key: jax.Array,
    x: ArrayLike,
    w: ArrayLike,
    b: ArrayLike | None = None,
    rate: ArrayLike | None = None,
    *,
    per_example: bool = False,
) -> jax.Array:
    r"""A dense layer whose weights are dropped: ``x @ dropconnect(key, w, rate) + b``.

    .. math::

        y = x \left(\frac{M \odot W}{1 - \text{rate}}\right) + b, \qquad
        \mathbb{E}[y] = x W + b

    By default one weight mask is drawn per call and shared by every example of the batch
    (the cheap form: one masked copy of ``w``; its mask is ``keep_mask(key, w.shape, rate)``,
    the one :func:`dropconnect` uses). With ``per_example=True`` every row of ``x`` gets its
    own mask, as in Wan et al.'s formulation, drawn as
    ``keep_mask(key, x.shape[:-1] + w.shape, rate)``; this materialises a masked weight per
    example (memory ``prod(x.shape[:-1]) * w.size``), so keep it to small layers. The bias is
    never masked.

    Args:
      key: one PRNG key.
      x: floating-point input of shape ``(..., in_features)``.
      w: weight of shape ``(in_features, out_features)``, the same dtype as ``x``.
      b: optional bias of shape ``(out_features,)``, the same dtype as ``x``.
      rate: probability of dropping a weight (not the keep rate!); required, may be traced.
      per_example: one weight mask per row of ``x`` instead of one per call.

    Returns:
      ``(..., out_features)`` array with ``x``'s dtype.

    Raises:
      ValueError: mismatched shapes; a concrete ``rate`` outside ``[0, 1]``.
      TypeError: no ``rate``; non-floating or mismatched dtypes; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x, w = jnp.ones((2, 3)), jnp.ones((3, 4))
      >>> dropjax.dropconnect_dense(jax.random.key(0), x, w, rate=0.0).tolist()
      [[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]]
      >>> dropjax.dropconnect_dense(jax.random.key(0), x, w, jnp.ones(4), 0.5).shape
      (2, 4)
    """
    name = "dropconnect_dense"
    if rate is None:
        if b is not None and jnp.ndim(b) == 0:
            raise TypeError(
                f"{name} got b={b!r}, a scalar, and no rate: the signature is "
                f"{name}(key, x, w, b=None, rate=...), so a rate passed fourth binds to the "
                f"bias. Pass it by keyword: {name}(key, x, w, rate={b!r})"
            )
        raise TypeError(f"{name} needs a drop rate; pass rate=0.5 (or your rate)")
    key, x, rate, value = _c.check_call(
        name,
        key,
        x,
        rate,
        order="key, x, w, b=None, rate=...",
        example=f"{name}(jax.random.key(0), x, w, rate=0.5)",
    )
    w = _c.check_floating(w, name)
    if w.ndim != 2:
        raise ValueError(f"{name}: w must be an (in_features, out_features) matrix; got {w.shape}")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{name}: the last axis of x {x.shape} must match the first axis of w {w.shape}"
        )
    if x.dtype != w.dtype:
        raise TypeError(
            f"{name}: x is {x.dtype} but w is {w.dtype}; cast one, e.g. x.astype(w.dtype)"
        )
    if b is not None:
        b = _c.check_floating(b, name)
        if b.shape != (w.shape[1],) or b.dtype != w.dtype:
            raise ValueError(
                f"{name}: b must have shape ({w.shape[1]},) and dtype {w.dtype}; got "
                f"{b.shape} {b.dtype}"
            )
    if per_example and x.ndim < 2:
        raise ValueError(
            f"{name} with per_example=True needs a batch: x of shape (batch, in_features); "
            f"got {x.shape}. Add a leading axis (x[None]) or use per_example=False"
        )
    if value == 0.0:
        y = x @ w
    elif not per_example:
        y = x @ apply_dropout(key, w, rate, (), compiled=True)
    else:
        y = _per_example_dense(key, x, w, rate)
    return y if b is None else y + b


@jax.jit
def _per_example_dense(key, x, w, rate):
    keep = _m.draw_keep(key, x.shape[:-1] + w.shape, rate)
    w_b = _m.apply_mask(jnp.broadcast_to(w, keep.shape), keep, _m.inverse_keep_prob(rate))
    return jnp.einsum("...i,...io->...o", x, w_b)


def _coverage_counts(size: int, block: int) -> np.ndarray:
    """How many valid block positions cover each index of one spatial axis."""
    i = np.arange(size)
    return np.minimum(i, size - block) - np.maximum(0, i - block + 1) + 1


@functools.lru_cache(maxsize=256)
def _coverage_histogram(
    sizes: tuple[int, ...], blocks: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct coverage counts ``c`` over the map and the fraction of positions with each."""
    counts = functools.reduce(
        np.multiply.outer, [_coverage_counts(s, k) for s, k in zip(sizes, blocks, strict=True)]
    ).ravel()
    values, multiplicity = np.unique(counts, return_counts=True)
    return values.astype(np.float64), multiplicity / counts.size


def _dropblock_gamma(
    sizes: tuple[int, ...], blocks: tuple[int, ...], rate: ArrayLike
) -> float | jax.Array:
    """The centre probability gamma whose expected dropped fraction is exactly ``rate``.

    Solves ``1 - sum_c w_c (1 - gamma)**c = rate`` (see :func:`dropblock`) by bisection:
    in float64 for a concrete rate (a Python float comes back), in float32 when traced.
    """
    values, weights = _coverage_histogram(tuple(sizes), tuple(blocks))
    value = _c.concrete_value(rate)
    if value is not None:
        if value in (0.0, 1.0):
            return value
        lo, hi = 0.0, 1.0
        for _ in range(_GAMMA_STEPS_CONCRETE):
            mid = 0.5 * (lo + hi)
            if 1.0 - float(np.sum(weights * (1.0 - mid) ** values)) < value:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    rate32 = jnp.asarray(rate).astype(jnp.float32)
    c = jnp.asarray(values, jnp.float32)
    w = jnp.asarray(weights, jnp.float32)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = 1.0 - jnp.sum(w * jnp.power(1.0 - mid, c)) < rate32
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    zero = jnp.zeros((), jnp.float32)
    lo, hi = lax.fori_loop(0, _GAMMA_STEPS_TRACED, step, (zero, zero + 1.0))
    gamma = 0.5 * (lo + hi)
    return jnp.where(rate32 <= 0.0, 0.0, jnp.where(rate32 >= 1.0, 1.0, gamma))


def _layout(
    shape: Sequence[int], batch: int | None, channel: int | None, spatial: tuple[int, ...]
) -> str:
    return (
        f"x of shape {tuple(shape)} read with batch_axis={batch}, channel_axis={channel}, "
        f"so spatial axes {spatial}; for NCHW input pass channel_axis=1"
    )


def _block_sizes(
    block_size: int | Sequence[int], sizes: tuple[int, ...], spatial: tuple[int, ...], layout: str
) -> tuple[int, ...]:
    n = len(sizes)
    if isinstance(block_size, (int, np.integer)) and not isinstance(block_size, bool):
        blocks = (int(block_size),) * n
    elif isinstance(block_size, Sequence) and len(block_size) == n:
        blocks = tuple(block_size)
    else:
        raise TypeError(
            f"dropblock: block_size must be an int or a tuple of {n} ints (one per spatial "
            f"axis {spatial}); got {block_size!r}"
        )
    for k, s, axis in zip(blocks, sizes, spatial, strict=True):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"dropblock: block_size must hold positive ints; got {block_size!r}")
        if k > s:
            raise ValueError(
                f"dropblock: block_size {k} exceeds the size {s} of spatial axis {axis} "
                f"({layout}); use block_size <= {s} on this feature map, or name the axes"
            )
    return tuple(int(k) for k in blocks)


def dropblock(
    key: jax.Array,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    block_size: int | Sequence[int],
    batch_axis: int | None = 0,
    channel_axis: int | None = -1,
    share_channels: bool = False,
) -> jax.Array:
    r"""DropBlock (Ghiasi et al., 2018): drops contiguous square blocks of a feature map.

    Block positions are sampled with probability :math:`\gamma` on the grid of *valid*
    positions, where a whole :math:`b \times b` block fits in the map (the paper's valid
    centre region; a sample at valid index :math:`r` covers rows :math:`r \ldots r+b-1`, so
    for odd :math:`b` its centre is :math:`r + \lfloor b/2 \rfloor`), and each sample is
    grown to its block with a max-pool (``lax.reduce_window``). The spatial axes are all
    axes other than ``batch_axis`` and ``channel_axis`` (two for NHWC, but any number works).

    **Calibration.** Along an axis of size :math:`S`, index :math:`i` is covered by
    :math:`n(i) = \min(i, S-b) - \max(0, i-b+1) + 1` valid positions, and a map position by
    :math:`c = \prod_d n_d(i_d)`. It survives only if none of them is sampled, so

    .. math::

        \mathbb{E}[\text{dropped fraction}] = 1 - \frac{1}{|\Omega|}
        \sum_{i \in \Omega} (1 - \gamma)^{c(i)} = \text{rate}

    which this op solves for :math:`\gamma` (monotone in :math:`\gamma`; bisection, in float64
    for a concrete rate and float32 for a traced one). The paper's
    :math:`\gamma = \frac{\text{rate}}{b^2}\frac{HW}{(H-b+1)(W-b+1)}` is the first-order
    term of this equation (:math:`(1-\gamma)^c \approx 1 - c\gamma`, with
    :math:`\sum_i c(i) = (H-b+1)(W-b+1)\,b^2`): it ignores overlapping blocks and drops less
    than ``rate`` (e.g. 0.26 instead of 0.3 for :math:`b = 3` on an 8x8 map). Here the
    expected dropped fraction is ``rate`` exactly, for every map size and block size.

    **Renormalisation.** The kept activations are scaled per example by the inverse kept
    fraction of that example's mask, :math:`y_n = x_n \odot M_n \cdot |M_n| / \sum M_n`
    (count of mask entries over count of kept entries, across its spatial positions and
    channels; an example with nothing kept is all zero). This matches the paper's
    ``count(M) / count_ones(M)`` taken per example, not over the batch.

    Masks are drawn per (example, channel) map, as in the paper's Algorithm 1, or shared by
    all channels of an example with ``share_channels=True``. Key use: the block positions are
    ``~keep_mask(key, g, gamma)`` with ``g`` the shape of ``x`` where each spatial size
    :math:`S` becomes :math:`S - b + 1` (and the channel size 1 when shared).

    Args:
      key: one PRNG key.
      x: floating-point feature map, e.g. NHWC.
      rate: the expected fraction of activations to drop (not the keep rate!), a scalar in
        ``[0, 1]``; may be traced (gamma is then solved inside the computation).
      block_size: the block's side, an int or one int per spatial axis; at most the map size.
      batch_axis: the example axis (renormalisation is per example), or None for one example.
      channel_axis: the channel axis, or None when there is none.
      share_channels: one block mask per example, shared by all its channels.

    Returns:
      The array, same shape and dtype as ``x``. Rate 0 returns ``x``; rate 1 returns zeros
      (zero gradient).

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1]``; a block larger than the map; no
        spatial axis left; the batch and channel axes the same.
      TypeError: a non-floating ``x``; a malformed ``block_size``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x = jnp.ones((2, 8, 8, 4))  # NHWC
      >>> y = dropjax.dropblock(jax.random.key(0), x, 0.3, block_size=3)
      >>> y.shape, y.dtype
      ((2, 8, 8, 4), dtype('float32'))
      >>> jnp.allclose(y.sum(axis=(1, 2, 3)), 8 * 8 * 4).item()  # renormalised per example
      True
    """
    name = "dropblock"
    key, x, rate, value = _c.check_call(name, key, x, rate)
    _c.check_scalar_rate(name, rate)
    batch, channel = _batch_and_channel(name, x, batch_axis, channel_axis)
    spatial = tuple(i for i in range(x.ndim) if i not in (batch, channel))
    layout = _layout(x.shape, batch, channel, spatial)
    if not spatial:
        raise ValueError(
            f"{name} needs at least one spatial axis besides batch_axis and channel_axis; got "
            f"{layout}"
        )
    sizes = tuple(x.shape[i] for i in spatial)
    blocks = _block_sizes(block_size, sizes, spatial, layout)
    if value == 0.0:
        return x
    if value == 1.0:
        return jnp.zeros_like(x)
    gamma = _dropblock_gamma(sizes, blocks, rate)
    guard = _c.rate_guard(rate) if value is None else jnp.float32(1.0)
    return _dropblock_core(
        key, x, gamma, guard, spatial, blocks, batch, channel, bool(share_channels)
    )


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8))
def _dropblock_core(key, x, gamma, guard, spatial, blocks, batch, channel, share_channels):
    block_of = dict(zip(spatial, blocks, strict=True))
    grid = tuple(
        d - block_of[i] + 1 if i in block_of else (1 if i == channel and share_channels else d)
        for i, d in enumerate(x.shape)
    )
    sampled = (~_m.draw_keep(key, grid, gamma)).astype(jnp.uint8)
    dropped = lax.reduce_window(
        sampled,
        np.uint8(0),
        lax.max,
        window_dimensions=tuple(block_of.get(i, 1) for i in range(x.ndim)),
        window_strides=(1,) * x.ndim,
        padding=tuple((block_of[i] - 1,) * 2 if i in block_of else (0, 0) for i in range(x.ndim)),
    )
    keep = dropped == 0
    per_example = tuple(i for i in range(x.ndim) if i != batch)
    kept = jnp.mean(keep, axis=per_example, keepdims=True, dtype=jnp.float32)
    scale = jnp.where(kept > 0.0, 1.0 / jnp.where(kept > 0.0, kept, 1.0), 0.0) * guard
    return _m.apply_mask(x, keep, scale)


def _check_concrete(
    name: str, value: ArrayLike | None, test: Callable[[np.ndarray], Any], message: str
) -> None:
    if value is not None and _c.is_concrete(value):
        if not bool(np.all(test(np.asarray(value, dtype=np.float64)))):
            raise ValueError(f"{name}: {message}; got {value!r}")


def concrete_dropout(
    key: jax.Array,
    x: ArrayLike,
    rate_logit: ArrayLike,
    *,
    temperature: ArrayLike = 0.1,
    eps: float = 1e-7,
) -> jax.Array:
    r"""Concrete dropout (Gal, Hron & Kendall, 2017): a drop rate learnable by gradient.

    The Bernoulli drop mask is relaxed to a continuous one (the binary Concrete / relaxed
    Bernoulli distribution), which is differentiable in the drop probability
    :math:`p = \sigma(\ell)` with :math:`\ell` = ``rate_logit``:

    .. math::

        z = \sigma\!\left(\frac{\ell + \log(u + \varepsilon) - \log(1 - u + \varepsilon)}
        {t}\right), \qquad u \sim \mathcal{U}(0, 1), \qquad
        y = \frac{x \odot (1 - z)}{1 - p}

    :math:`\ell = \log p - \log(1-p)` exactly, so it is used directly (the authors' code
    adds :math:`\varepsilon` to :math:`p` as well). :math:`z \to` a Bernoulli(:math:`p`)
    drop indicator as :math:`t \to 0`, and :math:`P(z > 1/2) = p` at every temperature (for
    :math:`\varepsilon = 0`). The mean is preserved only approximately,
    :math:`\mathbb{E}[1 - z] \approx 1 - p` for small :math:`t`. Learn :math:`\ell` jointly
    with the weights and add :func:`concrete_dropout_regularizer` to the loss. The noise is
    ``jax.random.uniform(key, x.shape)``.

    Args:
      key: one PRNG key.
      x: floating-point input.
      rate_logit: :math:`\ell`, the logit of the drop probability (not the keep rate!); a
        finite scalar or an array broadcastable to ``x`` (e.g. one per feature); may be
        traced and is differentiated.
      temperature: relaxation temperature :math:`t > 0` (the paper uses 0.1).
      eps: small constant keeping the logs of :math:`u` finite.

    Returns:
      The array, same shape and dtype as ``x``.

    Raises:
      ValueError: a concrete non-finite ``rate_logit``, a ``rate_logit`` that does not
        broadcast to ``x``, a concrete ``temperature`` that is not positive, or ``eps``
        outside ``[0, 0.5)``.
      TypeError: a non-floating ``x`` or ``rate_logit``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x = jnp.ones(1000)
      >>> f = lambda l: dropjax.concrete_dropout(jax.random.key(0), x, l).mean()
      >>> jnp.isfinite(jax.grad(f)(jnp.float32(-1.0))).item()
      True
    """
    name = "concrete_dropout"
    x = _c.check_floating(
        x, name, order="key, x, rate_logit", example=f"{name}(jax.random.key(0), x, -2.0)"
    )
    if isinstance(rate_logit, (int, float)) and not isinstance(rate_logit, bool):
        rate_logit = jnp.asarray(float(rate_logit))
    if not hasattr(rate_logit, "dtype"):
        raise TypeError(f"{name}: rate_logit must be a float or a floating array")
    rate_logit = cast(jax.Array, rate_logit)  # an array (NumPy or JAX) from here on
    if not jnp.issubdtype(rate_logit.dtype, jnp.floating):
        raise TypeError(
            f"{name}: rate_logit must be floating point to be learned; got {rate_logit.dtype}. "
            "Pass e.g. jnp.float32(-2.0)"
        )
    _check_concrete(
        name,
        rate_logit,
        np.isfinite,
        "rate_logit must be finite (p = sigmoid(rate_logit) lies strictly in (0, 1))",
    )
    try:
        fits = jnp.broadcast_shapes(x.shape, rate_logit.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name}: rate_logit of shape {rate_logit.shape} must broadcast to x's shape {x.shape}"
        )
    _check_concrete(name, temperature, lambda t: t > 0, "temperature must be positive")
    if not 0.0 <= float(eps) < 0.5:
        raise ValueError(f"{name}: eps must be in [0, 0.5); got {eps!r}")
    key = _c.check_key(key, name, order="key, x, rate_logit")
    return _concrete_core(key, x, rate_logit, temperature, float(eps))


@functools.partial(jax.jit, static_argnums=(4,))
def _concrete_core(key, x, rate_logit, temperature, eps):
    compute = _compute_dtype(x.dtype)
    logit, t = _runtime((rate_logit, temperature), compute)
    u = jax.random.uniform(key, x.shape, compute)
    noise = jnp.log(u + eps) - jnp.log(1.0 - u + eps)
    keep = jax.nn.sigmoid(-(logit + noise) / t)  # 1 - z, computed without cancellation
    y = x.astype(compute) * keep / jax.nn.sigmoid(-logit)
    return y.astype(x.dtype)


def concrete_dropout_regularizer(
    rate_logit: ArrayLike,
    weight: Any,
    *,
    weight_regularizer: ArrayLike,
    dropout_regularizer: ArrayLike,
    input_dim: int,
) -> jax.Array:
    r"""The concrete-dropout regulariser of one layer (Gal, Hron & Kendall, 2017).

    With :math:`p = \sigma(\ell)` the layer's drop probability and :math:`W` the weight of
    the layer that consumes the dropped input (of ``input_dim`` features :math:`K`):

    .. math::

        R(\ell, W) = \lambda_w \frac{\lVert W \rVert_2^2}{1 - p}
        + \lambda_p K \bigl(p \log p + (1 - p) \log (1 - p)\bigr)

    with :math:`\lambda_w` = ``weight_regularizer`` and :math:`\lambda_p` =
    ``dropout_regularizer``. The second term is :math:`-\lambda_p K\,\mathcal{H}(p)`: adding
    :math:`R` to the loss pushes :math:`p` towards 1/2 (maximal entropy) against the data
    term. :math:`\lVert W \rVert_2^2` sums the squares of every leaf when ``weight`` is a
    pytree (e.g. kernel and bias). :math:`\log p` and :math:`\log(1-p)` are computed as
    ``log_sigmoid(l)`` and ``log_sigmoid(-l)``, so there is no :math:`\varepsilon` and the
    value stays finite for any finite logit. The authors' examples set
    :math:`\lambda_w = l^2/N` and :math:`\lambda_p = 2/N` (prior length-scale :math:`l`, and
    :math:`N` training points).

    Args:
      rate_logit: :math:`\ell`, the scalar logit of the layer's drop probability.
      weight: the next layer's weight, an array or a pytree of arrays.
      weight_regularizer: :math:`\lambda_w \ge 0`.
      dropout_regularizer: :math:`\lambda_p \ge 0`.
      input_dim: :math:`K`, the number of features the dropout is applied to.

    Returns:
      A float32 scalar (float64 if the inputs are).

    Raises:
      ValueError: a non-scalar ``rate_logit``, a negative regulariser or a non-positive
        ``input_dim``.
      TypeError: a non-floating ``rate_logit`` or weight.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> r = dropjax.concrete_dropout_regularizer(
      ...     jnp.float32(0.0), jnp.ones((2, 3)), weight_regularizer=0.5,
      ...     dropout_regularizer=1.0, input_dim=2)
      >>> round(float(r), 4)  # 0.5 * 6 / 0.5 + 2 * log(0.5)
      4.6137
    """
    name = "concrete_dropout_regularizer"
    logit = jnp.asarray(rate_logit)
    if not jnp.issubdtype(logit.dtype, jnp.floating):
        raise TypeError(f"{name}: rate_logit must be floating point; got {logit.dtype}")
    if logit.ndim != 0:
        raise ValueError(
            f"{name} takes the scalar rate_logit of one layer; got shape {logit.shape}. Sum "
            "the regularisers of several layers instead"
        )
    if isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer)):
        raise TypeError(f"{name}: input_dim must be a positive int; got {input_dim!r}")
    if input_dim < 1:
        raise ValueError(f"{name}: input_dim must be a positive int; got {input_dim!r}")
    for reg_name, reg in (
        ("weight_regularizer", weight_regularizer),
        ("dropout_regularizer", dropout_regularizer),
    ):
        _check_concrete(name, reg, lambda r: r >= 0, f"{reg_name} must be >= 0")
    compute = _compute_dtype(logit.dtype)
    logit = logit.astype(compute)
    square_norm = jnp.zeros((), compute)
    for leaf in jax.tree.leaves(weight):
        leaf = _c.check_floating(leaf, name)
        square_norm = square_norm + jnp.sum(jnp.square(leaf.astype(compute)))
    p = jax.nn.sigmoid(logit)
    neg_entropy = p * jax.nn.log_sigmoid(logit) + (1.0 - p) * jax.nn.log_sigmoid(-logit)
    lam_w = jnp.asarray(weight_regularizer).astype(compute)
    lam_p = jnp.asarray(dropout_regularizer).astype(compute)
    return lam_w * square_norm / jax.nn.sigmoid(-logit) + lam_p * input_dim * neg_entropy
