"""dot_product_attention: agreement with jax.nn, dropout statistics, edges, transforms, and
semantics against a numpy reference built with explicit masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from tests.reference import keep_ref, sigma_bound

BIG_NEGATIVE = -0.7 * float(np.finfo(np.float32).max)


def normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def bernoulli(shape, p, seed):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def qkv(shape_q, shape_kv, seed=0, dtype=jnp.float32):
    """Numpy-drawn inputs (no per-shape compilation of jax.random in the tests)."""
    rng = np.random.default_rng(seed)
    return tuple(
        jnp.asarray(rng.standard_normal(shape, np.float32)).astype(dtype)
        for shape in (shape_q, shape_kv, shape_kv)
    )


def attention_ref(q, k, v, bias=None, mask=None, keep=None, rate=0.0, scale=None):
    """softmax(s Q K^T + B) * keep / (1 - rate) @ V in float64 numpy, batched layout only."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    n, kv_heads = q.shape[2], k.shape[2]
    k = np.repeat(k, n // kv_heads, axis=2)  # query head i reads kv head i // group
    v = np.repeat(v, n // kv_heads, axis=2)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    if mask is not None:
        logits = np.where(np.asarray(mask), logits, BIG_NEGATIVE)
    logits = logits - logits.max(-1, keepdims=True)
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if keep is not None:
        weights = np.where(np.asarray(keep), weights / (1.0 - rate), 0.0)
    return np.einsum("bnts,bsnh->btnh", weights, v)


def one_hot_values(b, s, n):
    """Inputs whose output rows are the (dropped) attention weights times S.

    Zero queries and keys give uniform weights 1/S; value[b, s, :, :] = e_s makes
    out[b, t, n, :] the weight row, so out * S is keep / (1 - rate).
    """
    q = jnp.zeros((b, 1, n, s))
    k = jnp.zeros((b, s, n, s))
    v = jnp.broadcast_to(jnp.eye(s)[None, :, None, :], (b, s, n, s))
    return q, k, v


# ------------------------------------------------------------------ agreement with jax.nn


@pytest.mark.parametrize(
    "shape_q, shape_kv",
    [
        ((2, 5, 4, 8), (2, 7, 4, 8)),  # multi-head, T != S
        ((2, 5, 4, 8), (2, 7, 2, 8)),  # grouped-query
        ((5, 4, 8), (7, 2, 8)),  # unbatched
    ],
)
def test_matches_jax_at_rate_zero(shape_q, shape_kv):
    q, k, v = qkv(shape_q, shape_kv)
    batched = len(shape_q) == 4
    t, n = shape_q[-3], shape_q[-2]
    s = shape_kv[-3]
    bias = normal((1, n, t, s), 7)
    mask = bernoulli((shape_q[0] if batched else 1, 1, t, s), 0.7, 8)
    mask = mask.at[..., 0, :].set(False)  # a fully masked query row
    ours_bias, ours_mask = (bias, mask) if batched else (bias[0], mask[0])
    expected = jax.nn.dot_product_attention(q, k, v, bias, mask, scale=0.3)
    got = dropjax.dot_product_attention(q, k, v, ours_bias, ours_mask, scale=0.3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # No bias/mask, default scale; deterministic=True ignores the rate and needs no key.
    expected = jax.nn.dot_product_attention(q, k, v)
    np.testing.assert_allclose(
        dropjax.dot_product_attention(q, k, v), expected, rtol=1e-5, atol=1e-6
    )
    got = dropjax.dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=True)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_bfloat16_kept_and_close_to_jax():
    q, k, v = qkv((2, 5, 4, 8), (2, 6, 4, 8), dtype=jnp.bfloat16)
    got = dropjax.dot_product_attention(q, k, v)
    assert got.dtype == jnp.bfloat16
    with jax.numpy_dtype_promotion("standard"):  # jax.nn's bf16 path promotes implicitly
        expected = jax.nn.dot_product_attention(q, k, v)
    np.testing.assert_allclose(
        np.asarray(got, np.float32), np.asarray(expected, np.float32), atol=2e-2
    )
    dropped = dropjax.dot_product_attention(
        q, k, v, dropout_key=jax.random.key(0), dropout_rate=0.3
    )
    assert dropped.dtype == jnp.bfloat16 and bool(jnp.isfinite(dropped.astype(jnp.float32)).all())


# ------------------------------------------------------------------ semantics


@pytest.mark.parametrize("rate, dims", [(0.1, ()), (0.5, (0, 1)), (0.9, (-1,)), (0.3, (-3,))])
def test_dropout_equals_explicit_mask_reference(rate, dims):
    q, k, v = qkv((2, 5, 4, 8), (2, 7, 2, 8), seed=1)
    bias = normal((2, 4, 5, 7), 2)
    mask = bernoulli((2, 1, 5, 7), 0.8, 3)
    key = jax.random.key(11)
    # Documented key use: the mask is keep_mask(dropout_key, (B, N, T, S), rate, dims),
    # rebuilt here from the raw bits by the independent numpy reference.
    keep = keep_ref(key, (2, 4, 5, 7), rate, dims)
    expected = attention_ref(q, k, v, bias, mask, keep, rate)
    got = dropjax.dot_product_attention(
        q, k, v, bias, mask, dropout_key=key, dropout_rate=rate, broadcast_dims=dims
    )
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dims", [(), (-3,)])
def test_unbatched_uses_three_dimensional_weights(dims):
    q, k, v = qkv((5, 4, 8), (7, 4, 8), seed=2)
    key, rate = jax.random.key(5), 0.4
    keep = keep_ref(key, (4, 5, 7), rate, dims)  # (heads, q_len, kv_len)
    expected = attention_ref(q[None], k[None], v[None], keep=keep[None], rate=rate)[0]
    got = dropjax.dot_product_attention(
        q, k, v, dropout_key=key, dropout_rate=rate, broadcast_dims=dims
    )
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_kept_fraction_mean_and_independence(rate):
    b, s, n = 8, 64, 8
    q, k, v = one_hot_values(b, s, n)
    out = dropjax.dot_product_attention(q, k, v, dropout_key=jax.random.key(3), dropout_rate=rate)
    scaled = np.asarray(out, np.float64) * s * (1 - rate)  # the keep mask, as 0/1
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-4)
    keep = np.round(scaled).astype(bool)
    total = keep.size
    assert abs(keep.mean() - (1 - rate)) < sigma_bound(total, 1 - rate)
    # Rows of dropped weights still average to the undropped weight 1/S.
    y = np.asarray(out, np.float64) * s
    assert abs(y.mean() - 1.0) < 4 * np.sqrt(rate / (1 - rate) / total)
    # Neighbouring keys are dropped independently: P(both kept) = (1 - rate)^2.
    both = (keep[..., 1:] & keep[..., :-1]).mean()
    assert abs(both - (1 - rate) ** 2) < 2 * sigma_bound(keep[..., 1:].size, (1 - rate) ** 2)


# ------------------------------------------------------------------ edges


def test_broadcast_dims_share_the_mask():
    b, s, n = 3, 32, 4
    q, k, v = one_hot_values(b, s, n)
    key = jax.random.key(1)
    # out[b, 0, n, :] is the weight row of batch b, head n.
    heads = np.asarray(
        dropjax.dot_product_attention(
            q, k, v, dropout_key=key, dropout_rate=0.5, broadcast_dims=(-3,)
        )
    )
    assert (heads == heads[:, :, :1]).all()
    assert not (heads[0] == heads[1]).all()
    both = np.asarray(
        dropjax.dot_product_attention(
            q, k, v, dropout_key=key, dropout_rate=0.5, broadcast_dims=(0, 1)
        )
    )
    assert (both == both[:1, :, :1]).all()
    assert len(np.unique(both)) == 2  # 0 and 2/S


@pytest.mark.parametrize("traced", [False, True])
def test_rate_one_gives_zeros_with_finite_zero_gradient(traced):
    q, k, v = qkv((2, 3, 2, 4), (2, 5, 2, 4))
    key = jax.random.key(0)

    def loss(q, k, v, rate):
        return dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=rate).sum()

    if traced:
        out = jax.jit(
            lambda r: dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=r)
        )(1.0)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v, 1.0)
    else:
        out = dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=1.0)
        grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, 1.0)
    assert (np.asarray(out) == 0).all()
    for g in grads:
        assert np.isfinite(np.asarray(g)).all() and (np.asarray(g) == 0).all()


def test_bad_inputs_raise_clear_errors():
    q, k, v = qkv((2, 3, 4, 8), (2, 5, 2, 8))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # checked even when deterministic
        dropjax.dot_product_attention(q, k, v, dropout_rate=-0.1, deterministic=True)
    with pytest.raises(ValueError, match="dropout_key=jax.random.key"):
        dropjax.dot_product_attention(q, k, v, dropout_rate=0.1)
    with pytest.raises(ValueError, match="jax.vmap"):
        dropjax.dot_product_attention(
            q, k, v, dropout_key=jax.random.split(key, 2), dropout_rate=0.1
        )
    with pytest.raises(TypeError, match="jax.random.key"):
        dropjax.dot_product_attention(q, k, v, dropout_key=3, dropout_rate=0.1)
    with pytest.raises(TypeError, match="boolean mask"):
        dropjax.dot_product_attention(q, k, v, mask=jnp.ones((2, 4, 3, 5), jnp.int32))
    with pytest.raises(ValueError, match="broadcastable"):
        dropjax.dot_product_attention(q, k, v, bias=jnp.ones((2, 4, 3, 6)))
    with pytest.raises(ValueError, match="multiple"):
        dropjax.dot_product_attention(*qkv((2, 3, 3, 8), (2, 5, 2, 8)))
    with pytest.raises(ValueError, match="same shape"):
        dropjax.dot_product_attention(q, k, v[:, :4])
    with pytest.raises(ValueError, match="head_dim"):
        dropjax.dot_product_attention(q[..., :4], k, v)
    with pytest.raises(ValueError, match=r"\[batch, seq, heads, head_dim\]"):
        dropjax.dot_product_attention(q[0, 0], k[0, 0], v[0, 0])
    with pytest.raises(TypeError, match="one dtype"):
        dropjax.dot_product_attention(q.astype(jnp.bfloat16), k, v)
    with pytest.raises(TypeError, match="floating-point"):
        dropjax.dot_product_attention(q.astype(jnp.int32), k, v)
    with pytest.raises(ValueError, match="out of range"):
        dropjax.dot_product_attention(
            q, k, v, dropout_key=key, dropout_rate=0.1, broadcast_dims=(4,)
        )


# ------------------------------------------------------------------ transforms


def test_jit_equals_eager_and_traced_rate_equals_concrete():
    key = jax.random.key(9)
    # The mask, read off exactly through one-hot values, is the same bit for bit.
    q, k, v = one_hot_values(2, 16, 4)
    f = jax.jit(
        lambda q, k, v, r: dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=r)
    )
    eager = dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=0.3)
    np.testing.assert_array_equal(eager, f(q, k, v, 0.3))
    # On generic inputs XLA may fuse the softmax differently: equal up to rounding.
    q, k, v = qkv((2, 5, 4, 8), (2, 7, 2, 8), seed=3)
    eager = dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=0.3)
    jitted = f(q, k, v, 0.3)
    np.testing.assert_array_equal(eager == 0, jitted == 0)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)


def test_follows_the_mask_impl_in_effect_at_each_call():
    q, k, v = one_hot_values(1, 32, 2)
    key = jax.random.key(4)

    def call():
        return dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=0.5)

    default = call()
    with dropjax.mask_impl("bits"):
        bits = call()  # must not reuse the trace made with the default sampler
        expected = dropjax.keep_mask(key, (1, 2, 1, 32), 0.5)
    np.testing.assert_array_equal(np.asarray(bits)[:, 0] != 0, np.asarray(expected)[:, :, 0])
    assert not np.array_equal(default, bits)


def test_vmap_over_keys_equals_loop():
    q, k, v = qkv((2, 5, 4, 8), (2, 7, 4, 8), seed=4)
    keys = jax.random.split(jax.random.key(2), 4)

    def f(key):
        return dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=0.4)

    batched = jax.vmap(f)(keys)
    for i in range(4):
        np.testing.assert_allclose(batched[i], f(keys[i]), rtol=1e-6, atol=1e-7)


def test_grad_matches_explicit_mask_reference():
    q, k, v = qkv((2, 5, 4, 8), (2, 7, 2, 8), seed=5)
    cot = normal(q.shape, 6)
    key, rate = jax.random.key(8), 0.3
    keep = jnp.asarray(keep_ref(key, (2, 4, 5, 7), rate))

    def ours(q, k, v):
        out = dropjax.dot_product_attention(q, k, v, dropout_key=key, dropout_rate=rate)
        return (out * cot).sum()

    def reference(q, k, v):
        kk = jnp.repeat(k, 2, axis=2)
        vv = jnp.repeat(v, 2, axis=2)
        logits = jnp.einsum("btnh,bsnh->bnts", q, kk) / np.float32(np.sqrt(8))
        w = jax.nn.softmax(logits, axis=-1)
        w = jnp.where(keep, w / np.float32(1 - rate), 0.0)
        return (jnp.einsum("bnts,bsnh->btnh", w, vv) * cot).sum()

    got = jax.grad(ours, argnums=(0, 1, 2))(q, k, v)
    expected = jax.grad(reference, argnums=(0, 1, 2))(q, k, v)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
