"""Dropout variants: statistics, edges, transforms, and semantics against explicit references.

References are rebuilt from each op's documented key use with raw bits (``keep_ref``), raw
normal/uniform draws and plain numpy, never by calling the op under test a second way.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.special import erfc

import dropjax
from dropjax._src.variants import _dropblock_gamma
from tests.reference import assert_sum_close, bits_ref, keep_ref, sigma_bound

KEY = jax.random.key(0)


def _normal(shape, seed):
    """Standard-normal float32 test input, from numpy (no per-shape JAX compilation)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


W = _normal((6, 5), 99)
X = _normal((8, 30), 1)  # the elementwise test input


def _logit(rate):
    return jnp.log(rate) - jnp.log1p(-rate)


# name -> (op(key, x, rate), input shape). concrete_dropout gets logit(rate).
OPS = {
    "random_rate": (lambda k, x, r: dropjax.random_rate_dropout(k, x, r, per_example=True), (4, 6)),
    "gaussian": (dropjax.gaussian_dropout, (4, 6)),
    "alpha": (dropjax.alpha_dropout, (4, 6)),
    "spatial": (dropjax.spatial_dropout, (3, 4, 4, 5)),
    "dropblock": (lambda k, x, r: dropjax.dropblock(k, x, r, block_size=2), (3, 5, 5, 2)),
    "drop_path": (dropjax.drop_path, (5, 3, 2)),
    "dropconnect": (dropjax.dropconnect, (6, 5)),
    "dense": (lambda k, x, r: dropjax.dropconnect_dense(k, x, W.astype(x.dtype), rate=r), (4, 6)),
    "dense_per_example": (
        lambda k, x, r: dropjax.dropconnect_dense(
            k, x, W.astype(x.dtype), rate=r, per_example=True
        ),
        (4, 6),
    ),
    "concrete": (lambda k, x, r: dropjax.concrete_dropout(k, x, _logit(r)), (4, 6)),
}
RATED = [n for n in OPS if n != "concrete"]  # ops whose third argument is a drop rate
ZERO_AT_ONE = ["alpha", "spatial", "dropblock", "drop_path", "dropconnect", "dense"]
ZERO_AT_ONE += ["dense_per_example"]


def _input(name, dtype=jnp.float32):
    return _normal(OPS[name][1], 7).astype(dtype)


# ---------------------------------------------------------------- transforms, all ops


@pytest.mark.parametrize("name", OPS)
def test_jit_equals_eager(name):
    """Two programs (one fused, one op by op): the same entries dropped (dropped and kept
    values are far more than 2 ulps apart) and the values within 2 float32 ulps, since a
    compiler may fuse ``a * x + b`` into one rounding where eager rounds twice."""
    op, x = OPS[name][0], _input(name)
    eager = op(KEY, x, 0.3)
    jitted = jax.jit(lambda k, x: op(k, x, 0.3))(KEY, x)
    np.testing.assert_array_max_ulp(np.asarray(jitted), np.asarray(eager), maxulp=2)


@pytest.mark.parametrize("name", OPS)
def test_vmap_over_keys_equals_python_loop(name):
    op, x = OPS[name][0], _input(name)
    keys = jax.random.split(jax.random.key(3), 3)
    batched = jax.vmap(lambda k: op(k, x, 0.4))(keys)
    looped = jnp.stack([op(k, x, 0.4) for k in keys])
    if name.startswith("dense"):  # a vmapped matmul sums in another order than a loop's
        magnitude = np.abs(x) @ np.abs(W) / (1 - 0.4)  # bounds |x| @ |masked, scaled W|
        assert_sum_close(batched, np.broadcast_to(looped, batched.shape), magnitude, 6 + 2)
    else:  # elementwise: the same program on the same shapes, bit for bit
        np.testing.assert_array_equal(batched, looped)
    assert not np.array_equal(looped[0], looped[1])  # the keys matter


@pytest.mark.parametrize("name", OPS)
def test_traced_rate_does_not_recompile(name):
    op, x = OPS[name][0], _input(name)
    traces = []

    @jax.jit
    def f(key, x, rate):
        traces.append(1)
        return op(key, x, rate)

    a = f(KEY, x, jnp.float32(0.2))
    b = f(KEY, x, jnp.float32(0.7))
    assert len(traces) == 1
    assert np.isfinite(np.asarray(a)).all() and np.isfinite(np.asarray(b)).all()
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", OPS)
def test_gradient_checks(name):
    op, x = OPS[name][0], _input(name)
    # Linear in x for a fixed key: a large step has no truncation error, less cancellation.
    check_grads(jax.jit(lambda x: op(KEY, x, 0.3)), (x,), order=1, modes=["rev"], eps=1e-2)


@pytest.mark.parametrize("name", OPS)
def test_bf16_in_bf16_out(name):
    op, x = OPS[name][0], _input(name, jnp.bfloat16)
    y = op(KEY, x, 0.3)
    assert y.dtype == jnp.bfloat16
    if name in ("spatial", "drop_path", "dropconnect"):
        return  # plain dropout with broadcast_dims: its bf16 gradient is tested in test_ops
    g = jax.jit(jax.grad(lambda x: op(KEY, x, 0.3).astype(jnp.float32).sum()))(x)
    assert g.dtype == jnp.bfloat16


@pytest.mark.parametrize("name", OPS)
def test_bad_key_and_input_name_the_fix(name):
    op, x = OPS[name][0], _input(name)
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        op(3, x, 0.3)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        op(jax.random.split(KEY, 2), x, 0.3)
    with pytest.raises(TypeError, match="floating"):
        op(KEY, jnp.ones(OPS[name][1], jnp.int32), 0.3)


@pytest.mark.parametrize("name", RATED)
@pytest.mark.parametrize("rate", [1.5, -0.2])
def test_concrete_rate_out_of_range_raises(name, rate):
    op, x = OPS[name][0], _input(name)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        op(KEY, x, rate)


@pytest.mark.parametrize("name", RATED)
def test_rate_zero_is_identity(name):
    op, x = OPS[name][0], _input(name)
    if name.startswith("dense"):  # another matmul than x @ W: equal up to float32 sums
        expected, magnitude = np.asarray(x @ W), np.abs(x) @ np.abs(W)
        assert_sum_close(op(KEY, x, 0.0), expected, magnitude, 6 + 2)
        assert_sum_close(jax.jit(op)(KEY, x, jnp.float32(0.0)), expected, magnitude, 6 + 2)
    else:
        np.testing.assert_array_equal(op(KEY, x, 0.0), x)
        np.testing.assert_array_equal(jax.jit(op)(KEY, x, jnp.float32(0.0)), x)  # traced 0
    if not name.startswith("dense"):
        assert op(None, x, 0.0) is x  # concrete 0 needs no key


@pytest.mark.parametrize("name", ZERO_AT_ONE)
@pytest.mark.parametrize("traced", [False, True])
def test_rate_one_gives_zeros_with_finite_zero_gradient(name, traced):
    op, x = OPS[name][0], _input(name)
    f = lambda x, r: op(KEY, x, r).sum()
    if traced:
        value, grad = jax.jit(jax.value_and_grad(f))(x, jnp.float32(1.0))
    else:
        value, grad = jax.jit(jax.value_and_grad(lambda x: f(x, 1.0)))(x)  # 1.0 stays concrete
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros(x.shape))


# ---------------------------------------------------------------- random_rate_dropout


def _random_rate_ref(key, x, max_rate, per_example, broadcast_dims=()):
    """Documented key use: split; rho = max_rate * uniform(rate_key); mask bits from mask_key."""
    rate_key, mask_key = jax.random.split(key)
    shape = (x.shape[0],) if per_example else ()
    rho = np.float32(max_rate) * np.asarray(jax.random.uniform(rate_key, shape))
    rho = rho.reshape((-1,) + (1,) * (x.ndim - 1)) if per_example else rho
    drawn = tuple(1 if i in broadcast_dims else s for i, s in enumerate(x.shape))
    bits = bits_ref(mask_key, drawn).astype(np.uint64)  # the documented keep_mask bits
    keep = bits >= np.floor(rho.astype(np.float64) * 2.0**32)
    return np.where(keep, np.asarray(x, np.float64) / (1.0 - rho.astype(np.float64)), 0.0)


@pytest.mark.parametrize(
    "max_rate, per_example, dims", [(0.3, False, ()), (0.9, False, ()), (0.5, True, ()),
                                    (0.9, True, ()), (0.6, True, (1,))]
)  # fmt: skip
def test_random_rate_matches_documented_key_use(max_rate, per_example, dims):
    x = X
    key = jax.random.key(11)
    got = dropjax.random_rate_dropout(key, x, max_rate, per_example=per_example,
                                      broadcast_dims=dims)  # fmt: skip
    expected = _random_rate_ref(key, x, max_rate, per_example, dims)
    np.testing.assert_allclose(got, expected, rtol=2e-6)
    if dims:
        assert (np.asarray(got) == 0).all(axis=1).any()  # a feature dropped for the whole row


def _kept_fraction_std(max_rate, n_units):
    """Std of the kept fraction of n_units with one rho ~ U(0, m): uniform + binomial parts."""
    m = max_rate
    return np.sqrt(m**2 / 12 + (m / 2 - m**2 / 3) / n_units)


@pytest.mark.parametrize("max_rate", [0.2, 0.6, 1.0])
def test_random_rate_statistics_per_example(max_rate):
    b, n = 20_000, 10
    y = np.asarray(dropjax.random_rate_dropout(jax.random.key(2), jnp.ones((b, n)), max_rate,
                                               per_example=True))  # fmt: skip
    kept = (y != 0).mean(axis=1)
    sd = _kept_fraction_std(max_rate, n)
    assert abs(kept.mean() - (1 - max_rate / 2)) < 4 * sd / np.sqrt(b)
    # A rate per example spreads the kept fraction far beyond a binomial's spread.
    assert abs(kept.std() / sd - 1) < 0.05
    if max_rate < 1:  # E[y | rho] = 1, so Var(mean y) = (E[1/(1-rho)] - 1) / (b n).
        var_y = -np.log1p(-max_rate) / max_rate - 1
        assert abs(y.mean() - 1) < 4 * np.sqrt(var_y / (b * n))


def test_random_rate_one_rho_per_call():
    keys = jax.random.split(jax.random.key(5), 2000)
    y = np.asarray(jax.vmap(lambda k: dropjax.random_rate_dropout(k, jnp.ones(100), 0.6))(keys))
    kept = (y != 0).mean(axis=1)
    assert abs(kept.std() / _kept_fraction_std(0.6, 100) - 1) < 0.1
    # Within a call every kept unit has the same scale 1 / (1 - rho).
    assert all(len(np.unique(row[row != 0])) <= 1 for row in y)


def test_random_rate_bad_arguments():
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="broadcast_dims"):
        dropjax.random_rate_dropout(KEY, x, 0.5, per_example=True, broadcast_dims=(0,))
    with pytest.raises(ValueError, match="scalar"):
        dropjax.random_rate_dropout(KEY, x, jnp.full(3, 0.5))
    with pytest.raises(ValueError, match=r"max_rate is the probability"):
        dropjax.random_rate_dropout(KEY, x, 1.2)


def test_locked_dropout_is_dropout_with_time_broadcast():
    x = jnp.ones((3, 20, 8))  # (batch, time, features)
    key = jax.random.key(4)
    y = np.asarray(dropjax.dropout(key, x, 0.5, broadcast_dims=(1,)))
    expected = np.where(keep_ref(key, x.shape, 0.5, (1,)), 2.0, 0.0)
    np.testing.assert_array_equal(y, expected)
    assert (y == y[:, :1]).all()  # the same mask at every time step
    assert not (y == y[:1]).all()  # but not across sequences
    z = np.asarray(dropjax.random_rate_dropout(key, x, 0.8, per_example=True,
                                               broadcast_dims=(1,)))  # fmt: skip
    assert (z == z[:, :1]).all()


# ---------------------------------------------------------------- gaussian_dropout


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_gaussian_matches_normal_draw(rate):
    x = X
    key = jax.random.key(6)
    eps = np.asarray(jax.random.normal(key, x.shape), np.float64)
    expected = np.asarray(x, np.float64) * (1 + np.sqrt(rate / (1 - rate)) * eps)
    np.testing.assert_allclose(dropjax.gaussian_dropout(key, x, rate), expected,
                               rtol=1e-5, atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_gaussian_statistics(rate):
    n = 100_000
    y = np.asarray(dropjax.gaussian_dropout(jax.random.key(2), jnp.ones(n), rate), np.float64)
    var = rate / (1 - rate)
    assert abs(y.mean() - 1) < 4 * np.sqrt(var / n)
    assert abs(y.var() - var) < 4 * np.sqrt(2 * var**2 / n)
    e = y - 1
    assert abs(np.corrcoef(e[:-1], e[1:])[0, 1]) < 4 / np.sqrt(n)


def test_gaussian_rate_one():
    x = jnp.ones(4)
    with pytest.raises(ValueError, match="infinite"):
        dropjax.gaussian_dropout(KEY, x, 1.0)
    assert np.isnan(np.asarray(jax.jit(dropjax.gaussian_dropout)(KEY, x, 1.0))).all()


# ---------------------------------------------------------------- alpha_dropout


def _selu_constants():
    """alpha_01 and lambda_01 re-derived from Klambauer et al.'s closed forms (Eq. 14)."""
    e1, e2, r = erfc(1 / np.sqrt(2)), erfc(np.sqrt(2)), np.sqrt(np.e)
    alpha = -np.sqrt(2 / np.pi) / (e1 * r - 1)
    inner = 2 * e2 * np.e**2 + np.pi * e1**2 * np.e - 2 * (2 + np.pi) * e1 * r + np.pi + 2
    lam = (1 - e1 * r) * np.sqrt(2 * np.pi) / np.sqrt(inner)
    return alpha, lam


def _alpha_affine(q):
    alpha, lam = _selu_constants()
    ap = -lam * alpha
    a = ((1 - q) * (1 + q * ap**2)) ** -0.5
    return ap, a, -a * ap * q


def test_selu_constants_match_jax():
    alpha, lam = _selu_constants()
    np.testing.assert_allclose(float(jax.nn.selu(jnp.float32(-100.0))), -lam * alpha, rtol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_alpha_matches_explicit_mask(rate):
    x = X
    key = jax.random.key(8)
    ap, a, b = _alpha_affine(rate)
    keep = keep_ref(key, x.shape, rate)
    expected = np.where(keep, a * np.asarray(x, np.float64) + b, a * ap + b)
    np.testing.assert_allclose(dropjax.alpha_dropout(key, x, rate), expected, rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    # Gradient: a where kept, 0 where dropped.
    g = jax.jit(jax.grad(lambda x: dropjax.alpha_dropout(key, x, rate).sum()))(x)
    np.testing.assert_allclose(g, np.where(keep, a, 0.0), rtol=1e-6)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.8])
def test_alpha_keeps_standard_normal_standardised(rate):
    n = 100_000
    x = _normal((n,), 3)
    y = np.asarray(dropjax.alpha_dropout(jax.random.key(4), x, rate), np.float64)
    ap, a, b = _alpha_affine(rate)
    dropped = np.abs(y - (a * ap + b)) < 1e-5
    assert abs(dropped.mean() - rate) < sigma_bound(n, rate)
    both = (dropped[:-1] & dropped[1:]).mean()  # neighbours dropped independently
    assert abs(both - rate**2) < sigma_bound(n, rate**2)
    assert abs(y.mean()) < 4 / np.sqrt(n)
    assert abs(y.var() - 1) < 4 * (y**2).std() / np.sqrt(n)


# ---------------------------------------------------------------- spatial_dropout


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "unbatched"])
def test_spatial_matches_explicit_mask(layout):
    if layout == "nhwc":
        x, kw, shared = _normal((4, 3, 5, 6), 9), {}, (1, 2)
    elif layout == "nchw":
        x, kw, shared = _normal((4, 6, 3, 5), 9), {"channel_axis": 1}, (2, 3)
    else:
        x, kw, shared = _normal((3, 5, 6), 9), {"batch_axis": None}, (0, 1)
    y = np.asarray(dropjax.spatial_dropout(jax.random.key(1), x, 0.5, **kw))
    keep = keep_ref(jax.random.key(1), x.shape, 0.5, shared)
    np.testing.assert_allclose(y, np.where(keep, 2 * np.asarray(x), 0.0), rtol=1e-6)
    zero = y == 0
    assert (zero == zero.all(axis=shared, keepdims=True)).all()  # whole maps dropped
    assert 0 < zero.mean() < 1


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_spatial_statistics(rate):
    maps = 100_000
    y = np.asarray(dropjax.spatial_dropout(jax.random.key(2), jnp.ones((1000, 2, 2, 100)), rate))
    kept = y[:, 0, 0, :] != 0
    assert ((y != 0) == kept[:, None, None, :]).all()
    assert abs(kept.mean() - (1 - rate)) < sigma_bound(maps, 1 - rate)
    assert abs(y.mean() - 1) < 4 * np.sqrt(rate / (1 - rate) / maps)
    both = (kept[:, :-1] & kept[:, 1:]).mean()  # neighbouring channels independent
    assert abs(both - (1 - rate) ** 2) < sigma_bound(maps, (1 - rate) ** 2)


def test_spatial_axes_are_named_and_checked():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match="distinct"):
        dropjax.spatial_dropout(KEY, x, 0.5, channel_axis=0)
    with pytest.raises(ValueError, match="out of range"):
        dropjax.spatial_dropout(KEY, x, 0.5, channel_axis=3)
    with pytest.raises(TypeError, match="integer axis"):
        dropjax.spatial_dropout(KEY, x, 0.5, channel_axis="c")


# ---------------------------------------------------------------- drop_path


@pytest.mark.parametrize("batch_axis", [0, 1, None])
def test_drop_path_matches_explicit_mask(batch_axis):
    x = _normal((20, 6, 3), 1)
    shared = tuple(i for i in range(3) if i != batch_axis)
    y = np.asarray(dropjax.drop_path(jax.random.key(2), x, 0.25, batch_axis=batch_axis))
    keep = keep_ref(jax.random.key(2), x.shape, 0.25, shared)
    np.testing.assert_allclose(y, np.where(keep, np.asarray(x) / np.float32(0.75), 0.0), rtol=1e-6)
    zero = y == 0
    assert (zero == zero.all(axis=shared, keepdims=True)).all()  # examples all-zero or kept


@pytest.mark.parametrize("rate", [0.05, 0.5, 0.9])
def test_drop_path_statistics(rate):
    n = 100_000
    y = np.asarray(dropjax.drop_path(jax.random.key(3), jnp.ones((n, 2)), rate))
    kept = y[:, 0] != 0
    assert (y[kept] == np.float32(1) / (np.float32(1) - np.float32(rate))).all()
    assert (y[~kept] == 0).all()
    assert abs(kept.mean() - (1 - rate)) < sigma_bound(n, 1 - rate)
    assert abs(y.mean() - 1) < 4 * np.sqrt(rate / (1 - rate) / n)


def test_drop_path_on_a_residual_branch():
    x = _normal((8, 4), 1)
    key = jax.random.key(5)
    f = lambda x: (x + dropjax.drop_path(key, jnp.sin(x), 0.5)).sum()
    keep = keep_ref(key, x.shape, 0.5, (1,))
    expected = 1 + np.where(keep, 2 * np.cos(np.asarray(x)), 0.0)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), expected, rtol=1e-6)


# ---------------------------------------------------------------- dropconnect


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropconnect_statistics(rate):
    n = 100_000
    w = np.asarray(dropjax.dropconnect(jax.random.key(2), jnp.ones((n // 100, 100)), rate))
    kept = w != 0
    assert abs(kept.mean() - (1 - rate)) < sigma_bound(n, 1 - rate)
    assert abs(w.mean() - 1) < 4 * np.sqrt(rate / (1 - rate) / n)
    flat = kept.ravel()
    both = (flat[:-1] & flat[1:]).mean()
    assert abs(both - (1 - rate) ** 2) < sigma_bound(n, (1 - rate) ** 2)


@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("rate", [0.3, 0.8])
def test_dropconnect_dense_matches_explicit_mask(per_example, rate):
    key = jax.random.key(12)
    x = _normal((4, 6), 1)
    b = jnp.arange(5.0)
    y = dropjax.dropconnect_dense(key, x, W, b, rate, per_example=per_example)
    xn, wn = np.asarray(x, np.float64), np.asarray(W, np.float64)
    if per_example:
        keep = keep_ref(key, (4,) + W.shape, rate)
        expected = np.einsum("ni,nio->no", xn, np.where(keep, wn / (1 - rate), 0.0))
    else:
        keep = keep_ref(key, W.shape, rate)
        expected = xn @ np.where(keep, wn / (1 - rate), 0.0)
        w_grad = jax.jit(jax.grad(lambda w: dropjax.dropconnect_dense(key, x, w, b, rate).sum()))(W)
        np.testing.assert_allclose(w_grad, keep * (xn.sum(0)[:, None] / (1 - rate)), rtol=1e-5)
    np.testing.assert_allclose(y, expected + np.arange(5.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("per_example", [False, True])
def test_dropconnect_dense_mask_sharing_and_unbiasedness(per_example):
    n = 20_000
    x = jnp.broadcast_to(jnp.arange(1.0, 7.0), (n, 6))
    y = np.asarray(dropjax.dropconnect_dense(jax.random.key(4), x, W, rate=0.5,
                                             per_example=per_example))  # fmt: skip
    if not per_example:  # one mask per call: identical rows give identical outputs
        assert (y == y[0]).all()
        return
    assert len(np.unique(y[:, 0])) > 10  # one mask per example
    target = np.arange(1.0, 7.0) @ np.asarray(W, np.float64)
    assert (np.abs(y.mean(0) - target) < 4 * y.std(0) / np.sqrt(n)).all()


def test_dropconnect_dense_bad_arguments():
    x = jnp.ones((2, 6))
    with pytest.raises(TypeError, match=r"rate=0\.5"):
        dropjax.dropconnect_dense(KEY, x, W)
    with pytest.raises(ValueError, match="must match"):
        dropjax.dropconnect_dense(KEY, jnp.ones((2, 5)), W, rate=0.5)
    with pytest.raises(TypeError, match=r"astype"):
        dropjax.dropconnect_dense(KEY, x.astype(jnp.bfloat16), W, rate=0.5)
    with pytest.raises(ValueError, match=r"b must have shape \(5,\)"):
        dropjax.dropconnect_dense(KEY, x, W, jnp.ones(6), 0.5)
    with pytest.raises(ValueError, match="matrix"):
        dropjax.dropconnect_dense(KEY, x, jnp.ones(6), rate=0.5)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        dropjax.dropconnect_dense(KEY, jnp.ones(6), W, rate=0.5, per_example=True)


# ---------------------------------------------------------------- dropblock


def _dropblock_ref(key, x, rate, block, share_channels=False):
    """NHWC reference: centres from keep_ref on the valid grid, blocks painted by loops."""
    n, h, w, c = x.shape
    bh, bw = block
    gamma = _dropblock_gamma((h, w), (bh, bw), rate)
    grid = (n, h - bh + 1, w - bw + 1, 1 if share_channels else c)
    sampled = ~keep_ref(key, grid, gamma)
    dropped = np.zeros((n, h, w, grid[3]), bool)
    for i, r, s, ch in zip(*np.nonzero(sampled), strict=True):
        dropped[i, r : r + bh, s : s + bw, ch] = True
    dropped = np.broadcast_to(dropped, x.shape)
    kept = (~dropped).mean(axis=(1, 2, 3), keepdims=True)
    scale = np.where(kept > 0, 1 / np.where(kept > 0, kept, 1), 0.0)
    return np.where(dropped, 0.0, np.asarray(x, np.float64) * scale)


@pytest.mark.parametrize(
    "sizes, blocks", [((6, 5), (3, 2)), ((4, 4), (4, 4)), ((7, 3), (1, 3)), ((9,), (4,))]
)
@pytest.mark.parametrize("rate", [0.05, 0.4, 0.9])
def test_dropblock_gamma_solves_the_exact_coverage_equation(sizes, blocks, rate):
    gamma = _dropblock_gamma(sizes, blocks, rate)
    # Brute force: count, for every position, the valid block positions that cover it.
    cover = np.zeros(sizes)
    for start in np.ndindex(*[s - b + 1 for s, b in zip(sizes, blocks, strict=True)]):
        cover[tuple(slice(r, r + b) for r, b in zip(start, blocks, strict=True))] += 1
    np.testing.assert_allclose(np.mean(1 - (1 - gamma) ** cover), rate, rtol=1e-9)
    traced = jax.jit(lambda r: _dropblock_gamma(sizes, blocks, r))(jnp.float32(rate))
    np.testing.assert_allclose(float(traced), gamma, rtol=1e-5)


@pytest.mark.parametrize("share", [False, True])
@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_dropblock_matches_explicit_reference(share, rate):
    x = _normal((3, 7, 6, 2), 1)
    key = jax.random.key(13)
    y = dropjax.dropblock(key, x, rate, block_size=3, share_channels=share)
    np.testing.assert_allclose(y, _dropblock_ref(key, x, rate, (3, 3), share), rtol=1e-6)


def test_dropblock_nchw_and_rectangular_blocks():
    x = _normal((2, 3, 8, 6), 1)  # NCHW
    key = jax.random.key(14)
    y = dropjax.dropblock(key, x, 0.4, block_size=(2, 3), channel_axis=1)
    # The centre grid is drawn in NCHW order: move it to NHWC for the reference.
    gamma = _dropblock_gamma((8, 6), (2, 3), 0.4)
    sampled = np.moveaxis(~keep_ref(key, (2, 3, 7, 4), gamma), 1, -1)
    dropped = np.zeros((2, 8, 6, 3), bool)
    for i, r, s, ch in zip(*np.nonzero(sampled), strict=True):
        dropped[i, r : r + 2, s : s + 3, ch] = True
    kept = (~dropped).mean(axis=(1, 2, 3), keepdims=True)
    expected = np.where(dropped, 0.0, np.moveaxis(np.asarray(x, np.float64), 1, -1) / kept)
    np.testing.assert_allclose(y, np.moveaxis(expected, -1, 1), rtol=1e-6)


@pytest.mark.parametrize(
    "hw, block", [((8, 8), 3), ((9, 7), 2), ((8, 8), (3, 1)), ((5, 5), 5), ((12, 12), 4)]
)
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_dropblock_expected_dropped_fraction_is_rate(hw, block, rate):
    # Dropped positions are correlated within a map, so the error bar comes from the spread
    # of per-map fractions. For 8x8, block 3, rate 0.3 the paper's gamma drops 0.256 on
    # average: about 14 standard errors off (checked), so this test tells the two apart.
    n, c = 128, 16
    y = np.asarray(dropjax.dropblock(jax.random.key(6), jnp.ones((n, *hw, c)), rate,
                                     block_size=block))  # fmt: skip
    per_map = (y == 0).mean(axis=(1, 2)).ravel()
    assert abs(per_map.mean() - rate) < 4 * per_map.std() / np.sqrt(per_map.size) + 1e-3


def test_dropblock_traced_rate_is_calibrated_too():
    f = jax.jit(lambda r: dropjax.dropblock(jax.random.key(7), jnp.ones((128, 8, 8, 16)), r,
                                            block_size=3))  # fmt: skip
    per_map = (np.asarray(f(jnp.float32(0.3))) == 0).mean(axis=(1, 2)).ravel()
    assert abs(per_map.mean() - 0.3) < 4 * per_map.std() / np.sqrt(per_map.size) + 1e-3


def test_dropblock_blocks_and_per_example_renormalisation():
    x = jnp.ones((64, 10, 10, 3))
    y = np.asarray(dropjax.dropblock(jax.random.key(8), x, 0.3, block_size=3))
    sums = y.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(sums[sums > 0], 300.0, rtol=1e-5)
    # The dropped set is a union of 3x3 windows that fit inside the map (an opening).
    zero = y == 0
    windows = np.lib.stride_tricks.sliding_window_view(zero, (3, 3), axis=(1, 2)).all((-1, -2))
    grown = np.zeros_like(zero)
    for i, j in np.ndindex(3, 3):
        grown[:, i : i + 8, j : j + 8] |= windows
    np.testing.assert_array_equal(grown, zero)
    assert 0 < zero.mean() < 1


def test_dropblock_bad_arguments():
    x = jnp.ones((2, 5, 5, 3))
    with pytest.raises(ValueError, match="block_size <= 5"):
        dropjax.dropblock(KEY, x, 0.3, block_size=6)
    with pytest.raises(ValueError, match="positive"):
        dropjax.dropblock(KEY, x, 0.3, block_size=0)
    with pytest.raises(TypeError, match="one per spatial"):
        dropjax.dropblock(KEY, x, 0.3, block_size=(2, 2, 2))
    with pytest.raises(ValueError, match="spatial axis"):
        dropjax.dropblock(KEY, jnp.ones((2, 3)), 0.3, block_size=1)
    with pytest.raises(ValueError, match="distinct"):
        dropjax.dropblock(KEY, x, 0.3, block_size=2, batch_axis=3, channel_axis=-1)
    with pytest.raises(ValueError, match="scalar"):
        dropjax.dropblock(KEY, x, jnp.full(2, 0.3), block_size=2)


# ---------------------------------------------------------------- concrete dropout


def _sigmoid(v):
    return 0.5 * (1 + np.tanh(0.5 * v))


@pytest.mark.parametrize("logit", [-2.0, 0.0, 1.5])
def test_concrete_matches_uniform_draw(logit):
    x = X
    key, t, eps = jax.random.key(15), 0.1, 1e-7
    u = np.asarray(jax.random.uniform(key, x.shape), np.float64)
    z = _sigmoid((logit + np.log(u + eps) - np.log(1 - u + eps)) / t)
    expected = np.asarray(x, np.float64) * (1 - z) / (1 - _sigmoid(logit))
    got = dropjax.concrete_dropout(key, x, jnp.float32(logit))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_concrete_statistics(p):
    n, t, eps = 100_000, 0.1, 1e-7
    logit = np.log(p) - np.log1p(-p)
    y = np.asarray(dropjax.concrete_dropout(jax.random.key(2), jnp.ones(n), jnp.float32(logit)))
    keep = y * (1 - p)  # 1 - z
    # P(z > 1/2) = p at any temperature.
    assert abs((keep < 0.5).mean() - p) < sigma_bound(n, p)
    # E[1 - z] by quadrature over u, against the sample mean.
    u = (np.arange(2_000_000) + 0.5) / 2_000_000
    mean_keep = np.mean(_sigmoid(-(logit + np.log(u + eps) - np.log(1 - u + eps)) / t))
    assert abs(keep.mean() - mean_keep) < 4 * keep.std() / np.sqrt(n)
    e = keep - keep.mean()
    assert abs(np.corrcoef(e[:-1], e[1:])[0, 1]) < 4 / np.sqrt(n)


def test_concrete_is_differentiable_in_the_rate():
    x = _normal((5, 4), 1)
    f = jax.jit(lambda lg: dropjax.concrete_dropout(jax.random.key(3), x, lg, temperature=0.5))
    check_grads(f, (jnp.float32(-0.5),), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    check_grads(f, (jnp.array([-1.0, 0.0, 0.5, 1.0]),), order=1, modes=["rev"], atol=1e-2,
                rtol=1e-2)  # fmt: skip
    g = jax.grad(lambda lg: f(lg).sum())(jnp.float32(0.0))
    assert np.isfinite(float(g)) and float(g) != 0.0


def test_concrete_edges_and_bad_arguments():
    x = _normal((4, 3), 1)
    y = dropjax.concrete_dropout(KEY, x, jnp.float32(-30.0))  # p ~ 1e-13: the identity
    np.testing.assert_allclose(y, x, rtol=1e-6)
    with pytest.raises(ValueError, match="finite"):
        dropjax.concrete_dropout(KEY, x, jnp.float32(jnp.inf))
    with pytest.raises(ValueError, match="positive"):
        dropjax.concrete_dropout(KEY, x, jnp.float32(0.0), temperature=0.0)
    with pytest.raises(ValueError, match="must broadcast to x's shape"):
        dropjax.concrete_dropout(KEY, x, jnp.zeros(4))
    with pytest.raises(ValueError, match="must broadcast to x's shape"):
        dropjax.concrete_dropout(KEY, x, jnp.zeros((2, 4, 3)))
    np.testing.assert_array_equal(  # a Python int logit is a float logit
        dropjax.concrete_dropout(KEY, x, 0), dropjax.concrete_dropout(KEY, x, 0.0)
    )
    with pytest.raises(TypeError, match="floating"):
        dropjax.concrete_dropout(KEY, x, jnp.int32(0))
    with pytest.raises(ValueError, match="eps"):
        dropjax.concrete_dropout(KEY, x, 0.0, eps=0.7)


@pytest.mark.parametrize("logit", [-3.0, 0.0, 2.5])
def test_concrete_regularizer_formula(logit):
    weight = {"kernel": _normal((4, 3), 1), "bias": jnp.ones(3)}
    wr, dr, k = 1e-2, 0.2, 4
    p = _sigmoid(logit)
    sq = sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in weight.values())
    expected = wr * sq / (1 - p) + dr * k * (p * np.log(p) + (1 - p) * np.log(1 - p))
    got = dropjax.concrete_dropout_regularizer(
        jnp.float32(logit), weight, weight_regularizer=wr, dropout_regularizer=dr, input_dim=k
    )
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    reg = lambda lg: dropjax.concrete_dropout_regularizer(
        lg, weight, weight_regularizer=wr, dropout_regularizer=dr, input_dim=k
    )
    check_grads(jax.jit(reg), (jnp.float32(logit),), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_concrete_regularizer_extremes_and_errors():
    reg = lambda lg, **kw: dropjax.concrete_dropout_regularizer(
        lg, jnp.ones(2), **{"weight_regularizer": 1e-3, "dropout_regularizer": 1.0,
                           "input_dim": 3, **kw})  # fmt: skip
    for logit in (-40.0, 40.0):
        value, grad = jax.value_and_grad(reg)(jnp.float32(logit))
        assert np.isfinite(float(value)) and np.isfinite(float(grad))
    with pytest.raises(ValueError, match="scalar"):
        reg(jnp.zeros(2))
    with pytest.raises(ValueError, match="input_dim"):
        reg(jnp.float32(0.0), input_dim=0)
    with pytest.raises(ValueError, match="weight_regularizer must be >= 0"):
        reg(jnp.float32(0.0), weight_regularizer=-1.0)
