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
from dropjax._src.flash_attention import (
    BIG_NEGATIVE,
    blockwise_attention,
    make_config,
    position_mask,
)

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


COMPLEX_REASON = (
    "the softmax over the keys needs real logits: a complex logit has no order, so neither "
    "the large-negative masking nor the running maximum of the tiled implementations is "
    "defined for it (Flax's own attention is inconsistent here: linen's takes a complex "
    "softmax, jax.nn.dot_product_attention, which flax.nnx calls without dropout, drops "
    "the imaginary part of the logits)"
)


def _floating(x, label: str) -> jax.Array:
    reject_prng_key(x, label)
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(
            f"{_NAME} does not take complex inputs ({label} has dtype {x.dtype}): "
            f"{COMPLEX_REASON}. Attend over real features instead, e.g. "
            f"jnp.concatenate([{label}.real, {label}.imag], axis=-1) for query and key"
        )
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


def _attention_weights(query, key, bias, mask, lengths, scale, cfg) -> jax.Array:
    """Softmax weights in float32, shape ``[B, N, T, S]``, from 4-D inputs.

    ``cfg`` carries the static causal flag, window and precision (a
    :class:`~dropjax._src.flash_attention.Config`); ``lengths`` is ``(query_seq_lengths,
    key_value_seq_lengths)``, each int32 ``[B]`` or None.
    """
    b, t, n, h = query.shape
    s, k = key.shape[1], key.shape[2]
    g = n // k
    # At least float32 (promote_types would refuse bf16 + f32 under strict promotion).
    logits_dtype = query.dtype if jnp.finfo(query.dtype).bits >= 32 else jnp.dtype(jnp.float32)
    grouped = query.reshape(b, t, k, g, h)
    logits = jnp.einsum(
        "btkgh,bskh->bkgts",
        grouped,
        key,
        preferred_element_type=logits_dtype,
        precision=cfg.precision,
    ).reshape(b, n, t, s)
    logits = logits * jnp.asarray(scale).astype(logits_dtype)
    if bias is not None:
        logits = logits + bias.astype(logits_dtype)
    t_pos = jnp.arange(t, dtype=jnp.int32)[:, None]
    s_pos = jnp.arange(s, dtype=jnp.int32)[None, :]
    q_len, kv_len = (None if x is None else x.reshape(-1, 1, 1, 1) for x in lengths)
    positional = position_mask(t_pos, s_pos, q_len, kv_len, cfg)
    if positional is not None:
        mask = positional if mask is None else mask & positional
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


def _zero_padded_queries(out: jax.Array, q_len: jax.Array | None) -> jax.Array:
    """Zeroes the output rows at or past each batch row's query length (as jax.nn does).

    A product, not a select, so a NaN output (an invalid traced rate) stays NaN.
    """
    if q_len is None:
        return out
    valid = jnp.arange(out.shape[1], dtype=jnp.int32)[None, :] < q_len[:, None]
    return out * valid[:, :, None, None].astype(out.dtype)


@functools.partial(
    jax.jit, static_argnames=("bdims", "unbatched", "drop", "cfg", "impl", "return_weights")
)
def _attention_xla(
    query,
    key,
    value,
    bias,
    mask,
    lengths,
    dropout_key,
    rate,
    scale,
    *,
    bdims,
    unbatched,
    drop,
    cfg,
    impl,
    return_weights=False,
):
    """The materialised path, jitted so that eager calls compile once per shape.

    ``impl`` (the mask sampler in effect at the call) is static so that the jit cache never
    serves a trace made under another :func:`dropjax.mask_impl`. With ``return_weights``
    it also returns the softmax weights before dropout, float32 ``[B, N, T, S]``.
    """
    with _m.mask_impl(impl):
        b, t, n, _ = query.shape
        k, s = key.shape[2], key.shape[1]
        softmax = _attention_weights(query, key, bias, mask, lengths, scale, cfg)
        weights = softmax
        if drop:
            if unbatched:
                weights = _drop_weights(dropout_key, weights[0], rate, bdims)[None]
            else:
                weights = _drop_weights(dropout_key, weights, rate, bdims)
        weights = weights.astype(value.dtype).reshape(b, k, n // k, t, s)
        out = jnp.einsum("bkgts,bskh->btkgh", weights, value, precision=cfg.precision)
        out = _zero_padded_queries(out.reshape(query.shape).astype(query.dtype), lengths[0])
        return (out, softmax) if return_weights else out


@functools.partial(jax.jit, static_argnames=("cfg", "kernel"))
def _attention_tiled(
    query, key, value, bias, mask, lengths, dropout_key, rate, scale, *, cfg, kernel
):
    words = _m.key_words(dropout_key) if cfg.drop else None
    rate = jnp.asarray(rate).astype(jnp.float32) if cfg.drop else None
    scale = jnp.asarray(scale).astype(jnp.float32)
    if kernel == "blockwise":
        fn = blockwise_attention
    else:
        from dropjax._src.attention_pallas import pallas_attention

        fn = functools.partial(pallas_attention, interpret=jax.default_backend() == "cpu")
    out = fn(query, key, value, bias, mask, lengths, words, rate, scale, cfg=cfg)
    return _zero_padded_queries(out, lengths[0])


def _forward_mode_tracer(x: object) -> bool:
    """True when ``x`` carries a forward-mode (``jax.jvp``) tangent at this call.

    Looks through ``vmap`` tracers; stops at a reverse-mode linearisation (``jax.grad``,
    ``jax.vjp``, and the reverse half of ``jax.hessian``), which the tiled custom VJPs
    serve. Tracing done before the transform is applied (``jax.jvp(jax.jit(f))``) cannot
    be seen here.
    """
    if _JVPTracer is None:
        return False
    while isinstance(x, jax.core.Tracer):
        if isinstance(x, _JVPTracer):
            # The linearisation of reverse mode without direct linearize (partial eval).
            return _JaxprTracer is None or not isinstance(x.tangent, _JaxprTracer)
        if _BatchTracer is not None and isinstance(x, _BatchTracer):
            x = x.val
            continue
        return False
    return False


try:  # JAX's tracer types, to tell forward mode from reverse mode at the call.
    from jax._src.interpreters.ad import JVPTracer as _JVPTracer
    from jax._src.interpreters.batching import BatchTracer as _BatchTracer
    from jax._src.interpreters.partial_eval import JaxprTracer as _JaxprTracer
except ImportError:  # pragma: no cover - a JAX without them: no automatic fallback
    _JVPTracer = _BatchTracer = _JaxprTracer = None  # type: ignore[assignment,misc]


def _forward_mode(*operands: object) -> bool:
    return any(_forward_mode_tracer(x) for x in jax.tree_util.tree_leaves(operands))


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
    scale: ArrayLike | None = None,
    is_causal: bool = False,
    query_seq_lengths: ArrayLike | None = None,
    key_value_seq_lengths: ArrayLike | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    precision: jax.lax.PrecisionLike = None,
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

    where masked-out logits are replaced by a large negative number before the softmax and
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

    A logit ``[b, n, t, s]`` is masked out, as in :func:`jax.nn.dot_product_attention`,
    where ``mask`` is False, where ``s > t`` with ``is_causal``, outside the window
    ``t - left <= s <= t + right`` with ``local_window_size=(left, right)`` (an int ``w``
    means ``(w, w)``), and where ``t >= query_seq_lengths[b]`` or ``s >=
    key_value_seq_lengths[b]``; output rows ``t >= query_seq_lengths[b]`` are zero. Every
    implementation takes these arguments; the tiled ones rebuild each tile's positional
    mask from its offsets, so none of them exists as a ``[q_len, kv_len]`` array.

    ``implementation`` chooses how the weights are computed:

    * ``"xla"``: the whole ``[batch, heads, q_len, kv_len]`` weight array is built, dropped
      and kept for the backward pass (memory grows as ``q_len * kv_len``); the mask itself
      is redrawn in the backward pass, not stored. Supports forward-mode autodiff
      (``jax.jvp``, ``jax.jacfwd``) and either mask sampler.
    * ``"blockwise"``: FlashAttention-2's online softmax over ``block_q x block_kv`` tiles
      in plain JAX (any backend), with a ``jax.custom_vjp`` that saves the inputs, the
      output and one log-sum-exp per query row; both passes recompute each tile's weights
      and regenerate its dropout mask from the key, so no ``q_len x kv_len`` array exists.
      Reverse mode, and ``jax.hessian`` (forward over reverse); forward mode on its own
      (``jax.jvp``, ``jax.jacfwd``) raises and names ``implementation="xla"``.
    * ``"pallas"``: the same algorithm as fused ``jax.experimental.pallas`` kernels
      (forward, and backward for ``dq`` and ``dk, dv``), the keep bit computed inside the
      kernel from the key and the element's global index. On CPU the kernels run in
      Pallas' interpreter (slow; for testing). Autodiff as ``"blockwise"``.
    * ``None``: on CPU, ``"blockwise"`` when ``q_len * kv_len >= 128 * 128`` (where it
      measured faster than ``"xla"``, see ``benchmarks/attention.py``) and ``"xla"``
      below; elsewhere (GPU, TPU) ``"blockwise"``: the Pallas kernels have so far run only
      in the interpreter (no GPU or TPU was available to check them against Triton's and
      Mosaic's tiling rules), so they are opt-in until measured there. Under
      ``dropjax.mask_impl("bits")`` with dropout it picks ``"xla"``: ``jax.random.bits``
      cannot be evaluated one tile at a time, so the tiled implementations refuse that
      sampler. Whatever the length, it also picks ``"xla"`` when an input carries a
      forward-mode tangent at the call (``jax.jvp``, ``jax.jacfwd``, also under an outer
      ``jax.jit``), so the transforms that work at short lengths work at every length,
      with the same values and mask; only memory differs. The one case it cannot see is
      ``jax.jvp`` applied *outside* a ``jax.jit`` that contains the call (the call is
      traced before the transform exists); there it raises the same error as
      ``"blockwise"``: pass ``implementation="xla"``.

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
      scale: logit scale, a scalar; ``1 / sqrt(head_dim)`` when None. It may be traced
        (and differentiated) on every implementation.
      is_causal: if True, query ``t`` attends only to keys ``s <= t`` (combined with
        ``mask``), as in :func:`jax.nn.dot_product_attention`.
      query_seq_lengths: optional integer ``[batch]`` (unbatched: ``()`` or ``[1]``)
        lengths of the queries; later query rows attend nowhere and output zero.
      key_value_seq_lengths: optional integer ``[batch]`` lengths of the keys/values; later
        keys are masked out.
      local_window_size: optional ``(left, right)`` non-negative ints (or one int for
        both): query ``t`` attends to keys ``t - left`` to ``t + right``.
      precision: ``jax.lax.PrecisionLike`` of every matrix product (logits and weighted
        values, forward and backward), as Flax's ``precision``.
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
      TypeError: non-floating or mixed-dtype inputs; complex inputs (a softmax needs real
        logits: a complex logit has no order, so neither the large-negative masking nor
        the tiles' running maximum is defined, and Flax's own paths disagree on them);
        a PRNG key passed as an attention tensor; a non-boolean ``mask``; non-integer
        sequence lengths; a raw integer key; forward-mode autodiff through a tiled
        implementation.

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

      The positional masks of :func:`jax.nn.dot_product_attention`, on every
      implementation:

      >>> q = jax.random.normal(jax.random.key(1), (2, 6, 4, 8))
      >>> lengths = jnp.array([6, 3], jnp.int32)
      >>> masks = dict(is_causal=True, local_window_size=(2, 0),
      ...              query_seq_lengths=lengths, key_value_seq_lengths=lengths)
      >>> ref = jax.nn.dot_product_attention(q, q, q, **masks)
      >>> tiled = dropjax.dot_product_attention(
      ...     q, q, q, implementation="blockwise", block_q=4, block_kv=4, **masks)
      >>> bool(jnp.allclose(tiled, ref, atol=1e-6))
      True

      Forward mode at any length (``implementation=None`` picks ``"xla"`` for it):

      >>> long = jnp.ones((1, 128, 1, 4))
      >>> _, tangent = jax.jvp(
      ...     lambda x: dropjax.dot_product_attention(x, long, long), (long,), (long,))
      >>> tangent.shape
      (1, 128, 1, 4)
    """
    out, _ = attention_and_weights(
        query,
        key,
        value,
        bias,
        mask,
        dropout_key=dropout_key,
        dropout_rate=dropout_rate,
        broadcast_dims=broadcast_dims,
        deterministic=deterministic,
        scale=scale,
        is_causal=is_causal,
        query_seq_lengths=query_seq_lengths,
        key_value_seq_lengths=key_value_seq_lengths,
        local_window_size=local_window_size,
        precision=precision,
        implementation=implementation,
        block_q=block_q,
        block_kv=block_kv,
    )
    return out


def _window(local_window_size) -> tuple[int, int] | None:
    """``local_window_size`` as ``(left, right)`` Python ints (or None)."""
    if local_window_size is None:
        return None
    sizes = (
        (local_window_size, local_window_size)
        if isinstance(local_window_size, (int, np.integer))
        else tuple(local_window_size)
        if isinstance(local_window_size, (tuple, list))
        else None
    )
    if (
        sizes is None
        or len(sizes) != 2
        or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in sizes)
        or min(sizes) < 0
    ):
        raise ValueError(
            f"{_NAME} needs local_window_size to be a non-negative int or a pair (left, "
            f"right) of them, e.g. local_window_size=(3, 0); got {local_window_size!r}"
        )
    return int(sizes[0]), int(sizes[1])


def _lengths(x, label: str, batch: int, unbatched: bool) -> jax.Array | None:
    """Lengths as an int32 ``[batch]`` vector (unbatched: shape ``()`` or ``[1]``)."""
    if x is None:
        return None
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(
            f"{_NAME} needs integer {label}; got dtype {x.dtype}. Pass e.g. "
            f"jnp.asarray(lengths, jnp.int32)"
        )
    want = "() or (1,)" if unbatched else f"({batch},)"
    if (unbatched and x.shape not in ((), (1,))) or (not unbatched and x.shape != (batch,)):
        raise ValueError(
            f"{_NAME} needs {label} of shape {want}, one length per batch row; got shape {x.shape}"
        )
    return x.reshape(batch).astype(jnp.int32)


def _precision(precision):
    try:
        hash(precision)
    except TypeError:
        raise TypeError(
            f"{_NAME} needs a hashable precision (None, a jax.lax.Precision, a string such as "
            f"'highest', or a pair of them); got {precision!r}"
        ) from None
    return precision


def attention_and_weights(
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
    scale: ArrayLike | None = None,
    is_causal: bool = False,
    query_seq_lengths: ArrayLike | None = None,
    key_value_seq_lengths: ArrayLike | None = None,
    local_window_size: int | tuple[int, int] | None = None,
    precision: jax.lax.PrecisionLike = None,
    implementation: str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
    return_weights: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """:func:`dot_product_attention`, and with ``return_weights`` its softmax weights.

    The weights (before dropout, float32, the shape of the dropout mask) exist only on the
    ``"xla"`` path: ``return_weights`` picks it for ``implementation=None`` and refuses a
    tiled implementation. (For the Flax adapters, which sow them.)
    """
    query = _floating(query, "query")
    key = _floating(key, "key")
    value = _floating(value, "value")
    _check_layout(query, key, value)
    rate = _c.check_rate(dropout_rate, "dropout_rate")
    unbatched = query.ndim == 3
    t, n = query.shape[-3], query.shape[-2]
    s = key.shape[-3]
    batch = 1 if unbatched else query.shape[0]
    weights_shape = (n, t, s) if unbatched else (batch, n, t, s)
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
    lengths = (
        _lengths(query_seq_lengths, "query_seq_lengths", batch, unbatched),
        _lengths(key_value_seq_lengths, "key_value_seq_lengths", batch, unbatched),
    )
    window = _window(local_window_size)
    precision = _precision(precision)
    if scale is None:
        scale = float(1.0 / np.sqrt(query.shape[-1]))
    elif _c.is_concrete(scale):
        if np.ndim(scale) != 0:
            raise ValueError(f"{_NAME} needs a scalar scale; got shape {np.shape(scale)}")
        scale = float(np.asarray(scale))
    else:
        scale = jnp.asarray(scale)
        if scale.ndim != 0:
            raise ValueError(f"{_NAME} needs a scalar scale; got shape {scale.shape}")
    forward = _forward_mode(query, key, value, bias, rate, scale)
    if return_weights and implementation not in (None, "xla"):
        raise ValueError(
            f"{_NAME}(implementation={implementation!r}) never forms the attention weights, "
            "so it cannot return (or sow) them; use implementation='xla' (or None) to get "
            "them, or stop asking for them (sow_weights=False)"
        )
    impl = _choose(implementation, t, s, drop)
    if implementation is None and (forward or return_weights):
        # Forward-mode autodiff (or the weights) needs the materialised path; it computes
        # the same function with the same mask, so only memory differs.
        impl = "xla"
    if impl != "xla" and forward:
        raise _forward_mode_error(impl)
    block_q = _block(block_q, DEFAULT_BLOCK_Q, "block_q")
    block_kv = _block(block_kv, DEFAULT_BLOCK_KV, "block_kv")
    if unbatched:
        query, key, value = query[None], key[None], value[None]
        bias = None if bias is None else bias[None]
        mask = None if mask is None else mask[None]
    cfg = make_config(
        t=t,
        s=s,
        block_q=block_q,
        block_kv=block_kv,
        causal=bool(is_causal),
        has_mask=mask is not None,
        has_lengths=lengths != (None, None),
        weights_shape=weights_shape,
        bdims=bdims,
        drop=drop,
        window=window,
        precision=precision,
        scale_grad=not _c.is_concrete(scale),
    )
    weights = None
    if impl == "xla":
        out = _attention_xla(
            query,
            key,
            value,
            bias,
            mask,
            lengths,
            dropout_key if drop else None,
            rate if drop else None,
            scale,
            bdims=bdims,
            unbatched=unbatched,
            drop=drop,
            cfg=cfg,
            impl=_m.get_mask_impl(),
            return_weights=return_weights,
        )
        if return_weights:
            out, weights = out
            weights = weights[0] if unbatched else weights
    else:
        try:
            out = _attention_tiled(
                query,
                key,
                value,
                bias,
                mask,
                lengths,
                dropout_key if drop else None,
                rate if drop else None,
                scale,
                cfg=cfg,
                kernel=impl,
            )
        except TypeError as err:
            if "forward-mode" not in str(err):
                raise
            raise _forward_mode_error(impl) from err
        if drop and not _c.is_concrete(rate):
            # The tiles zero the dropped weights (an invalid rate keeps nothing), which would
            # give zeros; the "xla" path's NaN scale gives NaN. One rule: NaN everywhere.
            out = out * _c.rate_guard(rate).astype(out.dtype)
    return (out[0] if unbatched else out), weights


def _forward_mode_error(impl: str) -> TypeError:
    return TypeError(
        f"{_NAME}(implementation={impl!r}) supports reverse-mode autodiff only (its custom "
        "VJP recomputes the tiles); for jax.jvp, jax.jacfwd or jax.linearize pass "
        "implementation='xla', or implementation=None, which picks it when it sees forward "
        "mode at the call (it cannot see a jax.jvp applied outside a jax.jit)"
    )
