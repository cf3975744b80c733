"""Issue 25, item 1: the Flax attention adapters take every mask Flax builds.

Flax's masks are float32 (``make_causal_mask``, ``make_attention_mask``, ``combine_masks``,
and the one ``decode=True`` builds while decoding from a KV cache), read as nonzero =
attend. The reference is Flax's own attention (its default ``attention_fn``) with the same
parameters, deterministic.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropjax
import dropjax.linen as djnn
import dropjax.nnx as djnnx

B, L, F, HEADS = 2, 5, 8, 2
TOL = dict(rtol=1e-5, atol=1e-5)
# "xla" is the default below 128 x 128 weights on CPU; "blockwise" (tiles of 2) crosses
# tile borders and pads the last tile, so the mask reaches the tiled path too.
IMPLS = ["xla", "blockwise"]


def _tokens():
    """Two padded sequences (0 = padding): the second has two padding positions."""
    return jnp.array([[3, 1, 4, 1, 5], [2, 7, 1, 0, 0]], jnp.int32)


def _x(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, L, F), jnp.float32)


def _linen_masks():
    tok = _tokens()
    causal = nn.make_causal_mask(tok)
    padding = nn.make_attention_mask(tok > 0, tok > 0)
    return {
        "make_causal_mask": causal,
        "make_attention_mask": padding,
        "combine_masks": nn.combine_masks(causal, padding),
    }


def _nnx_masks():
    tok = _tokens()
    causal = nnx.make_causal_mask(tok)
    padding = nnx.make_attention_mask(tok > 0, tok > 0)
    return {
        "make_causal_mask": causal,
        "make_attention_mask": padding,
        "combine_masks": nnx.combine_masks(causal, padding),
    }


def _ours(module_fn, impl):
    return functools.partial(module_fn, implementation=impl, block_q=2, block_kv=2)


def test_flax_helpers_build_float_masks_that_mask_something():
    """The premise: these masks are float32 and not all ones (so a test on them can fail)."""
    for masks in (_linen_masks(), _nnx_masks()):
        for name, mask in masks.items():
            assert mask.dtype == jnp.float32, name
            assert 0 < float(mask.sum()) < mask.size, name


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["make_causal_mask", "make_attention_mask", "combine_masks"])
def test_linen_module_with_flax_masks_matches_flax_attention(name, impl):
    mask = _linen_masks()[name]
    x = _x(1)
    kwargs = dict(num_heads=HEADS, qkv_features=F, dropout_rate=0.3)
    theirs = nn.MultiHeadDotProductAttention(**kwargs)
    ours = nn.MultiHeadDotProductAttention(**kwargs, attention_fn=_ours(djnn.attention_fn, impl))
    params = theirs.init(jax.random.key(0), x, deterministic=True)
    expected = theirs.apply(params, x, mask=mask, deterministic=True)
    got = ours.apply(params, x, mask=mask, deterministic=True)
    np.testing.assert_allclose(got, expected, **TOL)
    # The mask matters: without it the output differs.
    assert not np.allclose(theirs.apply(params, x, deterministic=True), expected, **TOL)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", ["make_causal_mask", "make_attention_mask", "combine_masks"])
def test_nnx_module_with_flax_masks_matches_flax_attention(name, impl):
    mask = _nnx_masks()[name]
    x = _x(2)
    kwargs = dict(num_heads=HEADS, in_features=F, dropout_rate=0.3, decode=False)
    theirs = nnx.MultiHeadAttention(**kwargs, rngs=nnx.Rngs(0))
    ours = nnx.MultiHeadAttention(
        **kwargs, attention_fn=_ours(djnnx.attention_fn, impl), rngs=nnx.Rngs(0)
    )
    expected = theirs(x, mask=mask, deterministic=True)
    np.testing.assert_allclose(ours(x, mask=mask, deterministic=True), expected, **TOL)
    assert not np.allclose(theirs(x, deterministic=True), expected, **TOL)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int32, jnp.bool_])
def test_attention_fn_reads_nonzero_as_attend_in_any_dtype(dtype):
    """Direct calls: a mask with values 0 and 2 (nonzero, not 1) in any dtype."""
    keys = jax.random.split(jax.random.key(3), 3)
    q, k, v = (jax.random.normal(kk, (B, L, HEADS, 4), jnp.float32) for kk in keys)
    attend = jax.random.bernoulli(jax.random.key(4), 0.7, (B, 1, L, L))
    mask = jnp.where(attend, 2, 0).astype(dtype)
    expected = nn.dot_product_attention(q, k, v, mask=attend, deterministic=True)
    for fn in (djnn.attention_fn, djnnx.attention_fn):
        np.testing.assert_allclose(fn(q, k, v, mask=mask, deterministic=True), expected, **TOL)


def test_dot_product_attention_itself_still_wants_a_boolean_mask():
    """The convention is the adapters'; the functional op keeps its explicit contract."""
    q = jnp.ones((1, 3, 2, 4))
    with pytest.raises(TypeError, match="boolean mask"):
        dropjax.dot_product_attention(q, q, q, mask=jnp.ones((1, 1, 3, 3), jnp.float32))


def _causal_reference_linen(params, x):
    """Flax's attention over the whole sequence with a causal mask: what decoding computes."""
    theirs = nn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=F)
    return theirs.apply(params, x, mask=nn.make_causal_mask(x[..., 0]), deterministic=True)


@pytest.mark.parametrize("impl", IMPLS)
def test_linen_kv_cache_decoding_matches_flax(impl):
    x = _x(5)
    kwargs = dict(num_heads=HEADS, qkv_features=F, decode=True)
    theirs = nn.MultiHeadDotProductAttention(**kwargs)
    ours = nn.MultiHeadDotProductAttention(**kwargs, attention_fn=_ours(djnn.attention_fn, impl))
    variables = theirs.init(jax.random.key(0), x, deterministic=True)  # sizes the cache
    params = variables["params"]
    caches = {"theirs": variables["cache"], "ours": variables["cache"]}
    outs = {"theirs": [], "ours": []}
    for t in range(L):
        for name, layer in (("theirs", theirs), ("ours", ours)):
            y, state = layer.apply(
                {"params": params, "cache": caches[name]},
                x[:, t : t + 1],
                deterministic=True,
                mutable=["cache"],
            )
            caches[name] = state["cache"]
            outs[name].append(y)
    theirs_seq = jnp.concatenate(outs["theirs"], axis=1)
    ours_seq = jnp.concatenate(outs["ours"], axis=1)
    np.testing.assert_allclose(ours_seq, theirs_seq, **TOL)
    # Both equal full-sequence causal attention (the decode mask was applied, step by step).
    np.testing.assert_allclose(ours_seq, _causal_reference_linen({"params": params}, x), **TOL)


@pytest.mark.parametrize("impl", IMPLS)
def test_nnx_kv_cache_decoding_matches_flax(impl):
    x = _x(6)
    kwargs = dict(num_heads=HEADS, in_features=F, decode=True)
    theirs = nnx.MultiHeadAttention(**kwargs, rngs=nnx.Rngs(0))
    ours = nnx.MultiHeadAttention(
        **kwargs, attention_fn=_ours(djnnx.attention_fn, impl), rngs=nnx.Rngs(0)
    )
    for layer in (theirs, ours):
        layer.init_cache(x.shape, dtype=x.dtype)
    got, expected = [], []
    for t in range(L):
        expected.append(theirs(x[:, t : t + 1], deterministic=True))
        got.append(ours(x[:, t : t + 1], deterministic=True))
    got, expected = jnp.concatenate(got, axis=1), jnp.concatenate(expected, axis=1)
    np.testing.assert_allclose(got, expected, **TOL)
    full = nnx.MultiHeadAttention(num_heads=HEADS, in_features=F, decode=False, rngs=nnx.Rngs(0))
    causal = full(x, mask=nnx.make_causal_mask(x[..., 0]), deterministic=True)
    np.testing.assert_allclose(got, causal, **TOL)
