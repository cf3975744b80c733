"""Scaled dot-product attention with dropout on the attention weights.

Attention dropout zeroes individual query-key links after the softmax: each query then
reads from a random subset of the positions it attends to, and the surviving weights are
scaled by ``1 / (1 - rate)`` so that the expected output equals the output without
dropout. (Vaswani et al., "Attention Is All You Need", 2017, Section 5.4, drop sub-layer
outputs; common Transformer implementations, Flax's among them, also drop these weights.)

Inputs are laid out as in :func:`jax.nn.dot_product_attention`: ``[batch, seq, heads,
head_dim]`` (or unbatched ``[seq, heads, head_dim]``), with grouped-query attention when the
key/value tensors have fewer heads than the query. With ``dropout_rate=0`` the result
matches :func:`jax.nn.dot_product_attention` up to float rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src import masks as _m
from dropjax._src.ops import dropout

__all__ = ["dot_product_attention"]

_NAME = "dot_product_attention"


def _floating(x, label: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{_NAME} needs a floating-point {label}; got dtype {x.dtype}. Cast first, e.g. "
            f"{label}.astype(jnp.float32)"
        )
    return x


def _check_layout(query: jax.Array, key: jax.Array, value: jax.Array) -> None:
    if query.ndim not in (3, 4):
        raise ValueError(
            f"{_NAME} expects query of shape [batch, seq, heads, head_dim] or [seq, heads, "
            f"head_dim]; got shape {query.shape}"
        )
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(
            f"{_NAME} needs query, key and value with the same number of dimensions; got "
            f"shapes {query.shape}, {key.shape}, {value.shape}"
        )
    if key.shape != value.shape:
        raise ValueError(
            f"{_NAME} needs key and value of the same shape; got {key.shape} and {value.shape}"
        )
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(
            f"{_NAME} needs query, key and value of one dtype; got {query.dtype}, {key.dtype}, "
            f"{value.dtype}. Cast them to one dtype first"
        )
    if query.ndim == 4 and query.shape[0] != key.shape[0]:
        raise ValueError(
            f"{_NAME} got batch size {query.shape[0]} for query but {key.shape[0]} for key"
        )
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"{_NAME} needs query and key with the same head_dim (last axis); got "
            f"{query.shape[-1]} and {key.shape[-1]}"
        )
    num_heads, num_kv_heads = query.shape[-2], key.shape[-2]
    if num_kv_heads == 0 or num_heads % num_kv_heads != 0:
        raise ValueError(
            f"{_NAME} needs the query heads ({num_heads}) to be a multiple of the key/value "
            f"heads ({num_kv_heads}) (grouped-query attention)"
        )


def _broadcast_operand(t, shape: tuple[int, ...], label: str) -> jax.Array:
    t = jnp.asarray(t)
    try:
        np.broadcast_shapes(t.shape, shape)
    except ValueError:
        raise ValueError(
            f"{_NAME} needs {label} broadcastable to the attention weights' shape {shape} "
            f"([batch, heads, q_len, kv_len]); got shape {t.shape}"
        ) from None
    if t.ndim > len(shape):
        raise ValueError(
            f"{_NAME} needs {label} with at most {len(shape)} dimensions, broadcastable to "
            f"[batch, heads, q_len, kv_len]; got shape {t.shape}"
        )
    return jnp.broadcast_to(t, shape)


def _attention_weights(query, key, bias, mask, scale) -> jax.Array:
    """Softmax weights in float32, shape ``[B, N, T, S]``, from 4-D inputs."""
    b, t, n, h = query.shape
    s, k = key.shape[1], key.shape[2]
    g = n // k
    # At least float32 (promote_types would refuse bf16 + f32 under strict promotion).
    logits_dtype = query.dtype if jnp.finfo(query.dtype).bits >= 32 else jnp.dtype(jnp.float32)
    grouped = query.reshape(b, t, k, g, h)
    logits = jnp.einsum(
        "btkgh,bskh->bkgts", grouped, key, preferred_element_type=logits_dtype
    ).reshape(b, n, t, s)
    scale = 1.0 / np.sqrt(h) if scale is None else scale
    logits = logits * jnp.asarray(scale).astype(logits_dtype)
    shape = (b, n, t, s)
    if bias is not None:
        logits = logits + _broadcast_operand(bias, shape, "bias").astype(logits_dtype)
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(
                f"{_NAME} needs a boolean mask (True = attend); got dtype {mask.dtype}. Pass "
                "mask.astype(bool), or pass an additive mask as bias="
            )
        mask = _broadcast_operand(mask, shape, "mask")
        # A large finite negative (not -inf) keeps fully masked rows finite: they become a
        # uniform average, as in jax.nn.dot_product_attention.
        big_negative = -0.7 * float(jnp.finfo(jnp.float32).max)
        logits = jnp.where(mask, logits, jnp.asarray(big_negative, logits_dtype))
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def dot_product_attention(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    bias: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    *,
    dropout_key: jax.Array | None = None,
    dropout_rate: ArrayLike = 0.0,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool = False,
    scale: float | None = None,
) -> jax.Array:
    r"""Scaled dot-product attention with inverted dropout on the softmax weights.

    For each head, with :math:`d` the head dimension and :math:`s` the scale
    (:math:`1/\sqrt{d}` by default):

    .. math::

        A = \mathrm{softmax}\!\left(s\, Q K^\top + B\right), \qquad
        \mathrm{out} = \frac{A \odot M}{1 - \text{rate}}\, V, \qquad
        \mathbb{E}_M[\mathrm{out}] = A V

    where masked-out logits (``mask`` False) are replaced by a large negative number
    before the softmax and :math:`M` is the keep-mask

    ``M = dropjax.keep_mask(dropout_key, weights_shape, dropout_rate,
    broadcast_dims=broadcast_dims)``

    with ``weights_shape = (batch, heads, q_len, kv_len)`` for batched inputs and
    ``(heads, q_len, kv_len)`` for unbatched ones: ``broadcast_dims`` index *that* array
    (not the inputs), so negative axes mean the same thing in both layouts: ``-1`` shares
    one mask entry over all keys (a query is kept or dropped whole), ``-3`` shares one
    mask over all heads, and ``(0, 1)`` on batched inputs shares one ``[q_len, kv_len]``
    mask over the batch and heads (Flax's ``broadcast_dropout=True``). The dropout goes
    through :func:`dropjax.dropout`, whose VJP regenerates the mask from the key.

    ``dropout_rate`` is the probability of *dropping* a weight (not the keep rate!); it may
    be traced. With ``dropout_rate=0`` or ``deterministic=True`` no key is needed and the
    result matches :func:`jax.nn.dot_product_attention` (same layout, same large-negative
    masking, so a fully masked query row averages all values uniformly). The logits are
    computed in at least float32, the softmax and the dropout in float32, and the weights are
    cast to ``value.dtype`` before the product with ``value``; the output has
    ``query.dtype`` (bf16 in, bf16 out).

    Args:
      query: ``[batch, q_len, heads, head_dim]`` or ``[q_len, heads, head_dim]``.
      key: attention keys (not a PRNG key; that is ``dropout_key``),
        ``[batch, kv_len, kv_heads, head_dim]`` or unbatched; ``heads`` must be a multiple of
        ``kv_heads`` (grouped-query attention; query head ``i`` reads key/value head
        ``i // (heads // kv_heads)``).
      value: same shape and dtype as ``key``.
      bias: optional additive bias broadcastable to ``[batch, heads, q_len, kv_len]``.
      mask: optional boolean mask broadcastable to the same shape; True = attend.
      dropout_key: PRNG key for the weight dropout, e.g. ``jax.random.key(0)``.
      dropout_rate: drop probability of each attention weight, in ``[0, 1]``.
      broadcast_dims: axes of the weights array ``[batch, heads, q_len, kv_len]`` (or
        ``[heads, q_len, kv_len]`` unbatched) along which one mask entry is shared.
      deterministic: if True, no dropout (evaluation mode).
      scale: logit scale; ``1 / sqrt(head_dim)`` when None.

    Returns:
      The attention output, same shape and dtype as ``query``.

    Raises:
      ValueError: incompatible shapes; a concrete ``dropout_rate`` outside ``[0, 1]``; an
        axis of ``broadcast_dims`` out of range; no ``dropout_key`` while dropping.
      TypeError: non-floating or mixed-dtype inputs; a non-boolean ``mask``; a raw integer
        key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> q = k = v = jnp.ones((2, 5, 4, 8))
      >>> out = dropjax.dot_product_attention(
      ...     q, k, v, dropout_key=jax.random.key(0), dropout_rate=0.1)
      >>> out.shape, out.dtype
      ((2, 5, 4, 8), dtype('float32'))
      >>> ref = jax.nn.dot_product_attention(q, k, v)
      >>> bool(jnp.allclose(dropjax.dot_product_attention(q, k, v), ref))
      True
    """
    query = _floating(query, "query")
    key = _floating(key, "key")
    value = _floating(value, "value")
    _check_layout(query, key, value)
    rate = _m.check_rate(dropout_rate, "dropout_rate")
    unbatched = query.ndim == 3
    t, n = query.shape[-3], query.shape[-2]
    s = key.shape[-3]
    weights_shape = (n, t, s) if unbatched else (query.shape[0], n, t, s)
    bdims = _m.normalize_axes(broadcast_dims, len(weights_shape))
    drop = not deterministic and _m.concrete_value(rate) != 0.0
    if drop:
        if dropout_key is None:
            raise ValueError(
                f"{_NAME} needs a PRNG key when dropout_rate > 0 and deterministic=False; "
                "pass dropout_key=jax.random.key(0) (the argument named key is the "
                "attention keys tensor)"
            )
        dropout_key = _m.check_key(dropout_key, _NAME)
    bias = None if bias is None else jnp.asarray(bias)
    mask = None if mask is None else jnp.asarray(mask)
    return _attention(
        query,
        key,
        value,
        bias,
        mask,
        dropout_key if drop else None,
        rate if drop else None,
        scale,
        bdims=bdims,
        unbatched=unbatched,
        drop=drop,
        impl=_m.get_mask_impl(),
    )


@functools.partial(jax.jit, static_argnames=("bdims", "unbatched", "drop", "impl"))
def _attention(
    query, key, value, bias, mask, dropout_key, rate, scale, *, bdims, unbatched, drop, impl
):
    """The checked computation, jitted so that eager calls compile once per shape.

    ``impl`` (the mask sampler in effect at the call) is static so that the jit cache never
    serves a trace made under another :func:`dropjax.mask_impl`.
    """
    with _m.mask_impl(impl):
        return _attention_body(
            query, key, value, bias, mask, dropout_key, rate, scale, bdims, unbatched, drop
        )


def _attention_body(
    query, key, value, bias, mask, dropout_key, rate, scale, bdims, unbatched, drop
):
    if unbatched:
        query, key, value = query[None], key[None], value[None]
    b, t, n, _ = query.shape
    k, s = key.shape[2], key.shape[1]
    weights = _attention_weights(query, key, bias, mask, scale)
    if drop:
        if unbatched:
            weights = dropout(dropout_key, weights[0], rate, broadcast_dims=bdims)[None]
        else:
            weights = dropout(dropout_key, weights, rate, broadcast_dims=bdims)
    weights = weights.astype(value.dtype).reshape(b, k, n // k, t, s)
    out = jnp.einsum("bkgts,bskh->btkgh", weights, value).reshape(query.shape)
    out = out.astype(query.dtype)
    return out[0] if unbatched else out
