"""dot_product_attention's implementations ("xla", "blockwise", "pallas"): each against
independent references built with explicit masks (numpy bits, plain jnp softmax attention),
the tile helper against the full mask, compiled memory, forward mode, errors, Flax drop-ins."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropjax
import dropjax.linen
import dropjax.nnx
from dropjax._src import masks
from tests.reference import keep_ref
from tests.test_attention import BIG_NEGATIVE, attention_ref, bernoulli, normal, qkv

TILED = ["blockwise", "pallas"]
KEY = jax.random.key(21)


def jnp_ref(q, k, v, bias=None, allowed=None, keep=None, rate=0.0, scale=None):
    """Plain jnp attention with an explicit keep-mask (for reference gradients)."""
    n, kv_heads = q.shape[2], k.shape[2]
    k = jnp.repeat(k, n // kv_heads, axis=2)
    v = jnp.repeat(v, n // kv_heads, axis=2)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) * jnp.float32(scale)
    if bias is not None:
        logits = logits + bias
    if allowed is not None:
        logits = jnp.where(allowed, logits, jnp.float32(BIG_NEGATIVE))
    w = jax.nn.softmax(logits, axis=-1)
    if keep is not None:
        w = jnp.where(keep, w / (1.0 - rate), jnp.float32(0))
    return jnp.einsum("bnts,bsnh->btnh", w, v)


def setting(t=13, s=11, heads=4, kv_heads=2):
    """GQA inputs, a [1, N, T, S] bias, a padding mask with one fully masked row."""
    q, k, v = qkv((2, t, heads, 8), (2, s, kv_heads, 8), seed=3)
    bias = normal((1, heads, t, s), 4)
    pad = np.ones((2, 1, t, s), bool)
    pad[1, :, :, s - 3 :] = False  # key padding in batch 1
    pad[0, :, 2, :] = False  # a fully masked query row
    return q, k, v, bias, jnp.asarray(pad)


# ------------------------------------------------------------------ the tile helper


@pytest.mark.parametrize(
    "shape, dims, starts, block",
    [
        ((2, 3, 37, 41), (), (1, 0, 5, 7), (1, 3, 16, 20)),
        ((2, 3, 37, 41), (0, 1), (1, 2, 30, 33), (1, 1, 16, 16)),  # runs past the end
        ((3, 37, 41), (-1,), (0, 3, 0), (3, 16, 41)),
    ],
)
def test_keep_block_equals_slice_of_full_mask(shape, dims, starts, block):
    full = keep_ref(KEY, shape, 0.4, dims)
    got = np.asarray(masks._keep_block(KEY, shape, 0.4, starts, block, dims))
    want = full[tuple(slice(a, a + b) for a, b in zip(starts, block, strict=True))]
    np.testing.assert_array_equal(got[tuple(slice(0, d) for d in want.shape)], want)
    # Traced offsets (as inside a loop) give the same tile.
    jitted = jax.jit(lambda st: masks._keep_block(KEY, shape, 0.4, st, block, dims))
    np.testing.assert_array_equal(jitted(jnp.asarray(starts)), got)
    ones = masks._keep_block(KEY, shape, 0.0, starts, block, dims)
    assert bool(ones.all()) and not bool(masks._keep_block(KEY, shape, 1.0, starts, block).any())
    with dropjax.mask_impl("bits"), pytest.raises(ValueError, match="hash"):
        masks._keep_block(KEY, shape, 0.4, starts, block, dims)


# ------------------------------------------------------------------ semantics


@pytest.mark.parametrize(
    "impl, dims, causal, padded",
    [
        ("xla", (), True, True),
        ("blockwise", (), True, True),
        ("blockwise", (0, 1), False, True),
        ("blockwise", (-1,), True, False),  # causal alone: tiles above the diagonal skipped
        ("pallas", (-3,), True, True),
    ],
)
def test_values_and_grads_match_explicit_mask_reference(impl, dims, causal, padded):
    q, k, v, bias, pad = setting()
    pad = pad if padded else None
    rate = 0.3
    shape = (2, 4, 13, 11)
    keep = keep_ref(KEY, shape, rate, dims)
    allowed = np.asarray(pad) if padded else np.ones((1, 1, 13, 11), bool)
    allowed = allowed & (np.tril(np.ones((13, 11), bool)) if causal else True)
    cot = normal(q.shape, 9)

    def ours(q, k, v, bias, rate):
        out = dropjax.dot_product_attention(
            q,
            k,
            v,
            bias,
            pad,
            dropout_key=KEY,
            dropout_rate=rate,
            broadcast_dims=dims,
            is_causal=causal,
            implementation=impl,
            block_q=4,
            block_kv=3,
        )
        return (out * cot).sum(), out

    def reference(q, k, v, bias, rate):
        return (jnp_ref(q, k, v, bias, allowed, keep, rate) * cot).sum()

    (_, out), grads = jax.value_and_grad(ours, argnums=(0, 1, 2, 3, 4), has_aux=True)(
        q, k, v, bias, rate
    )
    expected = attention_ref(q, k, v, bias, allowed, keep, rate)
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)
    # The rate gradient is the pathwise one (mask held fixed): d/dr of 1 / (1 - r).
    want = jax.jit(jax.grad(reference, argnums=(0, 1, 2, 3, 4)))(q, k, v, bias, jnp.float32(rate))
    for g, e in zip(grads, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("impl", TILED)
def test_rate_zero_equals_jax_nn(impl):
    q, k, v, bias, pad = setting(t=9, s=7)
    for mask, causal in ((pad, False), (pad, True), (None, True)):
        expected = jax.nn.dot_product_attention(q, k, v, bias, mask, is_causal=causal)
        got = dropjax.dot_product_attention(
            q, k, v, bias, mask, is_causal=causal, implementation=impl, block_q=4, block_kv=4
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)


def test_unbatched_layout_and_bfloat16():
    q, k, v = qkv((13, 4, 8), (11, 2, 8), seed=5)
    rate, dims = 0.25, (-3,)
    keep = keep_ref(KEY, (4, 13, 11), rate, dims)  # (heads, q_len, kv_len)
    got = dropjax.dot_product_attention(
        q,
        k,
        v,
        dropout_key=KEY,
        dropout_rate=rate,
        broadcast_dims=dims,
        implementation="blockwise",
        block_q=5,
        block_kv=4,
    )
    expected = attention_ref(q[None], k[None], v[None], keep=keep[None], rate=rate)[0]
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    low = dropjax.dot_product_attention(
        q.astype(jnp.bfloat16),
        k.astype(jnp.bfloat16),
        v.astype(jnp.bfloat16),
        dropout_key=KEY,
        dropout_rate=rate,
        broadcast_dims=dims,
        implementation="blockwise",
        block_q=5,
        block_kv=4,
    )
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(low, np.float32), expected, atol=5e-2)


def test_rate_one_zero_output_and_finite_zero_gradient():
    q, k, v, bias, pad = setting(t=6, s=5)

    def loss(q, k, v, rate):
        out = dropjax.dot_product_attention(
            q,
            k,
            v,
            bias,
            pad,
            dropout_key=KEY,
            dropout_rate=rate,
            implementation="blockwise",
            block_q=4,
            block_kv=4,
        )
        return out.sum(), out

    # The rate reaches the tiles traced (a jit argument), so this is the traced-rate path.
    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, 1.0)
    assert (np.asarray(out) == 0).all()
    for g in grads:
        assert np.isfinite(np.asarray(g)).all() and (np.asarray(g) == 0).all()


def test_deterministic_per_key_and_transforms():
    q, k, v, _, pad = setting(t=9, s=8)

    def f(key, rate=0.4):
        return dropjax.dot_product_attention(
            q,
            k,
            v,
            mask=pad,
            dropout_key=key,
            dropout_rate=rate,
            implementation="blockwise",
            block_q=4,
            block_kv=4,
        )

    a, b = f(KEY), f(KEY)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, f(jax.random.key(22)))
    keys = jax.random.split(KEY, 2)
    batched = jax.vmap(f)(keys)
    for i in range(2):
        np.testing.assert_allclose(batched[i], f(keys[i]), rtol=1e-6, atol=1e-6)
    # A traced rate (jit) equals the concrete one; remat leaves the gradient unchanged.
    np.testing.assert_allclose(jax.jit(f)(KEY, 0.4), a, rtol=1e-6, atol=1e-6)

    def loss(q):
        return dropjax.dot_product_attention(
            q,
            k,
            v,
            dropout_key=KEY,
            dropout_rate=0.4,
            implementation="blockwise",
            block_q=4,
            block_kv=4,
        ).sum()

    np.testing.assert_allclose(
        jax.grad(jax.checkpoint(loss))(q), jax.grad(loss)(q), rtol=1e-6, atol=1e-6
    )


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rule under test is CPU's")
def test_default_implementation_rule():
    from dropjax._src.attention import CPU_BLOCKWISE_MIN_WEIGHTS, _choose

    side = int(np.sqrt(CPU_BLOCKWISE_MIN_WEIGHTS))
    assert _choose(None, side, side, True) == "blockwise"
    assert _choose(None, side - 1, side, True) == "xla"
    with dropjax.mask_impl("bits"):
        assert _choose(None, side, side, True) == "xla"
        assert _choose(None, side, side, False) == "blockwise"


# ------------------------------------------------------------------ memory


def test_blockwise_backward_memory_is_far_below_one_weight_matrix():
    t, heads, head_dim = 4096, 1, 32
    q = jnp.zeros((1, t, heads, head_dim))

    def loss(q, k, v):
        return dropjax.dot_product_attention(
            q, k, v, dropout_key=KEY, dropout_rate=0.1, implementation="blockwise"
        ).sum()

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, q, q).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    one_matrix = t * t * 4  # a single float32 T x S array: 64 MiB
    assert temp < one_matrix / 4, temp


# ------------------------------------------------------------------ forward mode


def test_forward_mode_xla_matches_explicit_mask_and_tiled_raises():
    q, k, v, bias, pad = setting(t=5, s=4, heads=2, kv_heads=1)
    rate = 0.3
    keep = keep_ref(KEY, (2, 2, 5, 4), rate)
    tq = normal(q.shape, 11)

    def ours(q, impl="xla"):
        return dropjax.dot_product_attention(
            q, k, v, bias, pad, dropout_key=KEY, dropout_rate=rate, implementation=impl
        )

    def reference(q):
        return jnp_ref(q, k, v, bias, np.asarray(pad), keep, rate)

    out, tangent = jax.jvp(ours, (q,), (tq,))
    want_out, want_tangent = jax.jit(lambda x, t: jax.jvp(reference, (x,), (t,)))(q, tq)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tangent, want_tangent, rtol=1e-4, atol=1e-5)
    jac = jax.jacfwd(lambda x: ours(x).sum())(q)
    want_jac = jax.jit(jax.grad(lambda x: reference(x).sum()))(q)
    np.testing.assert_allclose(jac, want_jac, atol=2e-5)
    hess = jax.hessian(lambda a: (ours(a * q) * tq).sum())(1.0)
    want_hess = jax.jit(jax.hessian(lambda a: (reference(a * q) * tq).sum()))(1.0)
    np.testing.assert_allclose(hess, want_hess, rtol=1e-3, atol=1e-4)
    with pytest.raises(TypeError, match="implementation='xla'"):
        jax.jvp(lambda x: ours(x, "blockwise"), (q,), (tq,))


# ------------------------------------------------------------------ errors


def test_errors_name_the_fix():
    q, k, v, _, _ = setting(t=6, s=5)
    with pytest.raises(ValueError, match="one of None"):
        dropjax.dot_product_attention(q, k, v, implementation="cudnn")
    with dropjax.mask_impl("bits"), pytest.raises(ValueError, match="implementation='xla'"):
        dropjax.dot_product_attention(
            q, k, v, dropout_key=KEY, dropout_rate=0.1, implementation="blockwise"
        )
    with pytest.raises(TypeError, match="dropout_key="):  # PRNG key where the keys go
        dropjax.dot_product_attention(q, KEY, v, dropout_rate=0.1)
    with pytest.raises(TypeError, match="dropout_key="):
        dropjax.dot_product_attention(q, jax.random.PRNGKey(0), v)
    # [B, N, T, H] inputs: the message gives the layout and the transpose.
    bnth_q, bnth_kv = jnp.zeros((2, 4, 6, 8)), jnp.zeros((2, 4, 5, 8))
    with pytest.raises(ValueError, match=r"\[batch, heads, seq, head_dim\].*swapaxes"):
        dropjax.dot_product_attention(bnth_q, bnth_kv, bnth_kv)
    with pytest.raises(ValueError, match="block_q"):
        dropjax.dot_product_attention(q, k, v, implementation="blockwise", block_q=0)


# ------------------------------------------------------------------ Flax drop-ins


def test_linen_attention_fn_is_a_drop_in():
    x = normal((2, 6, 8), 12)
    pad = bernoulli((2, 1, 6, 6), 0.8, 13)
    kwargs = dict(num_heads=2, qkv_features=8, dropout_rate=0.2)
    ours = nn.MultiHeadDotProductAttention(**kwargs, attention_fn=dropjax.linen.attention_fn)
    theirs = nn.MultiHeadDotProductAttention(**kwargs)
    params = theirs.init(jax.random.key(0), x, deterministic=True)
    np.testing.assert_allclose(
        ours.apply(params, x, mask=pad, deterministic=True),
        theirs.apply(params, x, mask=pad, deterministic=True),
        rtol=1e-5,
        atol=1e-5,
    )
    dropped = ours.apply(params, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
    assert np.isfinite(np.asarray(dropped)).all()
    assert not np.allclose(dropped, ours.apply(params, x, deterministic=True))


def test_attention_fn_masks_follow_keep_mask_with_broadcast_dropout():
    # Two batch axes, as Flax allows; broadcast_dropout shares the mask over batch and heads.
    q, k, v = qkv((2, 3, 5, 2, 8), (2, 3, 7, 2, 8), seed=14)
    rng, rate = jax.random.key(15), 0.5
    got = dropjax.linen.attention_fn(q, k, v, dropout_rng=rng, dropout_rate=rate)
    keep = keep_ref(rng, (6, 2, 5, 7), rate, (0, 1))
    flat = [t.reshape(6, *t.shape[2:]) for t in (q, k, v)]
    expected = attention_ref(*flat, keep=keep, rate=rate).reshape(got.shape)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


def test_nnx_attention_fn_is_a_drop_in():
    x = normal((2, 6, 8), 16)
    kwargs = dict(num_heads=2, in_features=8, dropout_rate=0.2, decode=False)
    ours = nnx.MultiHeadAttention(**kwargs, attention_fn=dropjax.nnx.attention_fn, rngs=nnx.Rngs(0))
    theirs = nnx.MultiHeadAttention(**kwargs, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(
        ours(x, deterministic=True), theirs(x, deterministic=True), rtol=1e-5, atol=1e-5
    )
    dropped = ours(x, deterministic=False, rngs=nnx.Rngs(dropout=1))
    assert np.isfinite(np.asarray(dropped)).all()
    assert not np.allclose(dropped, ours(x, deterministic=True))
