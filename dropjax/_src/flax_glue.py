"""Flax glue: the ``attention_fn`` that Flax's attention modules call, shared by both APIs.

``flax.linen.MultiHeadDotProductAttention`` and ``flax.nnx.MultiHeadAttention`` call their
``attention_fn`` with the same arguments, so :func:`attention_fn` serves both:
``dropjax.linen.attention_fn is dropjax.nnx.attention_fn``. Only the Flax adapters import
this module; it holds Flax's calling convention, no maths (that is
:func:`dropjax.dot_product_attention`'s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropjax._src.attention import attention_and_weights, reject_prng_key

__all__ = ["attention_fn"]


def _flat_operand(x: ArrayLike | None, batch_shape: tuple[int, ...], name: str) -> jax.Array | None:
    """A ``[batch..., heads, q_len, kv_len]``-broadcastable operand as 4-D, batch flattened."""
    if x is None:
        return None
    x = jnp.asarray(x)
    full = len(batch_shape) + 3
    if x.ndim > full:
        raise ValueError(
            f"attention_fn needs {name} with at most {full} dimensions "
            f"([batch..., heads, q_len, kv_len]); got shape {x.shape}"
        )
    x = x.reshape((1,) * (full - x.ndim) + x.shape)
    lead = x.shape[: len(batch_shape)]
    if all(d == 1 for d in lead):
        return x.reshape((1, *x.shape[len(batch_shape) :]))
    x = jnp.broadcast_to(x, batch_shape + x.shape[len(batch_shape) :])
    return x.reshape((-1, *x.shape[len(batch_shape) :]))


def _flat_inputs(query, key, value, bias, mask, dtype, promote_dtype=None):
    """Flax's ``[batch..., length, heads, head_dim]`` inputs with one (flattened) batch axis.

    Returns ``(query, key, value, bias, mask, batch_shape)``: cast to ``dtype`` (default:
    their common type), ``mask`` as booleans (Flax's convention: nonzero = attend, any
    dtype), and the batch axes flattened into one unless there are none.
    """
    reject_prng_key(key, "key")
    query, key, value = (jnp.asarray(x) for x in (query, key, value))
    if promote_dtype is not None:  # flax.nnx's hook: (arrays, dtype=...) -> arrays
        query, key, value = promote_dtype((query, key, value), dtype=dtype)
    else:
        if dtype is None:
            dtype = jnp.result_type(query, key, value)
        query, key, value = (x.astype(dtype) for x in (query, key, value))
    if query.ndim < 3:
        raise ValueError(
            "attention_fn expects inputs of shape [batch..., length, heads, head_dim]; got "
            f"query of shape {query.shape}"
        )
    batch_shape = query.shape[:-3]
    if key.shape[:-3] != batch_shape or value.shape[:-3] != batch_shape:
        raise ValueError(
            f"attention_fn needs query, key and value with the same batch axes; got shapes "
            f"{query.shape}, {key.shape}, {value.shape}"
        )
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            mask = mask != 0  # Flax's convention: nonzero = attend, any dtype
    unbatched = not batch_shape
    if not unbatched:
        query, key, value = (x.reshape((-1, *x.shape[-3:])) for x in (query, key, value))
        bias = _flat_operand(bias, batch_shape, "bias")
        mask = _flat_operand(mask, batch_shape, "mask")
    return query, key, value, bias, mask, batch_shape


def attention_fn(
    query: jax.typing.ArrayLike,
    key: jax.typing.ArrayLike,
    value: jax.typing.ArrayLike,
    bias: jax.typing.ArrayLike | None = None,
    mask: jax.typing.ArrayLike | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: jax.typing.ArrayLike = 0.0,
    deterministic: bool = False,
    dtype: jax.typing.DTypeLike | None = None,
    precision: jax.lax.PrecisionLike = None,
    module: Any | None = None,
    force_fp32_for_softmax: bool = False,
    einsum_dot_general: Callable[..., jax.Array] | None = None,
    qk_attn_weights_einsum: Callable[..., jax.Array] | None = None,
    attn_weights_value_einsum: Callable[..., jax.Array] | None = None,
    promote_dtype: Callable[..., Any] | None = None,
    *,
    is_causal: bool = False,
    local_window_size: int | tuple[int, int] | None = None,
    implementation: str | None = None,
    block_q: int | None = None,
    block_kv: int | None = None,
) -> jax.Array:
    """Drop-in ``attention_fn`` for Flax's attention modules, in linen and in nnx.

    For ``flax.linen.MultiHeadDotProductAttention`` and ``flax.nnx.MultiHeadAttention``.
    Same call signature as ``flax.linen.dot_product_attention`` (the dropout rng, rate,
    ``broadcast_dropout`` and ``deterministic`` the modules pass), computed by
    :func:`dropjax.dot_product_attention`: with ``implementation=None`` long sequences use
    the blockwise path, whose dropout masks are regenerated in the backward pass instead of
    stored, so attention memory no longer grows as ``q_len * kv_len``. With
    ``deterministic=True`` (or rate 0) it equals Flax's own attention up to float rounding;
    with dropout the masks follow :func:`dropjax.keep_mask` (``broadcast_dropout`` shares
    one over the batch axes and heads), not ``jax.random.bernoulli``.

    Inputs are ``[batch..., length, heads, head_dim]`` (any number of batch axes, or none),
    ``mask``/``bias`` broadcastable to ``[batch..., heads, q_len, kv_len]``. ``mask`` is
    read as Flax reads it, nonzero = attend, in any dtype: the float32 masks of
    ``make_causal_mask``, ``make_attention_mask``, ``combine_masks`` (linen's and nnx's)
    and of KV-cache decoding (``decode=True``) work as with Flax's own attention.
    ``dtype`` casts the inputs (or nnx's ``promote_dtype`` hook, when given, promotes
    them); ``precision`` goes to every matrix product, as in Flax.

    Flax's other arguments:

    * ``module`` (passed when the attention module is called with ``sow_weights=True``):
      the softmax weights before dropout are sown as Flax sows them, into
      ``"intermediates"`` / ``"attention_weights"`` (linen) or as an ``nnx.Intermediate``
      (nnx), with shape ``[batch..., heads, q_len, kv_len]``. Only the materialised
      ``"xla"`` path forms them, so sowing is the opt-in: with ``implementation=None`` a
      module selects ``"xla"`` (memory grows as ``q_len * kv_len`` again), and a tiled
      implementation raises.
    * ``force_fp32_for_softmax``: dropjax computes the softmax in float32 for every input
      dtype, which is what ``True`` asks for; with ``False`` and bf16/f16 inputs Flax
      takes the softmax in the input dtype, so the two differ by that rounding. It also
      sets the dtype of sown weights (float32, else the inputs' dtype), as in Flax.
    * ``qk_attn_weights_einsum``, ``attn_weights_value_einsum``, ``einsum_dot_general``
      (custom products, e.g. quantised ones): refused with a ``ValueError``, since the
      tiled implementations compute their products tile by tile and cannot call them;
      use Flax's own ``attention_fn`` for custom products.
    * Complex inputs are refused with a ``TypeError`` (see
      :func:`dropjax.dot_product_attention`).

    Pick an implementation (or a local window) with
    ``functools.partial(attention_fn, implementation="blockwise")``.

    ``dropjax.linen.attention_fn`` and ``dropjax.nnx.attention_fn`` are this one function.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, dropjax.linen
      >>> layer = nn.MultiHeadDotProductAttention(
      ...     num_heads=2, qkv_features=8, dropout_rate=0.1,
      ...     attention_fn=dropjax.linen.attention_fn)
      >>> x = jnp.ones((1, 5, 8))
      >>> params = layer.init(jax.random.key(0), x, deterministic=True)
      >>> layer.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
      (1, 5, 8)
      >>> from flax import nnx
      >>> import dropjax.nnx
      >>> layer = nnx.MultiHeadAttention(
      ...     num_heads=2, in_features=8, dropout_rate=0.1, decode=False,
      ...     attention_fn=dropjax.nnx.attention_fn, rngs=nnx.Rngs(0))
      >>> layer(x, deterministic=False, rngs=nnx.Rngs(dropout=1)).shape
      (1, 5, 8)
    """
    custom = {
        "qk_attn_weights_einsum": qk_attn_weights_einsum,
        "attn_weights_value_einsum": attn_weights_value_einsum,
        "einsum_dot_general": einsum_dot_general,
    }
    given = sorted(name for name, fn in custom.items() if fn is not None)
    if given:
        raise ValueError(
            f"dropjax attention_fn cannot use custom products ({', '.join(given)}): its tiled "
            "implementations compute the products tile by tile with the dropout mask. Leave "
            "them unset (e.g. no qk_attn_weights_einsum_cls on the module), or use Flax's own "
            "attention_fn for custom products"
        )
    query, key, value, bias, mask, batch_shape = _flat_inputs(
        query, key, value, bias, mask, dtype, promote_dtype
    )
    unbatched = not batch_shape
    dims: tuple[int, ...]
    if broadcast_dropout:
        dims = (0,) if unbatched else (0, 1)
    else:
        dims = ()
    out, weights = attention_and_weights(
        query,
        key,
        value,
        bias,
        mask,
        dropout_key=dropout_rng,
        dropout_rate=dropout_rate,
        broadcast_dims=dims,
        deterministic=deterministic,
        is_causal=is_causal,
        local_window_size=local_window_size,
        precision=precision,
        implementation=implementation,
        block_q=block_q,
        block_kv=block_kv,
        return_weights=module is not None,
    )
    if module is not None:
        assert weights is not None
        # Sown in the inputs' dtype, as Flax does (float32 with force_fp32_for_softmax).
        weights = weights if force_fp32_for_softmax else weights.astype(out.dtype)
        _sow_weights(module, weights.reshape(batch_shape + weights.shape[-3:]))
    return out.reshape(batch_shape + out.shape[-3:])


def _sow_weights(module: Any, weights: jax.Array) -> None:
    """Sows the attention weights where Flax's own attention sows them."""
    from flax import nnx

    if isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    else:
        module.sow("intermediates", "attention_weights", weights)
