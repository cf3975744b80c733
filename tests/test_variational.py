"""Variational dropout (Kingma et al. 2015; sparse VD, Molchanov et al. 2017).

References are built independently of the code under test: Monte Carlo over explicitly
sampled weights in numpy, numerical integration of the exact KL with scipy, numpy masks and
convolutions.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.stats
from flax import nnx
from jax.test_util import check_grads

import dropjax
import dropjax.linen as djnn
import dropjax.nnx as djx

K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al. 2017, Eq. 14
SAMPLES = 20_000


def _keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def _np_conv(x, w, stride=1, pad=(1, 1), dilation=1):
    """Channels-last 2-D cross-correlation in numpy: x (B,H,W,C), w (kh,kw,C,O)."""
    kh, kw = w.shape[:2]
    wd = np.zeros(((kh - 1) * dilation + 1, (kw - 1) * dilation + 1, *w.shape[2:]), w.dtype)
    wd[::dilation, ::dilation] = w
    xp = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, wd.shape[:2], axis=(1, 2))
    win = win[:, ::stride, ::stride]  # (B, H', W', C, kh', kw')
    return np.einsum("bijcuv,uvco->bijo", win, wd)


def _moments_match(samples, ref, tag):
    """Mean and variance of two sample sets agree within 5 standard errors."""
    n = samples.shape[0]
    m1, m2 = samples.mean(0), ref.mean(0)
    v1, v2 = samples.var(0), ref.var(0)
    se_mean = np.sqrt((v1 + v2) / n)
    assert np.all(np.abs(m1 - m2) < 5 * se_mean + 1e-6), f"{tag}: means differ"
    se_var = np.sqrt(2.0 / n) * np.sqrt(v1**2 + v2**2)
    assert np.all(np.abs(v1 - v2) < 5 * se_var + 1e-6), f"{tag}: variances differ"


# ------------------------------------------------------------------ local reparameterisation


@pytest.mark.parametrize("la_shape", [(5, 4), (4,), (5, 1)])
def test_dense_local_reparameterisation_matches_sampled_weights(la_shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5)).astype(np.float32)
    theta = rng.normal(size=(5, 4)).astype(np.float32)
    log_alpha = rng.uniform(-3.0, 1.0, size=la_shape).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    ys = jax.vmap(lambda k: dropjax.variational_dense(k, x, theta, log_alpha, bias))(_keys(SAMPLES))
    # Reference: sample whole weight matrices w ~ N(theta, alpha theta^2), then x w + b.
    alpha = np.broadcast_to(np.exp(log_alpha.astype(np.float64)), theta.shape)
    z = rng.standard_normal((SAMPLES, *theta.shape))
    w = theta + np.sqrt(alpha) * np.abs(theta) * z
    ref = np.einsum("bi,sio->sbo", x.astype(np.float64), w) + bias
    _moments_match(np.asarray(ys, np.float64), ref, f"dense {la_shape}")


def test_conv_local_reparameterisation_matches_sampled_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    theta = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    log_alpha = rng.uniform(-3.0, 1.0, size=theta.shape).astype(np.float32)
    ys = jax.vmap(lambda k: dropjax.variational_conv(k, x, theta, log_alpha))(_keys(SAMPLES))
    alpha = np.exp(log_alpha.astype(np.float64))
    ref = np.empty((SAMPLES, 2, 5, 5, 3))
    for s in range(0, SAMPLES, 2000):
        z = rng.standard_normal((2000, *theta.shape))
        w = theta + np.sqrt(alpha) * np.abs(theta) * z  # (S, kh, kw, C, O)
        xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))
        ref[s : s + 2000] = np.einsum("bijcuv,suvco->sbijo", win, w)
    _moments_match(np.asarray(ys, np.float64), ref, "conv")


@pytest.mark.parametrize("stride,dilation", [(2, 1), (1, 2)])
def test_conv_deterministic_masked_matches_numpy(stride, dilation):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 7, 3)).astype(np.float32)
    theta = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    log_alpha = rng.uniform(-2.0, 6.0, size=theta.shape).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    pad = ((dilation, dilation), (dilation, dilation))
    y = dropjax.variational_conv(
        None,
        x,
        theta,
        log_alpha,
        bias,
        strides=stride,
        padding=pad,
        kernel_dilation=dilation,
        threshold=3.0,
        deterministic=True,
    )
    masked = np.where(log_alpha > 3.0, 0.0, theta)
    assert 0 < (masked == 0).sum() < masked.size
    ref = _np_conv(x, masked, stride, pad[0], dilation) + bias
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-4)


def test_variational_dropout_moments_per_unit():
    log_alpha = jnp.log(jnp.array([0.01, 0.25, 1.0, 4.0], jnp.float32))
    x = jnp.array([[1.0, -2.0, 0.5, 3.0]], jnp.float32)
    ys = np.asarray(
        jax.vmap(lambda k: dropjax.variational_dropout(k, x, log_alpha))(_keys(SAMPLES)), np.float64
    )[:, 0]
    ref = np.asarray(x[0], np.float64) * (
        1.0
        + np.sqrt(np.exp(np.asarray(log_alpha, np.float64)))
        * np.random.default_rng(3).standard_normal((SAMPLES, 4))
    )
    _moments_match(ys, ref, "multiplicative")


# ------------------------------------------------------------------ KL terms


def _neg_kl_exact(log_alpha):
    """0.5 log alpha - E_{e ~ N(1, alpha)} log|e| (Molchanov et al. Eq. 13, without C)."""
    sd = np.sqrt(np.exp(log_alpha))
    f = lambda e: scipy.stats.norm.pdf(e, 1.0, sd) * np.log(abs(e))
    lo = scipy.integrate.quad(f, -np.inf, 0.0, limit=200)[0]
    hi = scipy.integrate.quad(f, 0.0, np.inf, limit=200)[0]
    return 0.5 * log_alpha - (lo + hi)


def test_kl_molchanov_matches_numerical_integration():
    grid = np.linspace(-8.0, 8.0, 33)
    exact = np.array([_neg_kl_exact(v) for v in grid])
    approx = -np.asarray(dropjax.kl_molchanov(jnp.asarray(grid, jnp.float32)), np.float64)
    residual = approx - exact  # the constant C of Eq. 13, if the fit is good
    assert np.abs(residual - residual.mean()).max() < 0.01
    # C = -k1 sends the KL to 0 as alpha -> inf, where 0.5 log a - E log|e| -> (gamma + log 2)/2.
    assert abs(residual[-1] + (np.euler_gamma + np.log(2.0)) / 2) < 2e-3
    # And the closed form of Eq. 14, in float64 numpy.
    ref = -(K1 / (1 + np.exp(-(K2 + K3 * grid))) - 0.5 * np.log1p(np.exp(-grid)) - K1)
    np.testing.assert_allclose(-approx, ref, rtol=1e-5, atol=1e-5)


def test_kl_kingma_matches_numerical_integration_below_one():
    grid = np.log(np.linspace(0.02, 1.0, 30))
    exact = np.array([_neg_kl_exact(v) for v in grid])
    approx = -np.asarray(dropjax.kl_kingma(jnp.asarray(grid, jnp.float32)), np.float64)
    residual = approx - exact
    assert np.abs(residual - residual.mean()).max() < 0.03
    # The differences between alphas (where the unknown constant cancels).
    np.testing.assert_allclose(np.diff(approx), np.diff(exact), atol=0.02)


@pytest.mark.parametrize("value", [-20.0, -10.0, 10.0, 20.0])
def test_gradients_finite_at_extreme_alphas(value):
    la = jnp.full((3, 2), value, jnp.float32)
    for kl in (dropjax.kl_molchanov, dropjax.kl_kingma):
        g = jax.grad(lambda v: kl(v).sum())(la)
        assert np.isfinite(np.asarray(g)).all()
    x = jnp.array([[1.0, 0.0, -2.0], [0.0, 0.0, 0.0]], jnp.float32)  # a zero row: variance 0
    theta = jnp.array([[0.5, -1.0], [0.0, 2.0], [1e-3, 0.3]], jnp.float32)
    key = jax.random.key(0)

    def loss(x, theta, la):
        y = dropjax.variational_dense(key, x, theta, la)
        return (y**2).sum() + dropjax.kl_molchanov(la).sum()

    for g in jax.grad(loss, argnums=(0, 1, 2))(x, theta, la):
        assert np.isfinite(np.asarray(g)).all()
    # The additive parameterisation at theta = 0 and extreme log sigma^2.
    f = lambda t, s: dropjax.kl_molchanov(dropjax.variational_log_alpha(t, s)).sum()
    for g in jax.grad(f, argnums=(0, 1))(theta, jnp.full((3, 2), value)):
        assert np.isfinite(np.asarray(g)).all()
    g = jax.grad(lambda v: dropjax.variational_dropout(key, x, v).sum())(jnp.float32(value))
    assert np.isfinite(float(g))


def test_log_alpha_additive_and_clipped():
    theta = np.array([1.0, 0.1, 0.0, -3.0], np.float32)
    log_sigma2 = np.array([-2.0, -30.0, -5.0, 0.0], np.float32)
    la = dropjax.variational_log_alpha(theta, log_sigma2)
    ref = np.clip(log_sigma2 - np.log(theta.astype(np.float64) ** 2 + 1e-8), -8, 8)
    np.testing.assert_allclose(np.asarray(la), ref, rtol=1e-6)
    raw = dropjax.variational_log_alpha(theta, log_sigma2, clip=None)
    assert float(raw[1]) < -8 and float(raw[2]) > 8


# ------------------------------------------------------------------ transforms, errors, dtype


def test_jit_vmap_grad():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    la = jnp.asarray(rng.uniform(-3, 1, size=(5, 3)), jnp.float32)
    key = jax.random.key(7)
    op = lambda k, x, t, a: dropjax.variational_dense(k, x, t, a)
    np.testing.assert_array_equal(np.asarray(jax.jit(op)(key, x, theta, la)), op(key, x, theta, la))
    keys = _keys(3, 1)
    batched = jax.vmap(op, (0, None, None, None))(keys, x, theta, la)
    for i in range(3):
        np.testing.assert_allclose(batched[i], op(keys[i], x, theta, la), rtol=1e-6, atol=1e-6)
    check_grads(lambda x, t, a: op(key, x, t, a), (x, theta, la), order=1, modes=["rev"])
    xc = jnp.asarray(rng.normal(size=(1, 4, 4, 2)), jnp.float32)
    tc = jnp.asarray(rng.normal(size=(3, 3, 2, 2)), jnp.float32)
    conv = lambda x, t, a: dropjax.variational_conv(key, x, t, a)
    check_grads(conv, (xc, tc, jnp.float32(-1.0)), order=1, modes=["rev"], atol=5e-2, rtol=5e-2)
    check_grads(dropjax.kl_molchanov, (la,), order=1, modes=["rev"])


def test_bf16_keeps_dtype_and_errors_name_the_fix():
    x = jnp.ones((2, 3), jnp.bfloat16)
    w = jnp.ones((3, 2), jnp.float32)
    assert dropjax.variational_dense(jax.random.key(0), x, w, -1.0).dtype == jnp.bfloat16
    assert dropjax.variational_dropout(jax.random.key(0), x, -1.0).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="broadcast"):
        dropjax.variational_dense(jax.random.key(0), x, w, jnp.zeros((2, 2)))
    with pytest.raises(TypeError, match="floating"):
        dropjax.variational_dense(jax.random.key(0), x, jnp.ones((3, 2), jnp.int32), 0.0)
    with pytest.raises(TypeError, match="jax.random.key"):
        dropjax.variational_dense(0, x, w, 0.0)
    with pytest.raises(ValueError, match="PRNG key"):
        dropjax.variational_dense(None, x, w, 0.0)


# ------------------------------------------------------------------ modules


def _layer_params(rng, fan_in, fan_out):
    theta = rng.normal(size=(fan_in, fan_out)).astype(np.float32)
    log_sigma2 = rng.uniform(-6.0, 4.0, size=theta.shape).astype(np.float32)
    return theta, log_sigma2, rng.normal(size=fan_out).astype(np.float32)


def _np_pruned(theta, log_sigma2, threshold=3.0):
    la = np.clip(log_sigma2 - np.log(theta.astype(np.float64) ** 2 + 1e-8), -8, 8)
    return np.where(la > threshold, 0.0, theta), la


def _np_kl(la):
    return float(np.sum(K1 - K1 / (1 + np.exp(-(K2 + K3 * la))) + 0.5 * np.log1p(np.exp(-la))))


def test_linen_dense_eval_masks_and_sows_kl():
    rng = np.random.default_rng(5)
    theta, ls2, bias = _layer_params(rng, 6, 4)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    layer = djnn.VariationalDense(4)
    v = {"params": {"kernel": theta, "log_sigma2": ls2, "bias": bias}}
    y, state = layer.apply(v, x, deterministic=True, mutable=["losses"])
    pruned, la = _np_pruned(theta, ls2)
    assert 0 < (pruned == 0).sum() < pruned.size
    np.testing.assert_allclose(np.asarray(y), x @ pruned + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(djnn.total_kl(state["losses"])), _np_kl(la), rtol=1e-4)
    # Training: the functional op with the key given at call time, unmasked.
    key = jax.random.key(9)
    y = layer.apply(v, x, deterministic=False, rng=key)
    ref = dropjax.variational_dense(key, x, theta, jnp.asarray(la, jnp.float32), bias)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # The key comes from the 'dropout' stream: two streams differ, one stream repeats.
    a, b, c = (
        layer.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(s)})
        for s in (0, 1, 0)
    )
    assert not np.allclose(a, b) and np.array_equal(a, c)
    s = djnn.sparsity(v)
    assert s["total"]["nonzero"] == int((pruned != 0).sum()) and s["total"]["weights"] == 24
    np.testing.assert_allclose(s["total"]["compression"], 24 / (pruned != 0).sum())


def test_linen_conv_eval_masks_and_model_kl_sums_layers():
    rng = np.random.default_rng(6)
    theta = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    ls2 = rng.uniform(-6.0, 4.0, size=theta.shape).astype(np.float32)
    x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool):
            h = djnn.VariationalConv(3, (3, 3), use_bias=False)(x, not train)
            return djnn.VariationalDense(2)(h.reshape(h.shape[0], -1), not train)

    net = Net()
    # Only the parameters: init also returns the KL it sowed, which apply would extend.
    init = jax.jit(lambda k: net.init(k, x, train=False)["params"])
    v = {"params": jax.tree.map(np.asarray, init(jax.random.key(0)))}
    v["params"]["VariationalConv_0"] = {"kernel": theta, "log_sigma2": ls2}
    h = np.asarray(
        djnn.VariationalConv(3, (3, 3), use_bias=False).apply(
            {"params": v["params"]["VariationalConv_0"]}, x, deterministic=True
        )
    )
    pruned, la_conv = _np_pruned(theta, ls2)
    np.testing.assert_allclose(h, _np_conv(x, pruned), rtol=1e-4, atol=1e-4)
    apply = jax.jit(
        lambda v: net.apply(v, x, True, rngs={"dropout": jax.random.key(1)}, mutable=["losses"])
    )
    _, state = apply(v)
    dense = v["params"]["VariationalDense_0"]
    _, la_dense = _np_pruned(dense["kernel"], dense["log_sigma2"])
    expected = _np_kl(la_conv) + _np_kl(la_dense)
    np.testing.assert_allclose(float(djnn.total_kl(state["losses"])), expected, rtol=1e-4)
    s = djnn.sparsity(v["params"], threshold=3.0)
    assert set(s["layers"]) == {"VariationalConv_0", "VariationalDense_0"}
    assert s["layers"]["VariationalConv_0"]["nonzero"] == int((pruned != 0).sum())


def test_nnx_dense_and_conv_match_functional_ops_and_numpy():
    rng = np.random.default_rng(7)
    theta, ls2, bias = _layer_params(rng, 6, 4)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    layer = djx.VariationalDense(6, 4, rngs=nnx.Rngs(0, dropout=1))
    layer.kernel[...] = jnp.asarray(theta)
    layer.log_sigma2[...] = jnp.asarray(ls2)
    layer.bias[...] = jnp.asarray(bias)
    pruned, la = _np_pruned(theta, ls2)
    y = layer(x, deterministic=True)
    np.testing.assert_allclose(np.asarray(y), x @ pruned + bias, rtol=1e-5, atol=1e-5)
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(y))
    layer.train()
    key = jax.random.key(3)
    ref = dropjax.variational_dense(key, x, theta, jnp.asarray(la, jnp.float32), bias)
    np.testing.assert_allclose(np.asarray(layer(x, rngs=key)), ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(layer(x), layer(x))  # the stream advances
    np.testing.assert_allclose(float(djx.total_kl(layer)), _np_kl(la), rtol=1e-4)
    s = djx.sparsity(layer)
    assert s["total"]["nonzero"] == int((pruned != 0).sum())
    conv = djx.VariationalConv(2, 3, (3, 3), strides=2, rngs=nnx.Rngs(0))
    xc = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    got = conv(xc, deterministic=True)
    ref = _np_conv(xc, np.asarray(conv.kernel[...]), stride=2, pad=(0, 1))  # SAME at stride 2
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-4)


def test_nnx_jit_grad_of_elbo():
    model = djx.VariationalDense(4, 2, rngs=nnx.Rngs(0, dropout=1))
    x, y = jnp.ones((8, 4)), jnp.zeros((8, 2))

    @nnx.jit
    def step(model):
        def loss(m):
            return ((m(x) - y) ** 2).mean() + djx.total_kl(m) / 1000.0

        return nnx.grad(loss)(model)

    grads = step(model)
    for g in jax.tree.leaves(nnx.to_pure_dict(grads)):
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0


def test_sparse_vd_prunes_irrelevant_inputs():
    """Behaviour: on y = x0 - 2 x1 + noise, the ELBO prunes the 8 irrelevant inputs."""
    rng = np.random.default_rng(8)
    n = 128
    x = rng.normal(size=(n, 10)).astype(np.float32)
    y = (x[:, 0] - 2.0 * x[:, 1] + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]
    layer = djnn.VariationalDense(1, use_bias=False)
    params = layer.init(jax.random.key(0), x, deterministic=True)["params"]

    def loss(p, key):
        out, st = layer.apply({"params": p}, x, deterministic=False, rng=key, mutable=["losses"])
        nll = 0.5 * jnp.sum((out - y) ** 2) / 0.5**2  # Gaussian likelihood, sd 0.5
        return (nll + djnn.total_kl(st["losses"])) / n

    tx = optax.adam(optax.cosine_decay_schedule(1e-2, 2000))  # decay: theta settles at 0

    @jax.jit
    def train(params):
        def body(carry, key):
            p, s = carry
            g = jax.grad(loss)(p, key)
            with jax.numpy_dtype_promotion("standard"):  # optax's decay ** int32 count
                u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(body, (params, tx.init(params)), _keys(2000, 1))
        return params

    params = train(params)
    la = np.asarray(dropjax.variational_log_alpha(params["kernel"], params["log_sigma2"]))[:, 0]
    assert (la[2:] > 3.0).all() and (la[:2] < 0.0).all()
    assert djnn.sparsity(params)["total"]["nonzero"] == 2
