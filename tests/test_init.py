"""Dropout-aware initialisation: sampled variances, and signal propagation through deep
ReLU networks with dropout (forward with fan_in, backward with fan_out)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax

DEPTH, WIDTH, BATCH, RATE = 20, 512, 256, 0.5


def init_weights(init, widths, seed=0):
    """One matrix per layer; the layers of one shape are drawn together under vmap."""
    shapes = list(zip(widths[:-1], widths[1:], strict=True))
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    weights = [None] * len(shapes)
    for shape in sorted(set(shapes)):
        idx = [i for i, sh in enumerate(shapes) if sh == shape]
        drawn = jax.jit(jax.vmap(functools.partial(init, shape=shape)))(keys[np.array(idx)])
        for j, i in enumerate(idx):
            weights[i] = drawn[j]
    return weights


def drop(key, h, rate, inverted):
    """Inverted dropout (dropjax.dropout) or the original form (mask only, no rescale)."""
    if inverted:
        return dropjax.dropout(key, h, rate)
    return jnp.where(dropjax.keep_mask(key, h.shape, rate), h, 0.0)


def run(weights, z1, taps, rate, inverted):
    """z_{l+1} = dropout(relu(z_l)) @ W_{l+1} + taps[l]; returns [z_1, ..., z_L].

    The taps are zeros: differentiating with respect to them gives d(loss)/d(z_l).
    """
    zs = [z1]
    for layer, w in enumerate(weights):
        key = jax.random.fold_in(jax.random.key(99), layer)
        zs.append(drop(key, jax.nn.relu(zs[-1]), rate, inverted) @ w + taps[layer])
    return zs


@functools.partial(jax.jit, static_argnums=(2, 3))
def _forward(weights, x, rate, inverted):
    first = drop(jax.random.key(7), x, rate, inverted) @ weights[0]
    taps = [jnp.zeros((), x.dtype)] * (len(weights) - 1)
    zs = run(weights[1:], first, taps, rate, inverted)
    moments = jnp.stack([jnp.mean(z**2) for z in zs])
    return moments / moments[0]


@functools.partial(jax.jit, static_argnums=(3,))
def _backward(weights, z1, cot, rate):
    taps = [jnp.zeros((z1.shape[0], w.shape[1]), z1.dtype) for w in weights]
    _, vjp = jax.vjp(lambda taps: run(weights, z1, taps, rate, True)[-1], taps)
    grads = vjp(cot)[0]
    return jnp.stack([jnp.mean(g**2) for g in grads]) / jnp.mean(cot**2)


def forward_moments(init, rate=RATE, inverted=True):
    """E[z_l^2] / E[z_1^2] for l = 1..L through DEPTH square layers (dropout on every input)."""
    weights = init_weights(init, [WIDTH] * (DEPTH + 1))
    x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
    return np.asarray(_forward(weights, x, rate, inverted))


def backward_moments(init, widths, rate=RATE):
    """E[(dloss/dz_l)^2] / E[(dloss/dz_L)^2] for l = 2..L, with dloss/dz_L = c ~ N(0, 1)."""
    weights = init_weights(init, widths)
    z1 = jax.random.normal(jax.random.key(2), (BATCH, widths[0]))
    cot = jax.random.normal(jax.random.key(3), (BATCH, widths[-1]))
    return np.asarray(_backward(weights, z1, cot, rate))


# ------------------------------------------------------------------ signal propagation


def test_forward_second_moment_constant_with_correction_and_explodes_without():
    corrected = forward_moments(dropjax.dropout_he_normal(RATE))
    assert ((corrected >= 0.5) & (corrected <= 2.0)).all(), corrected
    # Plain He under inverted dropout grows like (1/q)^(L-1) = 2^19 here.
    plain = forward_moments(jax.nn.initializers.he_normal())
    predicted = (1.0 / (1.0 - RATE)) ** (DEPTH - 1)
    assert predicted / 4 <= plain[-1] <= predicted * 4, (plain[-1], predicted)


def test_backward_second_moment_constant_with_fan_out():
    # Widths alternate, so fan_in and fan_out differ by 3x at every layer.
    widths = [768, 256] * (DEPTH // 2) + [768]
    corrected = backward_moments(dropjax.dropout_he_normal(RATE, mode="fan_out"), widths)
    assert ((corrected >= 0.5) & (corrected <= 2.0)).all(), corrected
    # The fan_in version keeps the forward pass, not the backward one: it swings by 3x.
    fan_in = backward_moments(dropjax.dropout_he_normal(RATE), widths)
    assert fan_in.max() / fan_in.min() > 2.5, fan_in
    he_fan_out = jax.nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal")
    plain = backward_moments(he_fan_out, widths)
    assert plain[0] > 1e4, plain[0]


def test_non_inverted_convention_needs_the_inverse_factor():
    # The explainer's statement (variance inversely proportional to the keep probability)
    # is the right correction for non-inverted dropout, and the wrong one for inverted.
    init = dropjax.dropout_he_normal(RATE, inverted=False)
    corrected = forward_moments(init, inverted=False)
    assert ((corrected >= 0.5) & (corrected <= 2.0)).all(), corrected
    wrong = forward_moments(init, inverted=True)
    assert wrong[-1] > 1e8, wrong[-1]


# ------------------------------------------------------------------ sampled variances


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8])
@pytest.mark.parametrize("mode, fan", [("fan_in", 300), ("fan_out", 700)])
@pytest.mark.parametrize("inverted", [True, False])
def test_sampled_variance(rate, mode, fan, inverted):
    w = dropjax.dropout_he_normal(rate, mode=mode, inverted=inverted)(jax.random.key(4), (300, 700))
    keep = 1.0 - rate
    expected = 2.0 * (keep if inverted else 1.0 / keep) / fan
    assert w.dtype == jnp.float32
    assert float(jnp.var(w)) == pytest.approx(expected, rel=0.02)
    assert abs(float(jnp.mean(w))) < 4 * np.sqrt(expected / w.size)


@pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
def test_variance_scaling_distributions_and_fan_avg(distribution):
    init = dropjax.dropout_variance_scaling(1.0, "fan_avg", distribution, 0.4)
    w = init(jax.random.key(5), (200, 600), jnp.float32)
    assert float(jnp.var(w)) == pytest.approx(1.0 * 0.6 / 400, rel=0.02)


def test_rate_zero_is_he_normal_bit_for_bit():
    key = jax.random.key(6)
    np.testing.assert_array_equal(
        dropjax.dropout_he_normal(0.0)(key, (64, 32)),
        jax.nn.initializers.he_normal()(key, (64, 32)),
    )


def test_traced_rate_and_dtype():
    key = jax.random.key(7)
    traced = jax.jit(lambda r: dropjax.dropout_he_normal(r)(key, (64, 32)))(0.5)
    np.testing.assert_allclose(traced, dropjax.dropout_he_normal(0.5)(key, (64, 32)), rtol=1e-6)
    w = dropjax.dropout_he_normal(0.5, dtype=jnp.bfloat16)(key, (64, 32))
    assert w.dtype == jnp.bfloat16


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"rate in \[0, 1\)"):
        dropjax.dropout_he_normal(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropjax.dropout_he_normal(1.5)
    with pytest.raises(ValueError, match="mode"):
        dropjax.dropout_he_normal(0.5, mode="fan_sideways")
    with pytest.raises(ValueError, match="distribution"):
        dropjax.dropout_variance_scaling(2.0, "fan_in", "cauchy", 0.5)
    with pytest.raises(ValueError, match="scale > 0"):
        dropjax.dropout_variance_scaling(0.0, "fan_in", "normal", 0.5)
