"""Inverted dropout with an explicit key: the mask of :mod:`dropjax._src.masks`, applied.

:func:`dropout` checks its arguments and hands them to :func:`apply_dropout` (the rate-0
and rate-1 shortcuts, then :func:`masked_dropout`, the differentiable core). The ops built
on plain dropout call these with arguments they have checked themselves, so each argument is
checked once: the variants call :func:`apply_dropout`, and the decoupled family
(:mod:`dropjax._src.decoupled`) calls :func:`masked_dropout` for its ``"standard"`` plan.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from dropjax._src import checks as _c
from dropjax._src import masks as _m

__all__ = ["dropout"]


def forward_mask(
    key: jax.Array, shape: Sequence[int], rate: ArrayLike, bdims: tuple[int, ...]
) -> tuple[jax.Array, jax.Array]:
    """``(keep, scale)`` of dropout at ``rate``: ``keep_mask``'s draw and ``1 / (1 - rate)``."""
    keep = _m.draw_keep(key, _m.mask_shape(shape, bdims), rate)
    return keep, _m.inverse_keep_prob(rate)


def _masked(bdims: tuple[int, ...], key: jax.Array, x: jax.Array, rate: ArrayLike) -> jax.Array:
    """The value of dropout: ``x * m / (1 - rate)`` in ``x.dtype``."""
    keep, scale = forward_mask(key, x.shape, rate, bdims)
    return _m.apply_mask(x, keep, scale)


def _rate_term(bdims, key, x, rate, d_rate):
    """Pathwise derivative in the rate, mask held fixed: ``x m / (1 - p)^2 * dp``."""
    d = _c.as_f32(d_rate) * _m.inverse_keep_prob(rate)
    y = _masked(bdims, key, x, rate)
    compute = y.dtype if jnp.finfo(y.dtype).bits >= 32 else jnp.dtype(jnp.float32)
    return (y.astype(compute) * d.astype(compute)).astype(y.dtype)


# Forward and backward noise are the same mask, so dropout is an ordinary differentiable
# function and supports forward mode (jvp, jacfwd, hessian). The tangent rule applies the
# mask through ``jax.checkpoint``: under linearize/transpose (reverse mode) the mask is then
# recomputed from the key in the backward pass instead of being saved, so the residual is
# the key and the rate, never an activation-sized mask.
@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def masked_dropout(bdims: tuple[int, ...], key, x, rate):
    """Dropout of checked arguments, no shortcuts: ``bdims`` normalised, ``key`` one key."""
    return _masked(bdims, key, x, rate)


def _masked_dropout_jvp(bdims, primals, tangents):
    key, x, rate = primals
    _, dx, d_rate = tangents
    y = _masked(bdims, key, x, rate)
    dy = None
    if not isinstance(dx, SymbolicZero):
        dy = jax.checkpoint(functools.partial(_masked, bdims))(key, dx, rate)
    if not isinstance(d_rate, SymbolicZero):
        term = jax.checkpoint(functools.partial(_rate_term, bdims))(key, x, rate, d_rate)
        dy = term if dy is None else dy + term
    return y, (jnp.zeros_like(y) if dy is None else dy)


masked_dropout.defjvp(_masked_dropout_jvp, symbolic_zeros=True)


# The same with a fixed mask layout, compiled once per shape: an eager call then runs one
# program instead of dispatching every primitive of the sampler on its own. The rate is an
# ordinary (traced) argument, so the mask is the one dropout draws for any rate.
@functools.partial(jax.jit, static_argnums=(0,))
def _compiled_dropout(bdims: tuple[int, ...], key, x, rate):
    return masked_dropout(bdims, key, x, rate)


def apply_dropout(
    key: jax.Array | None,
    x: jax.Array,
    rate: ArrayLike,
    bdims: tuple[int, ...],
    *,
    compiled: bool = False,
) -> jax.Array:
    """Dropout of checked arguments, with the concrete-rate shortcuts (the only copy of them).

    Rate 0 returns ``x`` (``key`` may then be None), rate 1 zeros; otherwise
    :func:`masked_dropout`, through one compiled program per shape when ``compiled``.
    """
    value = _c.concrete_value(rate)
    if value == 0.0:
        return x
    if value == 1.0:
        return jnp.zeros_like(x)
    return (_compiled_dropout if compiled else masked_dropout)(bdims, key, x, rate)


def dropout(
    key: jax.Array | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
) -> jax.Array:
    r"""Inverted dropout: zero each element with probability ``rate``, rescale the rest.

    .. math::

        y = \frac{x \odot m}{1 - \text{rate}}, \qquad m = \texttt{keep\_mask}(key, x.shape,
        \text{rate}), \qquad \mathbb{E}[y] = x

    ``rate`` is the probability of *dropping* (not the keep rate!). It may be a Python float
    or a traced scalar, so a schedule that changes it every step never recompiles. Rate 0 (or
    ``deterministic=True``) returns ``x`` itself; rate 1 returns zeros whose gradient is a
    finite zero. The output keeps ``x.dtype`` (bf16 in, bf16 out; the scaling is computed in
    float32 and rounded once).

    **Derivatives.** ``dropout`` is an ordinary differentiable function of ``x`` and of
    ``rate`` with the mask held fixed, in reverse mode (``jax.grad``, ``jax.vjp``) and in
    forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``, Hessian-vector products).
    The derivative in ``x`` is the same mask and scale applied to the tangent or cotangent.
    The derivative in ``rate`` is the pathwise one, :math:`\partial y / \partial p =
    x \odot m / (1 - p)^2`, the derivative almost everywhere (the mask is a step function
    of the rate). The tangent rule applies the mask under ``jax.checkpoint``, so reverse
    mode keeps the key and the rate between the passes and redraws the mask in the backward
    pass: no activation-sized mask is saved.

    **Invalid traced rates.** A concrete rate outside ``[0, 1]`` raises ``ValueError``. A
    traced rate cannot be checked, so a traced rate outside ``[0, 1]`` (or NaN, or inf)
    gives an all-NaN output instead of a silently wrong one.

    **Sampler.** The mask is drawn by :func:`keep_mask`: 32 bits per element from a
    counter-based hash of the element index keyed by two words drawn from ``key`` (not
    ``jax.random``'s threefry stream, and not cryptographic); the rate is exact to
    2**-32. ``with dropjax.mask_impl("bits"):`` draws the bits with ``jax.random.bits``
    instead (see :func:`keep_mask` for when to prefer it).

    Args:
      key: one PRNG key, e.g. ``jax.random.key(0)``; may be None when ``deterministic`` or
        when ``rate`` is a concrete 0.
      x: floating-point input.
      rate: drop probability in ``[0, 1]``.
      broadcast_dims: axes along which one mask entry is shared (negative allowed), as in
        ``flax.linen.Dropout``; e.g. ``(1,)`` on ``(batch, time, features)`` gives one mask
        per sequence over time (variational / "locked" dropout).
      deterministic: if True, return ``x`` unchanged (evaluation mode).

    Returns:
      The dropped-out array, same shape and dtype as ``x``.

    Raises:
      ValueError: concrete ``rate`` outside ``[0, 1]``; an axis out of range; a batch of keys
        (use ``jax.vmap``); no key while ``deterministic=False``.
      TypeError: non-floating ``x``; a raw integer key (use ``jax.random.key``); a key
        passed as ``x`` (the argument order is ``(key, x, rate)``).

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> y = dropjax.dropout(jax.random.key(0), jnp.ones((2, 4)), 0.5)
      >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [2.0], [0.0])
      True
      >>> dropjax.dropout(None, jnp.ones(3), 0.5, deterministic=True).tolist()
      [1.0, 1.0, 1.0]
      >>> x, t = jnp.ones(4), jnp.arange(4.0)  # forward mode: the mask applied to t
      >>> _, dy = jax.jvp(lambda v: dropjax.dropout(jax.random.key(0), v, 0.5), (x,), (t,))
      >>> bool(((dy == 0) | (dy == 2 * t)).all())
      True
    """
    x = _c.check_floating(x, "dropout", key=key)
    rate = _c.check_rate(rate)
    bdims = _c.normalize_axes(broadcast_dims, x.ndim)
    if deterministic:
        return x
    if _c.concrete_value(rate) != 0.0:
        key = _c.check_key(key, "dropout")
    return apply_dropout(key, x, rate, bdims)
