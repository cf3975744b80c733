"""Inverted dropout with an explicit key."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropjax._src import masks as _m
from dropjax._src.decoupled import decoupled_core

__all__ = ["dropout"]


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
    x = _m.check_floating(x, "dropout", key=key)
    rate = _m.check_rate(rate)
    bdims = _m.normalize_axes(broadcast_dims, x.ndim)
    if deterministic:
        return x
    value = _m.concrete_value(rate)
    if value == 0.0:
        return x
    key = _m.check_key(key, "dropout")
    if value == 1.0:
        return jnp.zeros_like(x)
    return decoupled_core("standard", bdims, key, x, rate, 0.0)
