"""dot_product_attention's jax.nn arguments and transforms on every implementation.

``query_seq_lengths``, ``key_value_seq_lengths``, ``local_window_size``, a traced ``scale`` and
``precision`` on "xla", "blockwise" and "pallas" (Pallas' interpreter on CPU), each under
``jit`` against a reference whose mask is spelled out element by element in numpy; forward
mode above the CPU switch to blockwise; Flax's extra ``attention_fn`` arguments (sown
weights, ``force_fp32_for_softmax``, custom products) and complex inputs.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dropjax
import dropjax.linen
import dropjax.nnx
from tests.reference import keep_ref
from tests.test_attention import BIG_NEGATIVE, attention_ref, normal, qkv

IMPLS = ["xla", "blockwise", "pallas"]
KEY = jax.random.key(31)


def allowed_ref(b, t, s, causal=False, window=None, q_len=None, kv_len=None):
    """The [B, 1, T, S] mask of jax.nn's documented rules, one element at a time."""
    out = np.ones((b, 1, t, s), bool)
    left, right = (window, window) if isinstance(window, int) else (window or (None, None))
    for bi in range(b):
        for ti in range(t):
            for si in range(s):
                ok = not (causal and si > ti)
                if window is not None:
                    ok &= ti - left <= si <= ti + right
                if q_len is not None:
                    ok &= ti < q_len[bi]
                if kv_len is not None:
                    ok &= si < kv_len[bi]
                out[bi, 0, ti, si] = ok
    return out


def zero_rows(out, q_len):
    """Output rows at or past the query length are zero (jax.nn's rule)."""
    out = np.array(out)
    if q_len is not None:
        for bi, n in enumerate(q_len):
            out[bi, n:] = 0.0
    return out


def jnp_masked(q, k, v, allowed, keep=None, rate=0.0, scale=None, q_len=None):
    """Plain jnp attention with explicit masks (differentiable, for reference gradients)."""
    n, kv_heads = q.shape[2], k.shape[2]
    k = jnp.repeat(k, n // kv_heads, axis=2)
    v = jnp.repeat(v, n // kv_heads, axis=2)
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) * scale
    logits = jnp.where(allowed, logits, jnp.float32(BIG_NEGATIVE))
    w = jax.nn.softmax(logits, axis=-1)
    if keep is not None:
        w = jnp.where(keep, w / (1.0 - rate), jnp.float32(0))
    out = jnp.einsum("bnts,bsnh->btnh", w, v)
    if q_len is not None:
        rows = np.arange(q.shape[1])[None, :] < np.asarray(q_len)[:, None]
        out = out * jnp.asarray(rows[:, :, None, None], out.dtype)
    return out


CASES = {
    "query_lengths": dict(query_seq_lengths=[7, 3]),
    "key_value_lengths": dict(key_value_seq_lengths=[2, 9]),
    "both_lengths_zero_row": dict(query_seq_lengths=[0, 5], key_value_seq_lengths=[9, 4]),
    "window_int": dict(local_window_size=1),
    "window_causal": dict(local_window_size=(3, 0), is_causal=True),
    "window_lengths": dict(local_window_size=(2, 1), query_seq_lengths=[6, 2]),
}


def _ref_masks(case, b, t, s):
    q_len, kv_len = case.get("query_seq_lengths"), case.get("key_value_seq_lengths")
    allowed = allowed_ref(
        b, t, s, case.get("is_causal", False), case.get("local_window_size"), q_len, kv_len
    )
    return allowed, q_len


def _setting(case):
    # T=7, S=9 with 4 x 4 tiles: partial tiles on both axes; grouped-query heads.
    q, k, v = qkv((2, 7, 2, 4), (2, 9, 1, 4), seed=5)
    allowed, q_len = _ref_masks(case, 2, 7, 9)
    kwargs = {
        key: (jnp.asarray(val, jnp.int32) if "lengths" in key else val) for key, val in case.items()
    }
    return (q, k, v), allowed, q_len, kwargs


def _ours(impl, rate, kwargs):
    def f(q, k, v):
        return dropjax.dot_product_attention(
            q,
            k,
            v,
            dropout_key=KEY,
            dropout_rate=rate,
            implementation=impl,
            block_q=4,
            block_kv=4,
            **kwargs,
        )

    return f


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", list(CASES))
def test_positional_masks_match_explicit_mask_reference(impl, name):
    (q, k, v), allowed, q_len, kwargs = _setting(CASES[name])
    rate = 0.4
    keep = keep_ref(KEY, (2, 2, 7, 9), rate)
    got = jax.jit(_ours(impl, rate, kwargs))(q, k, v)
    expected = zero_rows(attention_ref(q, k, v, mask=allowed, keep=keep, rate=rate), q_len)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_positional_mask_gradients_match_explicit_mask_reference(impl):
    case = dict(query_seq_lengths=[6, 0], key_value_seq_lengths=[5, 9], local_window_size=(3, 1))
    (q, k, v), allowed, q_len, kwargs = _setting(case)
    rate = 0.4
    keep = keep_ref(KEY, (2, 2, 7, 9), rate)
    ours = _ours(impl, rate, kwargs)
    cot = normal(q.shape, 6)
    grads = jax.jit(jax.grad(lambda *a: (ours(*a) * cot).sum(), argnums=(0, 1, 2)))(q, k, v)
    want = jax.jit(
        jax.grad(
            lambda *a: (jnp_masked(*a, allowed, keep, rate, q_len=q_len) * cot).sum(),
            argnums=(0, 1, 2),
        )
    )(q, k, v)
    for got, exp in zip(grads, want, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_unbatched_lengths_and_window(impl):
    q, k, v = qkv((6, 2, 4), (5, 2, 4), seed=7)
    allowed = allowed_ref(1, 6, 5, window=(1, 2), q_len=[4], kv_len=[3])
    got = jax.jit(
        lambda q, k, v: dropjax.dot_product_attention(
            q,
            k,
            v,
            query_seq_lengths=jnp.int32(4),
            key_value_seq_lengths=jnp.asarray([3]),
            local_window_size=(1, 2),
            implementation=impl,
            block_q=4,
            block_kv=4,
        )
    )(q, k, v)
    expected = zero_rows(attention_ref(q[None], k[None], v[None], mask=allowed), [4])[0]
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_traced_scale_value_and_gradient(impl):
    q, k, v = qkv((2, 6, 2, 4), (2, 5, 2, 4), seed=8)
    allowed = allowed_ref(2, 6, 5, causal=True)
    rate = 0.3
    keep = keep_ref(KEY, (2, 2, 6, 5), rate)
    cot = normal(q.shape, 9)

    def loss(scale, q):
        out = dropjax.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            is_causal=True,
            dropout_key=KEY,
            dropout_rate=rate,
            implementation=impl,
            block_q=4,
            block_kv=4,
        )
        return (out * cot).sum()

    def ref_loss(scale, q):
        return (jnp_masked(q, k, v, allowed, keep, rate, scale=scale) * cot).sum()

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(0.7, q)
    want_value, want_grads = jax.jit(jax.value_and_grad(ref_loss, argnums=(0, 1)))(0.7, q)
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[0], want_grads[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[1], want_grads[1], rtol=1e-4, atol=2e-5)


# ------------------------------------------------------------------ every length


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the length switch under test is CPU's")
def test_forward_mode_and_traced_scale_above_the_blockwise_switch():
    from dropjax._src.attention import CPU_BLOCKWISE_MIN_WEIGHTS, _choose

    t = s = int(np.sqrt(CPU_BLOCKWISE_MIN_WEIGHTS))  # 128 x 128: the default is blockwise
    assert _choose(None, t, s, True) == "blockwise"
    q, k, v = qkv((1, t, 1, 4), (1, s, 1, 4), seed=10)
    lengths = jnp.asarray([100], jnp.int32)
    rate = 0.2
    keep = keep_ref(KEY, (1, 1, t, s), rate)
    allowed = allowed_ref(1, t, s, causal=True, kv_len=[100])
    tq = normal(q.shape, 11)

    def ours(q, scale=None):
        return dropjax.dot_product_attention(
            q,
            k,
            v,
            scale=scale,
            is_causal=True,
            key_value_seq_lengths=lengths,
            dropout_key=KEY,
            dropout_rate=rate,
        )

    def ref(q, scale=None):
        return jnp_masked(q, k, v, allowed, keep, rate, scale=scale)

    out, tangent = jax.jvp(ours, (q,), (tq,))
    want_out, want_tangent = jax.jit(lambda x, d: jax.jvp(ref, (x,), (d,)))(q, tq)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tangent, want_tangent, rtol=1e-4, atol=1e-5)
    # jvp inside an outer jit is seen at the call too.
    _, jit_tangent = jax.jit(lambda x, d: jax.jvp(ours, (x,), (d,)))(q, tq)
    np.testing.assert_allclose(jit_tangent, want_tangent, rtol=1e-4, atol=1e-5)
    hess = jax.hessian(lambda a: (ours(a * q) * tq).sum())(1.0)
    want_hess = jax.jit(jax.hessian(lambda a: (ref(a * q) * tq).sum()))(1.0)
    np.testing.assert_allclose(hess, want_hess, rtol=1e-3, atol=1e-4)
    d_scale = jax.jit(jax.grad(lambda c: (ours(q, c) * tq).sum()))(0.4)
    want_d_scale = jax.jit(jax.grad(lambda c: (ref(q, c) * tq).sum()))(0.4)
    np.testing.assert_allclose(d_scale, want_d_scale, rtol=1e-4, atol=1e-5)
    # Reverse mode keeps the tiled path, forward mode falls back to the materialised one.
    grad_jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: (ours(x) * tq).sum()))(q))
    jvp_jaxpr = str(jax.make_jaxpr(lambda x: jax.jvp(ours, (x,), (tq,)))(q))
    assert "_attention_tiled" in grad_jaxpr and "_attention_xla" not in grad_jaxpr
    assert "_attention_xla" in jvp_jaxpr and "_attention_tiled" not in jvp_jaxpr


def test_explicit_tiled_implementation_names_the_fix_for_forward_mode():
    q, k, v = qkv((1, 6, 1, 4), (1, 6, 1, 4), seed=12)

    def f(x):
        return dropjax.dot_product_attention(x, k, v, implementation="blockwise")

    with pytest.raises(TypeError, match="implementation='xla'"):
        jax.jvp(f, (q,), (q,))
    with pytest.raises(TypeError, match="implementation='xla'"):
        jax.jit(lambda x: jax.jvp(f, (x,), (x,)))(q)


# ------------------------------------------------------------------ precision


def _dot_precisions(jaxpr) -> list:
    """The precision of every dot_general in a jaxpr and all its sub-jaxprs (kernels too)."""
    found = []

    def visit(j):
        j = getattr(j, "jaxpr", j)
        for eqn in j.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(eqn.params["precision"])
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else (param,):
                    if isinstance(sub, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                        visit(sub)

    visit(jaxpr)
    return found


@pytest.mark.parametrize("impl", IMPLS)
def test_precision_reaches_every_matrix_product(impl):
    q, k, v = qkv((1, 5, 2, 4), (1, 6, 1, 4), seed=13)

    def loss(q, k, v, precision):
        return dropjax.dot_product_attention(
            q,
            k,
            v,
            dropout_key=KEY,
            dropout_rate=0.2,
            precision=precision,
            implementation=impl,
            block_q=4,
            block_kv=4,
        ).sum()

    highest = jax.lax.Precision.HIGHEST
    found = _dot_precisions(
        jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)(q, k, v, highest)
    )
    assert len(found) >= 5  # logits and output forward; dq, dk, dv and dp backward
    assert all(p == (highest, highest) for p in found), found
    default = _dot_precisions(
        jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)(q, k, v, None)
    )
    assert all(p is None for p in default), default


# ------------------------------------------------------------------ errors


def test_bad_mask_arguments_name_the_fix():
    q, k, v = qkv((2, 5, 2, 4), (2, 6, 2, 4), seed=14)
    attention = dropjax.dot_product_attention
    with pytest.raises(TypeError, match="integer query_seq_lengths"):
        attention(q, k, v, query_seq_lengths=jnp.asarray([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        attention(q, k, v, key_value_seq_lengths=jnp.asarray([1, 2, 3]))
    for bad in (-1, (1,), (1, 2, 3), 1.5, (True, 0)):
        with pytest.raises(ValueError, match="local_window_size"):
            attention(q, k, v, local_window_size=bad)
    with pytest.raises(ValueError, match="scalar scale"):
        attention(q, k, v, scale=jnp.ones(2))


def test_complex_inputs_are_refused_with_the_reason():
    q = jnp.ones((1, 3, 1, 2), jnp.complex64)
    with pytest.raises(TypeError, match="real logits.*real, query.imag"):
        dropjax.dot_product_attention(q, q, q)
    with pytest.raises(TypeError, match="real logits"):
        dropjax.linen.attention_fn(q, q, q, deterministic=True)


# ------------------------------------------------------------------ Flax's arguments


def test_linen_sows_the_weights_flax_sows_and_keeps_force_fp32():
    x = normal((2, 5, 8), 15)
    kwargs = dict(num_heads=2, qkv_features=8, dropout_rate=0.2)
    ours = nn.MultiHeadDotProductAttention(**kwargs, attention_fn=dropjax.linen.attention_fn)
    theirs = nn.MultiHeadDotProductAttention(**kwargs)
    params = theirs.init(jax.random.key(0), x, deterministic=True)
    run = dict(deterministic=True, sow_weights=True, mutable=["intermediates"])
    out, sown = ours.apply(params, x, **run)
    want_out, want_sown = theirs.apply(params, x, **run)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    (weights,) = sown["intermediates"]["attention_weights"]
    (want_weights,) = want_sown["intermediates"]["attention_weights"]
    assert weights.shape == (2, 2, 5, 5) and weights.dtype == want_weights.dtype
    np.testing.assert_allclose(weights, want_weights, rtol=1e-5, atol=1e-6)
    # force_fp32_for_softmax is part of the signature (no longer filtered out by Flax).
    fp32 = nn.MultiHeadDotProductAttention(
        **kwargs, force_fp32_for_softmax=True, attention_fn=dropjax.linen.attention_fn
    )
    np.testing.assert_allclose(fp32.apply(params, x, deterministic=True), want_out, atol=1e-5)


def test_nnx_sows_the_weights_flax_sows():
    x = normal((2, 5, 8), 16)
    kwargs = dict(num_heads=2, in_features=8, decode=False)
    ours = nnx.MultiHeadAttention(**kwargs, attention_fn=dropjax.nnx.attention_fn, rngs=nnx.Rngs(0))
    theirs = nnx.MultiHeadAttention(**kwargs, rngs=nnx.Rngs(0))
    run = dict(deterministic=True, sow_weights=True)
    out, got = nnx.capture(ours, nnx.Intermediate)(x, **run)
    want_out, want = nnx.capture(theirs, nnx.Intermediate)(x, **run)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    got, want = jax.tree.leaves(got), jax.tree.leaves(want)
    assert len(got) == len(want) == 1
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)


def test_attention_fn_sows_only_on_the_xla_path_and_refuses_custom_products():
    class Recorder:
        def __init__(self):
            self.sown = []

        def sow(self, col, name, value):
            self.sown.append((col, name, value))

    q, k, v = qkv((3, 2, 5, 2, 4), (3, 2, 6, 2, 4), seed=17)
    module = Recorder()
    dropjax.linen.attention_fn(q, k, v, deterministic=True, module=module)
    ((col, name, weights),) = module.sown
    assert (col, name, weights.shape) == ("intermediates", "attention_weights", (3, 2, 2, 5, 6))
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="implementation='xla'"):
        dropjax.linen.attention_fn(
            q, k, v, deterministic=True, module=Recorder(), implementation="blockwise"
        )
    with pytest.raises(ValueError, match="qk_attn_weights_einsum"):
        dropjax.linen.attention_fn(q, k, v, qk_attn_weights_einsum=jnp.einsum)
    with pytest.raises(ValueError, match="einsum_dot_general"):
        dropjax.linen.attention_fn(q, k, v, einsum_dot_general=jax.lax.dot_general)
