"""Forward-mode autodiff, the rate derivative and reverse-mode memory (issue 12, items 1, 3).

References are built with explicit masks (``tests.reference.keep_ref``, the documented
sampler recomputed in numpy) and plain jnp, never by calling the op under test another way.
"""

import flax.linen as nn
import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
import dropjax.linen as djnn
from tests.reference import keep_ref

KEY = jax.random.key(7)
RATE = 0.3


class _Net(nn.Module):
    """Dense -> tanh -> dropjax.linen.Dropout -> Dense, the key passed explicitly."""

    @nn.compact
    def __call__(self, x, key):
        h = jnp.tanh(nn.Dense(6, name="hidden")(x))
        h = djnn.Dropout(RATE, deterministic=False)(h, rng=key)
        return nn.Dense(1, name="out")(h)[..., 0]


def _net_and_reference():
    x = jax.random.normal(jax.random.key(1), (3, 4))
    net = _Net()
    params = net.init(jax.random.key(2), x, KEY)
    p = params["params"]
    mask = jnp.asarray(keep_ref(KEY, (3, 6), RATE))

    def model(x):
        return net.apply(params, x, KEY)

    def reference(x):  # the same network with the mask applied by hand
        h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        h = jnp.where(mask, h / (1.0 - RATE), 0.0)
        return (h @ p["out"]["kernel"] + p["out"]["bias"])[..., 0]

    return model, reference, x


def test_linen_model_jvp_jacfwd_hessian_equal_explicit_mask():
    model, reference, x = _net_and_reference()
    t = jax.random.normal(jax.random.key(3), x.shape)
    y, dy = jax.jit(lambda v, u: jax.jvp(model, (v,), (u,)))(x, t)
    y_ref, dy_ref = jax.jvp(reference, (x,), (t,))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dy, dy_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.jacfwd(model))(x), jax.jacfwd(reference)(x), atol=1e-6)

    def loss(f):
        return lambda v: jnp.sum(f(v) ** 2)

    np.testing.assert_allclose(
        jax.jit(jax.hessian(loss(model)))(x),
        jax.jit(jax.hessian(loss(reference)))(x),
        rtol=1e-5,
        atol=1e-5,
    )
    # Hessian-vector product, forward over reverse, under jit.
    hvp = jax.jit(lambda v: jax.jvp(jax.grad(loss(model)), (v,), (t,))[1])
    hvp_ref = jax.jvp(jax.grad(loss(reference)), (x,), (t,))[1]
    np.testing.assert_allclose(hvp(x), hvp_ref, rtol=1e-5, atol=1e-5)


def _dense_mask_op(name):
    """(op(x), numpy keep-mask for x of shape (4, 5, 3)) from each op's documented key use."""
    shape = (4, 5, 3)
    if name == "dropout":
        return (lambda x: dropjax.dropout(KEY, x, RATE)), keep_ref(KEY, shape, RATE), RATE
    if name == "spatial_dropout":
        op = lambda x: dropjax.spatial_dropout(KEY, x, RATE)  # noqa: E731
        return op, keep_ref(KEY, shape, RATE, (1,)), RATE
    if name == "drop_path":
        op = lambda x: dropjax.drop_path(KEY, x, RATE)  # noqa: E731
        return op, keep_ref(KEY, shape, RATE, (1, 2)), RATE
    if name == "dropconnect":
        return (lambda w: dropjax.dropconnect(KEY, w, RATE)), keep_ref(KEY, shape, RATE), RATE
    assert name == "random_rate_dropout"
    rate_key, mask_key = jax.random.split(KEY)
    rho = float(np.float32(0.6) * np.asarray(jax.random.uniform(rate_key, (), jnp.float32)))
    op = lambda x: dropjax.random_rate_dropout(KEY, x, 0.6)  # noqa: E731
    return op, keep_ref(mask_key, shape, rho), rho


OPS = ["dropout", "spatial_dropout", "drop_path", "dropconnect", "random_rate_dropout"]


@pytest.mark.parametrize("name", OPS)
def test_ops_forward_mode_is_the_mask_on_the_tangent(name):
    op, keep, rate = _dense_mask_op(name)
    x = jax.random.normal(jax.random.key(4), (4, 5, 3))
    t = jax.random.normal(jax.random.key(5), (4, 5, 3))
    scale = np.float32(1.0) / np.float32(1.0 - rate)
    y, dy = jax.jit(lambda v, u: jax.jvp(op, (v,), (u,)))(x, t)
    np.testing.assert_allclose(y, np.where(keep, np.asarray(x) * scale, 0), rtol=1e-5)
    np.testing.assert_allclose(dy, np.where(keep, np.asarray(t) * scale, 0), rtol=1e-5)
    # jacfwd of an elementwise op: the diagonal matrix of mask * scale.
    jac = jax.jit(jax.jacfwd(op))(x).reshape(x.size, x.size)
    np.testing.assert_allclose(jac, np.diag(np.where(keep, scale, 0).ravel()), rtol=1e-6)
    # The Hessian of sum(sin(op(x))) is diagonal: -sin(y) * (mask * scale)^2.
    y = np.asarray(y)
    hess = jax.jit(jax.hessian(lambda v: jnp.sum(jnp.sin(op(v)))))(x).reshape(x.size, x.size)
    expected = np.diag((-np.sin(y) * np.where(keep, scale, 0) ** 2).ravel())
    np.testing.assert_allclose(hess, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", OPS)
def test_reverse_mode_saves_the_key_not_a_mask(name, capsys):
    op, _, _ = _dense_mask_op(name)
    w = jax.random.normal(jax.random.key(6), (4, 5, 3))
    # The op is linear in w: a mask is the only activation-sized thing it could save.
    jax.ad_checkpoint.print_saved_residuals(lambda v: jnp.sum(op(v)), w)
    saved = capsys.readouterr().out
    assert "[4,5,3]" not in saved, saved
    assert "key<" in saved, saved


def test_grad_step_temp_memory_matches_no_dropout():
    # An MLP's jitted gradient: the compiled temporary memory with dropjax.dropout is that
    # of the same step without dropout (a saved float or bool mask would add >= 1 MiB).
    x = jax.random.normal(jax.random.key(0), (256, 256))
    w = [jax.random.normal(jax.random.key(i), (256, 1024)) * 0.05 for i in (1, 2)]
    w[1] = w[1].reshape(1024, 256)

    def loss(ws, drop):
        h = jax.nn.relu(x @ ws[0])
        if drop:
            h = dropjax.dropout(KEY, h, 0.5)
        return jnp.mean((h @ ws[1]) ** 2)

    def temp(drop):
        compiled = jax.jit(jax.grad(lambda ws: loss(ws, drop))).lower(w).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    none, dropped = temp(False), temp(True)
    assert dropped <= none + 64 * 1024, (dropped, none)


def test_rate_gradient_is_the_pathwise_derivative():
    x = jnp.arange(1.0, 9.0)
    for rate in (0.55,):
        keep = keep_ref(KEY, x.shape, rate)
        expected = np.sum(np.where(keep, np.asarray(x), 0)) / (1.0 - rate) ** 2
        got = jax.grad(lambda r: dropjax.dropout(KEY, x, r).sum())(rate)
        np.testing.assert_allclose(got, expected, rtol=1e-5)
        # Forward mode agrees, elementwise: x * m / (1 - p)^2.
        _, dy = jax.jvp(lambda r: dropjax.dropout(KEY, x, r), (rate,), (1.0,))
        np.testing.assert_allclose(dy, np.where(keep, np.asarray(x), 0) / (1 - rate) ** 2, 1e-5)


def test_rate_gradient_of_spatial_and_random_rate_ops():
    x = jax.random.normal(jax.random.key(8), (4, 5, 3))
    keep = keep_ref(KEY, x.shape, RATE, (1,))
    expected = np.sum(np.where(keep, np.asarray(x), 0)) / (1 - RATE) ** 2
    got = jax.grad(lambda r: dropjax.spatial_dropout(KEY, x, r).sum())(RATE)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # random_rate_dropout: rho = max_rate * u, so dy/dmax_rate = u * x * m / (1 - rho)^2.
    rate_key, mask_key = jax.random.split(KEY)
    u = float(jax.random.uniform(rate_key, (), jnp.float32))
    rho = float(np.float32(0.6) * np.float32(u))
    keep = keep_ref(mask_key, x.shape, rho)
    expected = u * np.sum(np.where(keep, np.asarray(x), 0)) / (1 - rho) ** 2
    got = jax.grad(lambda r: dropjax.random_rate_dropout(KEY, x, r).sum())(0.6)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


_DECOUPLED = {
    "decoupled_dropout": lambda x: dropjax.decoupled_dropout(KEY, x, 0.3, 0.1),
    "independent": lambda x: dropjax.decoupled_dropout(KEY, x, 0.3, 0.1, backward="independent"),
    "forward_dropout": lambda x: dropjax.forward_dropout(KEY, x, 0.3),
    "backward_dropout": lambda x: dropjax.backward_dropout(KEY, x, 0.3),
    "augmented_dropout": lambda x: dropjax.augmented_dropout(KEY, x, 0.3, 1e-4),
    "decoupled_call": lambda x: dropjax.decoupled_call(
        KEY, lambda p, h: h @ p, jnp.ones((3, 2)), x, 0.3, 0.1
    ),
}


_MODES = ["jvp", "jit_jvp", "jvp_of_jit", "jacfwd", "hessian"]
_CASES = [(name, "jvp") for name in sorted(_DECOUPLED)] + [
    (name, mode) for name in ("decoupled_dropout", "decoupled_call") for mode in _MODES[1:]
]


@pytest.mark.parametrize(("name", "mode"), _CASES)
def test_decoupled_ops_refuse_forward_mode_with_the_reason(name, mode):
    op = _DECOUPLED[name]
    x = jnp.ones((2, 3))

    def f(v):
        return jnp.sum(jnp.sin(op(v)))

    run = {
        "jvp": lambda: jax.jvp(f, (x,), (x,)),
        "jit_jvp": lambda: jax.jit(lambda v: jax.jvp(f, (v,), (v,)))(x),
        "jvp_of_jit": lambda: jax.jvp(jax.jit(f), (x,), (x,)),
        "jacfwd": lambda: jax.jacfwd(f)(x),
        "hessian": lambda: jax.hessian(f)(x),
    }[mode]
    with pytest.raises(TypeError, match=r"by design not the derivative(.|\n)*dropjax\.dropout"):
        run()
    # Reverse mode still works.
    assert jnp.isfinite(jax.jit(jax.grad(f))(x)).all()


def test_decoupled_rate_gradient_raises_instead_of_zero():
    x = jnp.ones(4)
    with pytest.raises(TypeError, match="no derivative with respect to its rates"):
        jax.grad(lambda r: dropjax.decoupled_dropout(KEY, x, r, 0.1).sum())(0.3)


def test_decoupled_grad_under_vmap_and_remat_matches_explicit_masks():
    # backward_dropout: value x, gradient g * m_b / (1 - p) with
    # m_b = keep_mask(fold_in(key, 1), x.shape, p) (see its docstring).
    x = jax.random.normal(jax.random.key(9), (2, 6))
    g = jax.random.normal(jax.random.key(10), (6,))
    keys = jax.random.split(KEY, 2)

    def loss(k, v):
        return jnp.sum(dropjax.backward_dropout(k, v, 0.5) * g)

    per_key = jax.jit(jax.vmap(jax.grad(jax.checkpoint(loss), argnums=1)))(keys, x)
    summed = jax.grad(lambda v: jax.vmap(loss)(keys, v).sum())(x)
    for i in range(2):
        keep = keep_ref(jax.random.fold_in(keys[i], 1), (6,), 0.5)
        expected = np.where(keep, 2 * np.asarray(g), 0)
        np.testing.assert_allclose(per_key[i], expected, rtol=1e-6)
        np.testing.assert_allclose(summed[i], expected, rtol=1e-6)
