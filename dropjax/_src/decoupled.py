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
import jax.extend
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.interpreters import ad, batching, mlir
from jax.typing import ArrayLike

from dropjax._src import checks as _c
from dropjax._src import masks as _m
from dropjax._src.ops import forward_mask, masked_dropout

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
    return forward_mask(key, shape, p_f, bdims)


def _backward_mask(plan: str, key, shape, p_f, p_b, bdims):
    """(keep, scale) of the backward pass, or (None, None) for the identity."""
    mshape = _m.mask_shape(shape, bdims)
    if plan in ("forward_only", "identity"):
        return None, None
    if plan == "standard":
        return forward_mask(key, shape, p_f, bdims)
    if plan == "nested":
        keep = _m.draw_nested_keep(key, mshape, p_f, p_b)
        return keep, _m.inverse_keep_prob(p_f) * _m.inverse_keep_prob(p_b)
    extra = _m.draw_keep(_extra_key(key), mshape, p_b)
    return extra, _m.inverse_keep_prob(p_b)  # independent, backward_only


def _decoupled_value(plan: str, bdims, key, x, p_f, p_b):
    """The forward value ``x * m_f * s_f`` of a plan, all NaN for an invalid traced p_b.

    ``p_b`` only shapes the backward pass, so without this an invalid traced backward rate
    (1.5, -0.1, NaN) would leave the value untouched and show up only in the gradient. A
    concrete ``p_b`` was validated by ``check_rate``.
    """
    keep, scale = _forward_mask(plan, key, x.shape, p_f, bdims)
    if not _c.is_concrete(p_b):
        guard = _c.rate_guard(p_b)
        scale = guard if scale is None else scale * guard
        keep = jnp.ones((), bool) if keep is None else keep
    return _m.apply_mask(x, keep, scale)


# The decoupled plans: the backward pass is by design not the derivative of the forward
# pass, so they are defined for reverse mode only. The JVP rule gives the primal and a
# tangent ``dy = B(dx)`` where ``B`` is a linear primitive that only has a transpose (the
# backward mask applied to the cotangent); evaluating ``B`` itself, which only forward mode
# does, raises an error that says so. ``B``'s residuals are the key and the rates.
_FORWARD_MODE_ERROR = (
    "{name} has no forward-mode derivative (jax.jvp, jax.jacfwd, jax.hessian, "
    "jax.linearize): its backward pass is by design not the derivative of its forward "
    "pass (forward and backward use different dropout masks), so only reverse mode "
    "(jax.grad, jax.vjp) is defined. For dropout whose forward and backward masks are the "
    "same, use dropjax.dropout(key, x, rate), which supports both modes."
)

_backward_only_p = jax.extend.core.Primitive("dropjax_backward_only")
_backward_only_p.multiple_results = True


def _backward_only_raise(*_, message, **__):
    raise TypeError(message)


def _backward_only_abstract(*_, out_avals, **__):
    return list(out_avals)


def _backward_only_transpose(cts, *operands, bwd, n_res, levels, **_):
    """``B^T``: ``bwd(residuals, cotangents)``, vmapped once per batching level."""
    res = operands[:n_res]
    lin = operands[n_res:]
    cts = [ad.instantiate_zeros(ct) for ct in cts]
    fn = bwd
    for axes in reversed(levels):
        fn = jax.vmap(fn, in_axes=(list(axes), 0))
    lin_cts = fn(list(res), list(cts))
    return [None] * n_res + [
        ct if isinstance(op, ad.UndefinedPrimal) else None
        for op, ct in zip(lin, lin_cts, strict=True)
    ]


def _backward_only_batch(args, dims, *, n_res, levels, out_avals, **params):
    """vmap: batch axes to the front (linear inputs always batched), one more level."""
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    res_axes = tuple(None if d is None else 0 for d in dims[:n_res])
    res = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims, strict=True)]
    moved = []
    for a, d in zip(args[n_res:], dims[n_res:], strict=True):
        moved.append(jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0))
    outs = _backward_only_p.bind(
        *res[:n_res],
        *moved,
        n_res=n_res,
        levels=(res_axes, *levels),
        out_avals=tuple(a.update(shape=(size, *a.shape)) for a in out_avals),
        **params,
    )
    return outs, [0] * len(outs)


_backward_only_p.def_impl(_backward_only_raise)
_backward_only_p.def_abstract_eval(_backward_only_abstract)
mlir.register_lowering(_backward_only_p, _backward_only_raise)
ad.primitive_jvps[_backward_only_p] = _backward_only_raise
ad.primitive_transposes[_backward_only_p] = _backward_only_transpose
batching.primitive_batchers[_backward_only_p] = _backward_only_batch


def _backward_only(name: str, bwd, residuals, linear, out_avals):
    """The tangent ``B(linear)`` whose transpose is ``bwd(residuals, cts)``; see above."""
    return _backward_only_p.bind(
        *residuals,
        *linear,
        bwd=bwd,
        n_res=len(residuals),
        levels=(),
        out_avals=tuple(out_avals),
        message=_FORWARD_MODE_ERROR.format(name=name),
    )


def _check_rate_tangents(name, *tangents):
    if not all(isinstance(t, SymbolicZero) for t in tangents):
        raise TypeError(
            f"{name} has no derivative with respect to its rates: its backward pass is by "
            "design not the derivative of its forward pass. Pass the rates as constants "
            "(e.g. jax.lax.stop_gradient(rate)), or use dropjax.dropout(key, x, rate), whose "
            "rate gradient is the pathwise derivative x * m / (1 - rate)**2"
        )


@functools.cache
def _elementwise_bwd(plan: str, bdims: tuple[int, ...]):
    def bwd(res, cts):
        key, p_f, p_b = res
        (g,) = cts
        keep, scale = _backward_mask(plan, key, g.shape, p_f, p_b, bdims)
        return [_m.apply_mask(g, keep, scale)]

    return bwd


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _decoupled(plan: str, bdims: tuple[int, ...], key, x, p_f, p_b):
    return _decoupled_value(plan, bdims, key, x, p_f, p_b)


def _decoupled_jvp(plan, bdims, primals, tangents):
    key, x, p_f, p_b = primals
    _, dx, d_pf, d_pb = tangents
    _check_rate_tangents("decoupled_dropout", d_pf, d_pb)
    # The primal through the custom_jvp itself, so that forward mode over this rule (e.g.
    # jax.hessian = jacfwd of jacrev) reaches the error below, not the forward mask's JVP.
    y = _decoupled(plan, bdims, key, x, p_f, p_b)
    if isinstance(dx, SymbolicZero):
        return y, jnp.zeros_like(y)
    (dy,) = _backward_only(
        "decoupled_dropout (and forward_dropout, backward_dropout, augmented_dropout)",
        _elementwise_bwd(plan, bdims),
        (key, _c.as_f32(p_f), _c.as_f32(p_b)),
        (dx,),
        (jax.typeof(dx),),
    )
    return y, dy


_decoupled.defjvp(_decoupled_jvp, symbolic_zeros=True)


def decoupled_core(plan: str, bdims: tuple[int, ...], key, x, p_f, p_b):
    """Elementwise decoupled dropout; ``plan`` and ``bdims`` are static (see module doc).

    ``"standard"`` (forward and backward mask equal) is plain dropout,
    :func:`dropjax._src.ops.masked_dropout`: differentiable in both modes and in the rate.
    The other plans are reverse-mode only and raise under forward mode.
    """
    if plan == "standard":
        return masked_dropout(bdims, key, x, p_f)
    return _decoupled(plan, bdims, key, x, p_f, p_b)


def _plan(backward: str, p_f, p_b) -> str:
    if backward not in _BACKWARD_MODES:
        raise ValueError(f"backward must be one of {_BACKWARD_MODES}; got {backward!r}")
    f0 = _c.concrete_value(p_f) == 0.0
    b0 = _c.concrete_value(p_b) == 0.0
    if f0 and b0:
        return "identity"
    if backward == "nested":
        return "standard" if b0 else "nested"
    if b0:
        return "forward_only"
    return "backward_only" if f0 else "independent"


def _prepare(
    name: str,
    key: jax.Array,
    x: ArrayLike,
    forward_rate: ArrayLike,
    backward_rate: ArrayLike,
    backward: str,
    broadcast_dims: Sequence[int],
) -> tuple[jax.Array, jax.Array, ArrayLike, ArrayLike, str, tuple[int, ...]]:
    if name == "decoupled_call":
        order = "key, fn, params, x, forward_rate, backward_rate"
        example = f"{name}(jax.random.key(0), fn, params, x, 0.5, 0.1)"
    else:
        order = "key, x, forward_rate, backward_rate"
        example = f"{name}(jax.random.key(0), x, 0.5, 0.1)"
    x = _c.check_floating(x, name, key=key, order=order, example=example)
    p_f = _c.check_rate(forward_rate, "forward_rate")
    p_b = _c.check_rate(backward_rate, "backward_rate")
    plan = _plan(backward, p_f, p_b)
    bdims = _c.normalize_axes(broadcast_dims, x.ndim)
    if plan != "identity":
        key = _c.check_key(key, name, order=order)
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

    A concrete rate outside ``[0, 1]`` raises ``ValueError``. A traced one cannot be
    checked, so a traced ``forward_rate`` *or* ``backward_rate`` outside ``[0, 1]`` (or NaN)
    makes the value all NaN (and the gradient too), never a silently wrong one: an invalid
    backward rate does not wait for the backward pass to show.

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
      ``x`` (same values), whose VJP is ``g * m / (1 - rate)``; all NaN for an invalid
      traced ``rate`` (outside ``[0, 1]`` or NaN), as every dropjax op with a rate.

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


def _call_forward(fn, plan, bdims, key, params, x, p_f, p_b, consts):
    return fn(params, _decoupled_value(plan, bdims, key, x, p_f, p_b), *consts)


def _call_bwd(fn, plan, bdims, tree, present, res, cts):
    """Eq. 9: the VJP of ``fn`` at the backward-masked input, ``x``'s cotangent masked again."""
    key, params, x, p_f, p_b, consts = jax.tree.unflatten(tree, res)
    keep, scale = _backward_mask(plan, key, x.shape, p_f, p_b, bdims)
    x_b = _m.apply_mask(x, keep, scale)
    out, vjp = jax.vjp(lambda p, h, c: fn(p, h, *c), params, x_b, consts)
    d_params, d_x, d_consts = vjp(jax.tree.unflatten(jax.tree.structure(out), cts))
    d_x = _m.apply_mask(d_x, keep, scale)
    leaves = jax.tree.leaves((d_params, d_x, d_consts))
    return [leaf for leaf, keep_it in zip(leaves, present, strict=True) if keep_it]


def _nonzero_tangent(t) -> bool:
    return not isinstance(t, SymbolicZero) and jnp.result_type(t) != jax.dtypes.float0


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _call_core(fn, plan, bdims, key, params, x, p_f, p_b, consts):
    return _call_forward(fn, plan, bdims, key, params, x, p_f, p_b, consts)


def _call_jvp(fn, plan, bdims, primals, tangents):
    key, params, x, p_f, p_b, consts = primals
    _, d_params, dx, d_pf, d_pb, d_consts = tangents
    _check_rate_tangents("decoupled_call", d_pf, d_pb)
    out = _call_core(fn, plan, bdims, key, params, x, p_f, p_b, consts)  # see _decoupled_jvp
    lin = jax.tree.leaves((d_params, dx, d_consts), is_leaf=lambda t: isinstance(t, SymbolicZero))
    present = tuple(_nonzero_tangent(t) for t in lin)
    out_leaves, out_tree = jax.tree.flatten(out)
    if not any(present):
        return out, jax.tree.unflatten(out_tree, [jnp.zeros_like(o) for o in out_leaves])
    res, tree = jax.tree.flatten((key, params, x, _c.as_f32(p_f), _c.as_f32(p_b), consts))
    d_out = _backward_only(
        "decoupled_call",
        functools.partial(_call_bwd, fn, plan, bdims, tree, present),
        res,
        [t for t, keep_it in zip(lin, present, strict=True) if keep_it],
        [jax.typeof(o) for o in out_leaves],
    )
    return out, jax.tree.unflatten(out_tree, d_out)


_call_core.defjvp(_call_jvp, symbolic_zeros=True)


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
      ``fn(params, x * m_f * s_f)``; ``fn`` of an all-NaN input when a traced rate is
      invalid (outside ``[0, 1]`` or NaN), as in :func:`decoupled_dropout`.

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
