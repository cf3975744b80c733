"""Dropout whose forward and backward passes use different noise (``jax.custom_vjp``).

Gao, Pei & Huang, "Demystifying Dropout", ICML 2019, Sections 4-5, Eq. 8-10 and
Algorithm 1. In the paper's notation a layer computes ``z = W (h * eps_f) + b`` in the
forward pass, and in the backward pass

    dJ/dW   = delta (h * eps_b)^T                       (Eq. 9, weight gradient)
    delta_h = (W^T delta) * eps_b                       (Eq. 9, back-propagated error)

where ``eps`` are inverted-dropout variables (0, or ``1/(1-p)`` with probability ``1-p``).
The paper's implementation draws ``eps_b = eps_f * eps`` with ``eps`` of a small extra rate:
that is ``backward="nested"`` here. ``backward="independent"`` draws ``eps_b`` on its own.

Two forms:

* :func:`decoupled_dropout` is elementwise: a ``custom_vjp`` on ``h`` whose VJP multiplies
  the cotangent by ``eps_b``. It gives Eq. 9's ``delta_h`` but, followed by a matmul, the
  matmul's own VJP uses the *forward*-masked ``h`` for ``dJ/dW``.
* :func:`decoupled_call` wraps the layer ``fn`` itself, so that ``dJ/dW`` uses ``h * eps_b``:
  the exact layer-level form of Eq. 9.

Masks come from :mod:`dropjax._src.masks`: the forward mask is ``keep_mask(key, ., p_f)``
(the very mask ``dropout(key, ., p_f)`` uses). The nested backward mask thins that mask from
the same bits (an element kept in the forward pass has its bits uniform above the forward
threshold, so a second threshold drops a further fraction ``p_b`` of the kept elements,
independently: the law of ``eps_f * eps`` at the cost of one draw). The independent
backward mask is ``keep_mask(jax.random.fold_in(key, 1), ., p_b)``. Residuals hold the
key, never a mask: the backward pass regenerates the masks from it (one more pass of the
counter hash, no activation-sized memory kept alive between the passes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.typing import ArrayLike

from dropjax._src import masks as _m

__all__ = [
    "augmented_dropout",
    "backward_dropout",
    "decoupled_call",
    "decoupled_dropout",
    "forward_dropout",
]

_BACKWARD_MODES = ("nested", "independent")

# A plan is static configuration resolved from the mode and any concrete zero rates:
#   "standard"      forward m_f, backward m_f               (plain dropout)
#   "nested"        forward m_f, backward m_f & m_e         (paper's augmented dropout)
#   "independent"   forward m_f, backward m_e
#   "forward_only"  forward m_f, backward identity          (independent, p_b == 0)
#   "backward_only" forward identity, backward m_e          (independent, p_f == 0)
#   "identity"      both identity                           (nothing to drop)
# Each shortcut gives the same values as the general plan it stands for.


def _extra_key(key: jax.Array) -> jax.Array:
    return jax.random.fold_in(key, 1)


def _forward_mask(plan: str, key, shape, p_f, bdims):
    """(keep, scale) of the forward pass, or (None, None) for the identity."""
    if plan in ("backward_only", "identity"):
        return None, None
    keep = _m.draw_keep(key, _m.mask_shape(shape, bdims), p_f)
    return keep, _m.inverse_keep_prob(p_f)


def _backward_mask(plan: str, key, shape, p_f, p_b, bdims):
    """(keep, scale) of the backward pass, or (None, None) for the identity."""
    mshape = _m.mask_shape(shape, bdims)
    if plan in ("forward_only", "identity"):
        return None, None
    if plan == "standard":
        return _m.draw_keep(key, mshape, p_f), _m.inverse_keep_prob(p_f)
    if plan == "nested":
        keep = _m.draw_nested_keep(key, mshape, p_f, p_b)
        return keep, _m.inverse_keep_prob(p_f) * _m.inverse_keep_prob(p_b)
    extra = _m.draw_keep(_extra_key(key), mshape, p_b)
    return extra, _m.inverse_keep_prob(p_b)  # independent, backward_only


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def decoupled_core(plan: str, bdims: tuple[int, ...], key, x, p_f, p_b):
    """Elementwise decoupled dropout; ``plan`` and ``bdims`` are static (see module doc)."""
    keep, scale = _forward_mask(plan, key, x.shape, p_f, bdims)
    return _m.apply_mask(x, keep, scale)


def _core_fwd(plan, bdims, key, x, p_f, p_b):
    return decoupled_core(plan, bdims, key, x, p_f, p_b), (key, p_f, p_b)


def _core_bwd(plan, bdims, residuals, g):
    key, p_f, p_b = residuals
    keep, scale = _backward_mask(plan, key, g.shape, p_f, p_b, bdims)
    return None, _m.apply_mask(g, keep, scale), None, None


decoupled_core.defvjp(_core_fwd, _core_bwd)


def _plan(backward: str, p_f, p_b) -> str:
    if backward not in _BACKWARD_MODES:
        raise ValueError(f"backward must be one of {_BACKWARD_MODES}; got {backward!r}")
    f0 = _m.concrete_value(p_f) == 0.0
    b0 = _m.concrete_value(p_b) == 0.0
    if f0 and b0:
        return "identity"
    if backward == "nested":
        return "standard" if b0 else "nested"
    if b0:
        return "forward_only"
    return "backward_only" if f0 else "independent"


def _prepare(name, key, x, forward_rate, backward_rate, backward, broadcast_dims):
    x = _m.check_floating(x, name)
    p_f = _m.check_rate(forward_rate, "forward_rate")
    p_b = _m.check_rate(backward_rate, "backward_rate")
    plan = _plan(backward, p_f, p_b)
    bdims = _m.normalize_axes(broadcast_dims, x.ndim)
    if plan != "identity":
        key = _m.check_key(key, name)
    return key, x, p_f, p_b, plan, bdims


def decoupled_dropout(
    key: jax.Array,
    x: ArrayLike,
    forward_rate: ArrayLike,
    backward_rate: ArrayLike,
    *,
    backward: str = "nested",
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    r"""Dropout with one mask in the forward pass and another in the backward pass.

    The value is inverted dropout at ``forward_rate``; the gradient that flows back to ``x``
    is the incoming cotangent ``g`` masked and rescaled by a backward mask:

    .. math::

        y = x \odot m_f \, s_f, \qquad s_f = \frac{1}{1 - p_f}, \qquad
        \bar x = g \odot m_b \, s_b

    * ``backward="nested"`` (Gao et al.'s implementation, ``eps_b = eps_f * eps``):
      :math:`m_b = m_f \wedge m_e` with :math:`m_e` an extra keep-mask of rate
      :math:`p_b`, and :math:`s_b = 1 / ((1 - p_f)(1 - p_b))`.
    * ``backward="independent"``: :math:`m_b = m_e`, drawn independently of :math:`m_f`,
      with :math:`s_b = 1 / (1 - p_b)`.

    :math:`m_f` is ``keep_mask(key, x.shape, p_f)``, the mask ``dropout(key, x, p_f)`` uses,
    so ``decoupled_dropout(key, x, p, 0.0)`` has exactly the value and gradient of
    ``dropout(key, x, p)``. In nested mode :math:`m_f \wedge m_e` is drawn from the bits
    :math:`u` of :math:`m_f` as :math:`u \ge t_f + \lfloor p_b (2^{32} - 1 - t_f) \rfloor`
    (:math:`t_f` the forward threshold): among forward-kept elements :math:`u` is uniform,
    so each survives with probability :math:`1 - p_b` independently, exactly the law of an
    independent :math:`m_e`, and the backward pass costs one mask draw, as in dropout. In
    independent mode :math:`m_e` is ``keep_mask(jax.random.fold_in(key, 1), x.shape, p_b)``.

    The VJP keeps only the key and the rates as residuals and regenerates the masks in the
    backward pass: one extra PRNG pass instead of an activation-sized mask held in memory
    between forward and backward.

    Followed by a dense layer, this elementwise form gives Eq. 9's back-propagated error but
    *not* its weight gradient (the matmul's VJP reuses the forward-masked input); use
    :func:`decoupled_call` for the exact layer-level form.

    Args:
      key: one PRNG key (``jax.random.key``).
      x: floating-point input.
      forward_rate: drop probability of the forward pass, :math:`p_f` in ``[0, 1]``.
      backward_rate: drop probability of the backward mask, :math:`p_b` in ``[0, 1]``; in
        nested mode the *extra* rate applied on top of the forward mask.
      backward: ``"nested"`` (default) or ``"independent"``.
      broadcast_dims: axes sharing one mask entry (both masks), negative allowed.

    Returns:
      ``x * m_f * s_f`` with ``x``'s dtype, whose VJP is ``g * m_b * s_b``.

    Raises:
      ValueError: a concrete rate outside ``[0, 1]``, an unknown ``backward`` mode, an axis
        out of range, or a batch of keys.
      TypeError: a non-floating ``x`` or a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> key, x = jax.random.key(0), jnp.ones(6)
      >>> y, vjp = jax.vjp(lambda h: dropjax.decoupled_dropout(key, h, 0.5, 0.2), x)
      >>> (g,) = vjp(jnp.ones(6))
      >>> bool(jnp.all((g != 0) <= (y != 0)))  # nested: backward support within forward
      True
    """
    key, x, p_f, p_b, plan, bdims = _prepare(
        "decoupled_dropout", key, x, forward_rate, backward_rate, backward, broadcast_dims
    )
    if plan == "identity":
        return x
    return decoupled_core(plan, bdims, key, x, p_f, p_b)


def forward_dropout(
    key: jax.Array, x: ArrayLike, rate: ArrayLike, *, broadcast_dims: Sequence[int] = ()
) -> jax.Array:
    """Dropout in the forward pass only; the backward pass is the identity.

    Gao et al.'s Definition 1: features are dropped (and rescaled) as in standard dropout,
    but neither features nor back-propagated errors are dropped in the backward pass.
    Equal to ``decoupled_dropout(key, x, rate, 0.0, backward="independent")``; the forward
    mask is the one ``dropout(key, x, rate)`` uses.

    Args:
      key: one PRNG key.
      x: floating-point input.
      rate: probability of dropping in the forward pass.
      broadcast_dims: axes sharing one mask entry.

    Returns:
      ``x * m / (1 - rate)``, whose VJP is the identity.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> f = lambda h: dropjax.forward_dropout(jax.random.key(0), h, 0.5).sum()
      >>> jax.grad(f)(jnp.ones(3)).tolist()
      [1.0, 1.0, 1.0]
    """
    return decoupled_dropout(
        key, x, rate, 0.0, backward="independent", broadcast_dims=broadcast_dims
    )


def backward_dropout(
    key: jax.Array, x: ArrayLike, rate: ArrayLike, *, broadcast_dims: Sequence[int] = ()
) -> jax.Array:
    """Dropout in the backward pass only; the forward value is ``x`` itself.

    Gao et al.'s Definition 2: all features are kept in the forward pass, while the
    back-propagated error is dropped and rescaled as standard dropout would. Equal to
    ``decoupled_dropout(key, x, 0.0, rate, backward="independent")``, so the backward mask
    is ``keep_mask(jax.random.fold_in(key, 1), x.shape, rate)``.

    Args:
      key: one PRNG key.
      x: floating-point input.
      rate: probability of dropping a cotangent entry.
      broadcast_dims: axes sharing one mask entry.

    Returns:
      ``x`` (same values), whose VJP is ``g * m / (1 - rate)``.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x = jnp.arange(4.0)
      >>> bool((dropjax.backward_dropout(jax.random.key(0), x, 0.5) == x).all())
      True
    """
    return decoupled_dropout(
        key, x, 0.0, rate, backward="independent", broadcast_dims=broadcast_dims
    )


def augmented_dropout(
    key: jax.Array,
    x: ArrayLike,
    rate: ArrayLike,
    backward_rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """Gao et al.'s augmented dropout (Section 5), elementwise, nested backward noise.

    Same as ``decoupled_dropout(key, x, rate, backward_rate, backward="nested")``: the
    forward pass is standard dropout at ``rate``; the backward pass drops, on top of the
    forward mask, a further fraction ``backward_rate`` (the paper uses 1e-4 to 2e-4).
    See :func:`decoupled_call` for the layer-exact form of Eq. 9.

    Args:
      key: one PRNG key.
      x: floating-point input.
      rate: forward drop probability.
      backward_rate: extra backward drop probability.
      broadcast_dims: axes sharing one mask entry.

    Returns:
      The forward-dropped ``x``; its VJP uses the nested backward mask.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> key, x = jax.random.key(1), jnp.ones(8)
      >>> bool((dropjax.augmented_dropout(key, x, 0.3, 1e-4)
      ...       == dropjax.dropout(key, x, 0.3)).all())  # same forward value
      True
    """
    return decoupled_dropout(
        key, x, rate, backward_rate, backward="nested", broadcast_dims=broadcast_dims
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _call_core(fn, plan, bdims, key, params, x, p_f, p_b, consts):
    keep, scale = _forward_mask(plan, key, x.shape, p_f, bdims)
    return fn(params, _m.apply_mask(x, keep, scale), *consts)


def _call_fwd(fn, plan, bdims, key, params, x, p_f, p_b, consts):
    out = _call_core(fn, plan, bdims, key, params, x, p_f, p_b, consts)
    return out, (key, params, x, p_f, p_b, consts)


def _call_bwd(fn, plan, bdims, residuals, g):
    key, params, x, p_f, p_b, consts = residuals
    keep, scale = _backward_mask(plan, key, x.shape, p_f, p_b, bdims)
    x_b = _m.apply_mask(x, keep, scale)
    _, vjp = jax.vjp(lambda p, h, c: fn(p, h, *c), params, x_b, consts)
    d_params, d_x, d_consts = vjp(g)
    return None, d_params, _m.apply_mask(d_x, keep, scale), None, None, d_consts


_call_core.defvjp(_call_fwd, _call_bwd)


def decoupled_call(
    key: jax.Array,
    fn: Callable[[Any, jax.Array], Any],
    params: Any,
    x: ArrayLike,
    forward_rate: ArrayLike,
    backward_rate: ArrayLike,
    *,
    backward: str = "nested",
    broadcast_dims: Sequence[int] = (),
) -> Any:
    r"""Applies a layer to decoupled-dropout input, exactly as Eq. 9 of Gao et al.

    The forward value is ``fn(params, x * m_f * s_f)``. The backward pass is the VJP of
    ``fn`` taken at the *backward*-masked input :math:`x_b = x \odot m_b\, s_b`, with the
    ``x`` cotangent multiplied once more by :math:`m_b s_b`. For a dense layer
    :math:`z = W h + b` this is the paper's Eq. 9 / Algorithm 1:

    .. math::

        \frac{\partial J}{\partial W} = \delta\, (h \odot \epsilon_b)^\top, \qquad
        \delta_h = (W^\top \delta) \odot \epsilon_b, \qquad
        \epsilon_b = m_b\, s_b

    which an elementwise ``custom_vjp`` on ``h`` cannot give (a matmul's VJP reuses the
    forward-masked ``h`` for the weight gradient). Masks and scales are those of
    :func:`decoupled_dropout` for the same key, shape, rates and mode.

    What it means for a non-linear ``fn``: every Jacobian is evaluated at :math:`x_b`, not at
    the forward input, so ``fn`` should be the affine part of a layer (dense, conv) whose
    Jacobian in ``params`` is linear in ``x``; put the activation outside ``fn``. For an affine
    ``fn`` the ``x``-Jacobian does not depend on ``x``, so ``delta_h`` is exactly Eq. 9's.
    The backward pass re-runs ``fn`` once at :math:`x_b` (one extra layer forward), and keeps
    ``params``, ``x`` and the key as residuals, never a mask. Values ``fn`` closes over are
    hoisted with ``jax.closure_convert`` and differentiated normally.

    Args:
      key: one PRNG key.
      fn: ``fn(params, x) -> output``, e.g. ``lambda p, h: h @ p["w"] + p["b"]``.
      params: a pytree of parameters (differentiated).
      x: floating-point layer input, dropped before ``fn``.
      forward_rate: forward drop probability :math:`p_f`.
      backward_rate: backward drop probability :math:`p_b` (extra rate in nested mode).
      backward: ``"nested"`` (default) or ``"independent"``.
      broadcast_dims: axes of ``x`` sharing one mask entry.

    Returns:
      ``fn(params, x * m_f * s_f)``.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> dense = lambda p, h: h @ p["w"]
      >>> params, h = {"w": jnp.ones((4, 2))}, jnp.ones((3, 4))
      >>> loss = lambda p, h: dropjax.decoupled_call(
      ...     jax.random.key(0), dense, p, h, 0.5, 0.0).sum()
      >>> dw = jax.grad(loss)(params, h)["w"]
      >>> dw.shape
      (4, 2)
    """
    key, x, p_f, p_b, plan, bdims = _prepare(
        "decoupled_call", key, x, forward_rate, backward_rate, backward, broadcast_dims
    )
    if plan == "identity":
        return fn(params, x)
    converted, consts = jax.closure_convert(fn, params, x)
    return _call_core(converted, plan, bdims, key, params, x, p_f, p_b, tuple(consts))
