"""Decoupled forward/backward dropout against explicit-mask references (Gao et al. 2019)."""

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from tests.reference import extra_key, keep_ref, nested_keep_ref, sigma_bound


def vjp_of(f, x, g):
    y, vjp = jax.vjp(f, x)
    return np.asarray(y), np.asarray(vjp(g)[0])


def test_backward_rate_zero_is_exactly_dropout():
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(0), (40, 9))
    g = jax.random.normal(jax.random.key(1), (40, 9))
    for dims in [(), (0,)]:
        y_d, g_d = vjp_of(lambda x: dropjax.dropout(key, x, 0.3, broadcast_dims=dims), x, g)
        y_c, g_c = vjp_of(
            lambda x: dropjax.decoupled_dropout(key, x, 0.3, 0.0, broadcast_dims=dims), x, g
        )
        np.testing.assert_array_equal(y_c, y_d)
        np.testing.assert_array_equal(g_c, g_d)
    # A traced zero backward rate takes the general nested path: same numbers.
    f = jax.jit(lambda x, pb: dropjax.decoupled_dropout(key, x, 0.3, pb))
    y_d, g_d = vjp_of(lambda x: dropjax.dropout(key, x, 0.3), x, g)
    y_t, g_t = vjp_of(lambda x: f(x, jnp.float32(0.0)), x, g)
    np.testing.assert_array_equal(y_t, y_d)
    np.testing.assert_array_equal(g_t, g_d)


@pytest.mark.parametrize("p_f,p_b", [(0.5, 0.2), (0.1, 1e-4), (0.3, 0.5)])
def test_nested_semantics_against_explicit_masks(p_f, p_b):
    key, shape = jax.random.key(10), (64, 32)
    x = jax.random.normal(jax.random.key(0), shape)
    g = jax.random.normal(jax.random.key(1), shape)
    m_f = keep_ref(key, shape, p_f)
    m_b = nested_keep_ref(key, shape, p_f, p_b)
    assert not np.any(m_b & ~m_f)
    y, gx = vjp_of(lambda x: dropjax.decoupled_dropout(key, x, p_f, p_b), x, g)
    s_f = 1 / np.float32(1 - p_f)
    s_b = s_f * (1 / np.float32(1 - p_b))
    np.testing.assert_allclose(y, np.where(m_f, np.asarray(x) * s_f, 0), rtol=1e-6)
    np.testing.assert_allclose(gx, np.where(m_b, np.asarray(g) * s_b, 0), rtol=1e-6)


def test_nested_support_and_extra_rate_statistics():
    p_f, p_b, n = 0.3, 0.2, 400_000
    key = jax.random.key(2)
    y, gx = vjp_of(lambda x: dropjax.decoupled_dropout(key, x, p_f, p_b), jnp.ones(n), jnp.ones(n))
    fwd, bwd = y != 0, gx != 0
    assert not np.any(bwd & ~fwd), "nested backward mask must lie inside the forward mask"
    # Among forward-kept entries, a fraction p_b is dropped by the extra mask.
    extra_dropped = 1 - bwd[fwd].mean()
    assert abs(extra_dropped - p_b) < sigma_bound(fwd.sum(), p_b)
    # Scales: forward 1/(1-p_f); backward 1/((1-p_f)(1-p_b)).
    np.testing.assert_allclose(np.unique(y[fwd]), [1 / (1 - p_f)], rtol=1e-6)
    np.testing.assert_allclose(np.unique(gx[bwd]), [1 / ((1 - p_f) * (1 - p_b))], rtol=1e-6)
    # Unbiased backward: E[g_out] = g.
    assert abs(gx.mean() - 1.0) < 4 * gx.std() / np.sqrt(n)


def test_nested_extra_drops_are_independent_of_each_other():
    # Among forward-kept entries, the extra drops of neighbours are independent (the
    # one-draw construction must match an independent extra mask's joint law).
    p_f, p_b, n = 0.2, 0.3, 400_000
    key = jax.random.key(8)
    y, gx = vjp_of(lambda x: dropjax.decoupled_dropout(key, x, p_f, p_b), jnp.ones(n), jnp.ones(n))
    kept = np.flatnonzero(y != 0)
    dropped = (gx[kept] == 0).astype(int)
    a, b = dropped[:-1:2], dropped[1::2]
    both = (a & b).mean()
    assert abs(both - p_b**2) < sigma_bound(a.size, p_b**2)
    assert abs(a.mean() - p_b) < sigma_bound(a.size, p_b)


def test_independent_semantics_and_independence():
    p_f, p_b, n = 0.4, 0.3, 400_000
    key = jax.random.key(5)
    x, g = jnp.ones(n), jnp.ones(n)
    y, gx = vjp_of(
        lambda x: dropjax.decoupled_dropout(key, x, p_f, p_b, backward="independent"), x, g
    )
    m_b = keep_ref(extra_key(key), (n,), p_b)
    np.testing.assert_allclose(gx, np.where(m_b, 1 / np.float32(1 - p_b), 0), rtol=1e-6)
    both = ((y != 0) & (gx != 0)).mean()
    q = (1 - p_f) * (1 - p_b)
    assert abs(both - q) < sigma_bound(n, q)


def test_forward_dropout_is_masked_forward_identity_backward():
    key = jax.random.key(7)
    x = jax.random.normal(jax.random.key(0), (100,))
    g = jax.random.normal(jax.random.key(1), (100,))
    y, gx = vjp_of(lambda x: dropjax.forward_dropout(key, x, 0.5), x, g)
    np.testing.assert_allclose(y, np.where(keep_ref(key, (100,), 0.5), np.asarray(x) * 2, 0))
    np.testing.assert_array_equal(gx, g)


def test_backward_dropout_is_identity_forward_masked_backward():
    key = jax.random.key(7)
    x = jax.random.normal(jax.random.key(0), (100,))
    g = jax.random.normal(jax.random.key(1), (100,))
    y, gx = vjp_of(lambda x: dropjax.backward_dropout(key, x, 0.25), x, g)
    np.testing.assert_array_equal(y, x)
    m = keep_ref(extra_key(key), (100,), 0.25)
    np.testing.assert_allclose(gx, np.where(m, np.asarray(g) / np.float32(0.75), 0), rtol=1e-6)


def test_augmented_is_nested_decoupled():
    key, x = jax.random.key(9), jax.random.normal(jax.random.key(0), (50,))
    g = jnp.ones(50)
    a = vjp_of(lambda x: dropjax.augmented_dropout(key, x, 0.3, 0.1), x, g)
    d = vjp_of(lambda x: dropjax.decoupled_dropout(key, x, 0.3, 0.1, backward="nested"), x, g)
    np.testing.assert_array_equal(a[0], d[0])
    np.testing.assert_array_equal(a[1], d[1])


@pytest.mark.parametrize("backward", ["nested", "independent"])
def test_rate_one_has_finite_gradients(backward):
    key, x = jax.random.key(0), jnp.ones(16)
    for p_f, p_b in [(1.0, 0.5), (0.5, 1.0), (1.0, 1.0)]:
        y, gx = vjp_of(
            lambda x: dropjax.decoupled_dropout(key, x, p_f, p_b, backward=backward), x, x
        )
        assert np.isfinite(gx).all() and np.isfinite(y).all()
        if p_f == 1.0:
            assert (y == 0).all()
        if p_b == 1.0 or (backward == "nested" and p_f == 1.0):
            assert (gx == 0).all()


def _dense_case(shape=(16, 12), out=5):
    h = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), (shape[1], out))
    b = jax.random.normal(jax.random.key(2), (out,))
    delta = jax.random.normal(jax.random.key(3), (shape[0], out))
    return h, {"w": w, "b": b}, delta


@pytest.mark.parametrize("backward", ["nested", "independent"])
@pytest.mark.parametrize("dims", [(), (0,)])
def test_decoupled_call_is_eq9_on_a_dense_layer(backward, dims):
    p_f, p_b = 0.4, 0.3
    key = jax.random.key(12)
    h, params, delta = _dense_case()
    dense = lambda p, x: x @ p["w"] + p["b"]
    y, vjp = jax.vjp(
        lambda p, x: dropjax.decoupled_call(
            key, dense, p, x, p_f, p_b, backward=backward, broadcast_dims=dims
        ),
        params,
        h,
    )
    d_params, d_h = vjp(delta)
    # Explicit masks and Eq. 9, in numpy.
    hn, wn, bn, dn = (np.asarray(a) for a in (h, params["w"], params["b"], delta))
    m_f = keep_ref(key, h.shape, p_f, dims)
    eps_f = np.where(m_f, 1 / np.float32(1 - p_f), 0)
    if backward == "nested":
        m_b = nested_keep_ref(key, h.shape, p_f, p_b, dims)
        eps_b = np.where(m_b, 1 / np.float32(1 - p_f) / np.float32(1 - p_b), 0)
    else:
        eps_b = np.where(keep_ref(extra_key(key), h.shape, p_b, dims), 1 / np.float32(1 - p_b), 0)
    np.testing.assert_allclose(y, (hn * eps_f) @ wn + bn, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_params["w"], (hn * eps_b).T @ dn, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_params["b"], dn.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_h, (dn @ wn.T) * eps_b, rtol=1e-5, atol=1e-5)


def test_elementwise_form_differs_from_eq9_in_the_weight_gradient():
    # The reason decoupled_call exists: the matmul's VJP reuses the forward-masked input.
    key, (p_f, p_b) = jax.random.key(12), (0.4, 0.3)
    h, params, delta = _dense_case()
    dense = lambda p, x: x @ p["w"] + p["b"]
    _, vjp = jax.vjp(lambda p, x: dense(p, dropjax.decoupled_dropout(key, x, p_f, p_b)), params, h)
    d_params, d_h = vjp(delta)
    _, vjp_exact = jax.vjp(
        lambda p, x: dropjax.decoupled_call(key, dense, p, x, p_f, p_b), params, h
    )
    d_exact, d_h_exact = vjp_exact(delta)
    np.testing.assert_allclose(d_h, d_h_exact, rtol=1e-5, atol=1e-6)
    eps_f = np.where(keep_ref(key, h.shape, p_f), 1 / np.float32(1 - p_f), 0)
    np.testing.assert_allclose(
        d_params["w"], (np.asarray(h) * eps_f).T @ np.asarray(delta), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(d_params["w"], d_exact["w"])


def test_decoupled_call_uses_the_masks_of_decoupled_dropout():
    key, x, g = jax.random.key(4), jax.random.normal(jax.random.key(0), (30,)), jnp.ones(30)
    scale = lambda p, h: p * h
    for backward in ["nested", "independent"]:
        y1, g1 = vjp_of(
            lambda x: dropjax.decoupled_call(key, scale, 1.0, x, 0.3, 0.2, backward=backward), x, g
        )
        y2, g2 = vjp_of(
            lambda x: dropjax.decoupled_dropout(key, x, 0.3, 0.2, backward=backward), x, g
        )
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_allclose(g1, g2, rtol=1e-6)


def test_decoupled_call_differentiates_closed_over_values_under_jit():
    key = jax.random.key(1)
    h, params, delta = _dense_case()

    @jax.jit
    def loss(params, bias, h):
        fn = lambda p, x: x @ p["w"] + bias  # closes over a traced array
        return (dropjax.decoupled_call(key, fn, params, h, 0.2, 0.1) * delta).sum()

    d_bias = jax.grad(loss, argnums=1)(params, params["b"], h)
    np.testing.assert_allclose(d_bias, np.asarray(delta).sum(0), rtol=1e-5)


def test_transforms_jit_grad_vmap_keys_and_rates():
    h, params, delta = _dense_case()
    dense = lambda p, x: x @ p["w"] + p["b"]

    def loss(p, x, key, p_f, p_b):
        return (dropjax.decoupled_call(key, dense, p, x, p_f, p_b) * delta).sum()

    key = jax.random.key(0)
    eager = jax.grad(loss, argnums=(0, 1))(params, h, key, 0.3, 0.1)
    jitted = jax.jit(jax.grad(loss, argnums=(0, 1)))(
        params, h, key, jnp.float32(0.3), jnp.float32(0.1)
    )
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    keys = jax.random.split(key, 3)
    over_keys = jax.vmap(jax.grad(loss), (None, None, 0, None, None))(params, h, keys, 0.3, 0.1)
    for i in range(3):
        np.testing.assert_allclose(
            over_keys["w"][i], jax.grad(loss)(params, h, keys[i], 0.3, 0.1)["w"], rtol=1e-5
        )
    rates = jnp.array([0.1, 0.5])
    over_rates = jax.vmap(jax.grad(loss), (None, None, None, 0, None))(params, h, key, rates, 0.1)
    for i, r in enumerate([0.1, 0.5]):
        np.testing.assert_allclose(
            over_rates["w"][i], jax.grad(loss)(params, h, key, r, 0.1)["w"], rtol=1e-5
        )

    elem = lambda x, k: (dropjax.decoupled_dropout(k, x, 0.5, 0.3) ** 2).sum()
    batched = jax.vmap(jax.grad(elem), (None, 0))(h, keys)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], jax.grad(elem)(h, keys[i]))


def test_bf16_value_and_gradient_dtype():
    x = jnp.ones((8, 8), jnp.bfloat16)
    y, vjp = jax.vjp(lambda x: dropjax.augmented_dropout(jax.random.key(0), x, 0.2, 1e-4), x)
    assert y.dtype == jnp.bfloat16 and vjp(y)[0].dtype == jnp.bfloat16


def test_residuals_hold_the_key_not_a_mask(capsys):
    key, x = jax.random.key(0), jnp.arange(256.0)
    jax.ad_checkpoint.print_saved_residuals(
        lambda x: (dropjax.augmented_dropout(key, x, 0.5, 0.1) * x[::-1]).sum(), x
    )
    out = capsys.readouterr().out
    assert "key<fry>[]" in out and "bool[256]" not in out


def test_bad_inputs():
    key, x = jax.random.key(0), jnp.ones(4)
    with pytest.raises(ValueError, match="backward must be one of"):
        dropjax.decoupled_dropout(key, x, 0.1, 0.1, backward="both")
    with pytest.raises(ValueError, match="forward_rate.*1.2"):
        dropjax.decoupled_dropout(key, x, 1.2, 0.1)
    with pytest.raises(ValueError, match="backward_rate.*-1"):
        dropjax.augmented_dropout(key, x, 0.1, -1.0)
    with pytest.raises(TypeError, match="floating"):
        dropjax.forward_dropout(key, jnp.arange(4), 0.1)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        dropjax.backward_dropout(jax.random.split(key, 2), x, 0.1)
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        dropjax.decoupled_call(3, lambda p, h: h, None, x, 0.1, 0.1)
