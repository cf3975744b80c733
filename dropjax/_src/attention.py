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

Three implementations compute the same function (same mask for the same key):

* ``"xla"`` materialises the ``[batch, heads, q_len, kv_len]`` weights (the reference);
* ``"blockwise"`` (:mod:`dropjax._src.flash_attention`) is FlashAttention-2's tiled
  online softmax in plain JAX, regenerating each tile's dropout mask from the key in both
  passes, so no ``q_len x kv_len`` array exists;
* ``"pallas"`` (:mod:`dropjax._src.attention_pallas`) runs the same algorithm as fused
  Pallas kernels, computing the keep bit inside the kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src import checks as _c
from dropjax._src import masks as _m
from dropjax._src.flash_attention import BIG_NEGATIVE, blockwise_attention

__all__ = ["dot_product_attention"]

_NAME = "dot_product_attention"
IMPLEMENTATIONS = ("xla", "blockwise", "pallas")
# implementation=None on CPU: blockwise from this many weights per head (q_len * kv_len)
# up. benchmarks/attention.py measured blockwise faster than the materialised path from
# 128 x 128 up (fwd+bwd with dropout); below it both take well under a millisecond and the
# materialised path keeps forward-mode autodiff.
CPU_BLOCKWISE_MIN_WEIGHTS = 128 * 128
DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_KV = 256

_LAYOUT_HINT = (
    " Inputs are read as [batch, seq, heads, head_dim]; if yours are [batch, heads, seq, "
    "head_dim], transpose them first, e.g. jnp.swapaxes(x, -3, -2)"
)


def reject_prng_key(x, label: str) -> None:
    """A PRNG key where an attention tensor goes: name ``dropout_key=``."""
    typed = hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    raw = hasattr(x, "dtype") and x.dtype == jnp.uint32 and tuple(x.shape)[-1:] == (2,)
    if typed or raw:
        raise TypeError(
            f"{_NAME} got a PRNG key as its {label!r} argument; {label!r} is an attention "
            "tensor ([batch, seq, heads, head_dim]). Pass the PRNG key by name, "
            "dropout_key=jax.random.key(0), e.g. dot_product_attention(q, k, v, "
            "dropout_key=rng, dropout_rate=0.1)"
        )


def _floating(x, label: str) -> jax.Array:
    reject_prng_key(x, label)
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
            f"heads ({num_kv_heads}) (grouped-query attention).{_LAYOUT_HINT}"
        )


def _operand(t, shape: tuple[int, ...], label: str) -> jax.Array:
    """Checks that ``t`` broadcasts to ``shape`` and returns it with ``len(shape)`` axes.

    Nothing is broadcast: size-1 axes stay size 1, so a ``[1, 1, T, S]`` bias is never
    copied per batch and head.
    """
    t = jnp.asarray(t)
    names = "[batch, heads, q_len, kv_len]" if len(shape) == 4 else "[heads, q_len, kv_len]"
    if t.ndim > len(shape):
        raise ValueError(
            f"{_NAME} needs {label} with at most {len(shape)} dimensions, broadcastable to "
            f"{names}; got shape {t.shape}"
        )
    try:
        np.broadcast_shapes(t.shape, shape)
    except ValueError:
        raise ValueError(
            f"{_NAME} needs {label} broadcastable to the attention weights' shape {shape} "
            f"({names}); got shape {t.shape}.{_LAYOUT_HINT}"
        ) from None
    return t.reshape((1,) * (len(shape) - t.ndim) + t.shape)


def _attention_weights(query, key, bias, mask, scale, is_causal) -> jax.Array:
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
    logits = logits * jnp.asarray(scale).astype(logits_dtype)
    if bias is not None:
        logits = logits + bias.astype(logits_dtype)
    if is_causal:
        causal = jnp.tril(jnp.ones((t, s), bool))
        mask = causal if mask is None else mask & causal
    if mask is not None:
        # A large finite negative (not -inf) keeps fully masked rows finite: they become a
        # uniform average, as in jax.nn.dot_product_attention.
        logits = jnp.where(mask, logits, jnp.asarray(BIG_NEGATIVE, logits_dtype))
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _drop_weights(dropout_key, weights, rate, bdims):
    """Inverse dropout of the weights; the mask is recomputed, not saved, for the VJP.

    Plain differentiable JAX (so forward mode works) under ``jax.checkpoint`` with nothing
    saveable: reverse mode keeps only the key and the weights (which the softmax keeps
    anyway) and redraws the mask in the backward pass, as :func:`dropjax.dropout` does.
    """

    def apply(w, dropout_key, rate):
        keep = _m.draw_keep(dropout_key, _m.mask_shape(w.shape, bdims), rate)
        return _m.apply_mask(w, keep, _m.inverse_keep_prob(rate))

    policy = jax.checkpoint_policies.nothing_saveable
    return jax.checkpoint(apply, policy=policy)(weights, dropout_key, rate)


@functools.partial(jax.jit, static_argnames=("bdims", "unbatched", "drop", "causal", "impl"))
def _attention_xla(
    query, key, value, bias, mask, dropout_key, rate, scale, *, bdims, unbatched, drop, causal, impl
):
    """The materialised path, jitted so that eager calls compile once per shape.

    ``impl`` (the mask sampler in effect at the call) is static so that the jit cache never
    serves a trace made under another :func:`dropjax.mask_impl`.
    """
    with _m.mask_impl(impl):
        b, t, n, _ = query.shape
        k, s = key.shape[2], key.shape[1]
        weights = _attention_weights(query, key, bias, mask, scale, causal)
        if drop:
            if unbatched:
                weights = _drop_weights(dropout_key, weights[0], rate, bdims)[None]
            else:
                weights = _drop_weights(dropout_key, weights, rate, bdims)
        weights = weights.astype(value.dtype).reshape(b, k, n // k, t, s)
        out = jnp.einsum("bkgts,bskh->btkgh", weights, value).reshape(query.shape)
        return out.astype(query.dtype)


@functools.partial(
    jax.jit,
    static_argnames=(
        "scale",
        "causal",
        "weights_shape",
        "bdims",
        "drop",
        "block_q",
        "block_kv",
        "kernel",
    ),
)
def _attention_tiled(
    query,
    key,
    value,
    bias,
    mask,
    dropout_key,
    rate,
    *,
    scale,
    causal,
    weights_shape,
    bdims,
    drop,
    block_q,
    block_kv,
    kernel,
):
    words = _m.key_words(dropout_key) if drop else None
    rate = jnp.asarray(rate).astype(jnp.float32) if drop else None
    if kernel == "blockwise":
        fn = blockwise_attention
    else:
        from dropjax._src.attention_pallas import pallas_attention

        fn = functools.partial(pallas_attention, interpret=jax.default_backend() == "cpu")
    return fn(
        query,
        key,
        value,
        bias,
        mask,
        words,
        rate,
        scale=scale,
        causal=causal,
        weights_shape=weights_shape,
        bdims=bdims,
        drop=drop,
        block_q=block_q,
        block_kv=block_kv,
    )


def _choose(implementation, t: int, s: int, drop: bool) -> str:
    """The implementation to run (see :func:`dot_product_attention`, ``implementation``)."""
    hashable = _m.get_mask_impl() == "hash"
    backend = jax.default_backend()
    if implementation is None:
        if drop and not hashable:
            return "xla"
        if backend == "cpu" and t * s < CPU_BLOCKWISE_MIN_WEIGHTS:
            return "xla"
        return "blockwise"
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"{_NAME} got implementation={implementation!r}; use one of None, "
            + ", ".join(repr(i) for i in IMPLEMENTATIONS)
        )
    if implementation != "xla" and drop and not hashable:
        raise ValueError(
            f"{_NAME}(implementation={implementation!r}) regenerates the dropout mask tile by "
            "tile, which needs the default 'hash' sampler; under dropjax.mask_impl('bits') use "
            "implementation='xla' (or implementation=None, which picks it)"
        )
    if implementation == "pallas" and backend not in ("cpu", "gpu", "tpu"):
        raise ValueError(
            f"{_NAME}(implementation='pallas') is not available on backend {backend!r}; use "
            "implementation='blockwise'"
        )
    return implementation


def _block(value, default: int, label: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{_NAME} needs {label} to be a positive int; got {value!r}")
    return int(value)


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
    is_causal: bool = False,
    implementation: str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
) -> jax.Array:
    r"""Scaled dot-product attention with inverted dropout on the softmax weights.

    For each head, with :math:`d` the head dimension and :math:`s` the scale
    (:math:`1/\sqrt{d}` by default):

    .. math::

        A = \mathrm{softmax}\!\left(s\, Q K^\top + B\right), \qquad
        \mathrm{out} = \frac{A \odot M}{1 - \text{rate}}\, V, \qquad
        \mathbb{E}_M[\mathrm{out}] = A V

    where masked-out logits (``mask`` False, or a key after its query when
    ``is_causal``) are replaced by a large negative number before the softmax and
    :math:`M` is the keep-mask

    ``M = dropjax.keep_mask(dropout_key, weights_shape, dropout_rate,
    broadcast_dims=broadcast_dims)``

    with ``weights_shape = (batch, heads, q_len, kv_len)`` for batched inputs and
    ``(heads, q_len, kv_len)`` for unbatched ones: ``broadcast_dims`` index *that* array
    (not the inputs), so negative axes mean the same thing in both layouts: ``-1`` shares
    one mask entry over all keys (a query is kept or dropped whole), ``-3`` shares one
    mask over all heads, and ``(0, 1)`` on batched inputs shares one ``[q_len, kv_len]``
    mask over the batch and heads (Flax's ``broadcast_dropout=True``). That contract holds
    for every ``implementation``, so they agree up to float rounding for the same key.

    ``implementation`` chooses how the weights are computed:

    * ``"xla"``: the whole ``[batch, heads, q_len, kv_len]`` weight array is built, dropped
      and kept for the backward pass (memory grows as ``q_len * kv_len``); the mask itself
      is redrawn in the backward pass, not stored. Supports forward-mode autodiff
      (``jax.jvp``, ``jax.jacfwd``) and either mask sampler.
    * ``"blockwise"``: FlashAttention-2's online softmax over ``block_q x block_kv`` tiles
      in plain JAX (any backend), with a ``jax.custom_vjp`` that saves the inputs, the
      output and one log-sum-exp per query row; both passes recompute each tile's weights
      and regenerate its dropout mask from the key, so no ``q_len x kv_len`` array exists.
      Reverse mode only: forward mode raises and names ``implementation="xla"``.
    * ``"pallas"``: the same algorithm as fused ``jax.experimental.pallas`` kernels
      (forward, and backward for ``dq`` and ``dk, dv``), the keep bit computed inside the
      kernel from the key and the element's global index. On CPU the kernels run in
      Pallas' interpreter (slow; for testing). Reverse mode only.
    * ``None``: on CPU, ``"blockwise"`` when ``q_len * kv_len >= 128 * 128`` (where it
      measured faster than ``"xla"``, see ``benchmarks/attention.py``) and ``"xla"``
      below; elsewhere (GPU, TPU) ``"blockwise"``: the Pallas kernels have so far run only
      in the interpreter (no GPU or TPU was available to check them against Triton's and
      Mosaic's tiling rules), so they are opt-in until measured there. Under
      ``dropjax.mask_impl("bits")`` with dropout it picks ``"xla"``: ``jax.random.bits``
      cannot be evaluated one tile at a time, so the tiled implementations refuse that
      sampler.

    ``dropout_rate`` is the probability of *dropping* a weight (not the keep rate!); it may
    be traced (its gradient is the pathwise derivative, the mask held fixed). A concrete
    rate outside ``[0, 1]`` raises; a traced one outside ``[0, 1]`` (or NaN) gives an
    all-NaN output from every implementation, as :func:`dropjax.dropout` does. With
    ``dropout_rate=0`` or ``deterministic=True`` no key is needed and the result matches
    :func:`jax.nn.dot_product_attention` (same layout, same large-negative masking, so a
    fully masked query row averages all values uniformly). Logits, softmax and dropout are
    computed in float32; the weights are cast to ``value.dtype`` before the product with
    ``value`` (accumulated in float32 by the tiled paths); the output has ``query.dtype``
    (bf16 in, bf16 out).

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
      scale: logit scale; ``1 / sqrt(head_dim)`` when None. A Python number for the
        tiled implementations.
      is_causal: if True, query ``t`` attends only to keys ``s <= t`` (combined with
        ``mask``), as in :func:`jax.nn.dot_product_attention`.
      implementation: ``None``, ``"xla"``, ``"blockwise"`` or ``"pallas"`` (see above).
      block_q: query tile length of the tiled implementations (default 256, capped at
        ``q_len``); need not divide ``q_len``.
      block_kv: key/value tile length (default 256, capped at ``kv_len``).

    Returns:
      The attention output, same shape and dtype as ``query``.

    Raises:
      ValueError: incompatible shapes; a concrete ``dropout_rate`` outside ``[0, 1]``; an
        axis of ``broadcast_dims`` out of range; no ``dropout_key`` while dropping; an
        unknown or unavailable ``implementation``; a tiled implementation under the
        ``"bits"`` sampler.
      TypeError: non-floating or mixed-dtype inputs; a PRNG key passed as an attention
        tensor; a non-boolean ``mask``; a raw integer key; forward-mode autodiff through a
        tiled implementation.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> q = k = v = jnp.ones((2, 5, 4, 8))
      >>> out = dropjax.dot_product_attention(
      ...     q, k, v, dropout_key=jax.random.key(0), dropout_rate=0.1)
      >>> out.shape, out.dtype
      ((2, 5, 4, 8), dtype('float32'))
      >>> tiled = dropjax.dot_product_attention(
      ...     q, k, v, dropout_key=jax.random.key(0), dropout_rate=0.1,
      ...     implementation="blockwise", block_q=2, block_kv=2)
      >>> bool(jnp.allclose(out, tiled, atol=1e-6))
      True
      >>> ref = jax.nn.dot_product_attention(q, k, v)
      >>> bool(jnp.allclose(dropjax.dot_product_attention(q, k, v), ref))
      True
    """
    query = _floating(query, "query")
    key = _floating(key, "key")
    value = _floating(value, "value")
    _check_layout(query, key, value)
    rate = _c.check_rate(dropout_rate, "dropout_rate")
    unbatched = query.ndim == 3
    t, n = query.shape[-3], query.shape[-2]
    s = key.shape[-3]
    weights_shape = (n, t, s) if unbatched else (query.shape[0], n, t, s)
    bdims = _c.normalize_axes(broadcast_dims, len(weights_shape))
    drop = not deterministic and _c.concrete_value(rate) != 0.0
    if drop:
        if dropout_key is None:
            raise ValueError(
                f"{_NAME} needs a PRNG key when dropout_rate > 0 and deterministic=False; "
                "pass dropout_key=jax.random.key(0) (the argument named key is the "
                "attention keys tensor)"
            )
        dropout_key = _c.check_key(dropout_key, _NAME)
    if bias is not None:
        bias = _operand(bias, weights_shape, "bias")
    if mask is not None:
        mask = _operand(mask, weights_shape, "mask")
        if mask.dtype != jnp.bool_:
            raise TypeError(
                f"{_NAME} needs a boolean mask (True = attend); got dtype {mask.dtype}. Pass "
                "mask.astype(bool), or pass an additive mask as bias="
            )
    impl = _choose(implementation, t, s, drop)
    block_q = _block(block_q, DEFAULT_BLOCK_Q, "block_q")
    block_kv = _block(block_kv, DEFAULT_BLOCK_KV, "block_kv")
    if unbatched:
        query, key, value = query[None], key[None], value[None]
        bias = None if bias is None else bias[None]
        mask = None if mask is None else mask[None]
    scale = 1.0 / np.sqrt(query.shape[-1]) if scale is None else scale
    if impl == "xla":
        out = _attention_xla(
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
            causal=bool(is_causal),
            impl=_m.get_mask_impl(),
        )
    else:
        if not _c.is_concrete(scale):
            raise TypeError(
                f"{_NAME}(implementation={impl!r}) needs a Python number as scale; got a "
                "traced value. Use implementation='xla' for a traced scale"
            )
        try:
            out = _attention_tiled(
                query,
                key,
                value,
                bias,
                mask,
                dropout_key if drop else None,
                rate if drop else None,
                scale=float(scale),
                causal=bool(is_causal),
                weights_shape=weights_shape,
                bdims=bdims,
                drop=drop,
                block_q=block_q,
                block_kv=block_kv,
                kernel=impl,
            )
        except TypeError as err:
            if "forward-mode" not in str(err):
                raise
            raise TypeError(
                f"{_NAME}(implementation={impl!r}) supports reverse-mode autodiff only (its "
                "custom VJP recomputes the tiles); for jax.jvp, jax.jacfwd or jax.hessian pass "
                "implementation='xla'"
            ) from err
        if drop and not _c.is_concrete(rate):
            # The tiles zero the dropped weights (an invalid rate keeps nothing), which would
            # give zeros; the "xla" path's NaN scale gives NaN. One rule: NaN everywhere.
            out = out * _c.rate_guard(rate).astype(out.dtype)
    return out[0] if unbatched else out
