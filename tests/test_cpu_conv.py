"""Tests for dropjax.cpu_conv: values, gradients and vmap against lax, canonical in a scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dropjax import cpu_conv
from tests.reference import assert_sum_close, gamma

DN = ("NHWC", "HWIO", "NHWC")

# (input, kernel, strides, padding, vmap in_axes to check: (0, 0) is the harness's replicas,
# (None, 0) its evaluation on a shared test batch).
_CONVS = [
    ((2, 12, 12, 3), (5, 5, 3, 4), (1, 1), "VALID", [(0, 0), (0, None)]),
    ((2, 9, 9, 3), (5, 5, 3, 4), (1, 1), ((2, 2), (2, 2)), [(None, 0)]),
    ((2, 8, 8, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1)), [(0, 0), (0, None), (None, 0)]),
    ((2, 9, 7, 3), (3, 2, 3, 4), (2, 3), ((0, 1), (1, 0)), [(0, 0)]),
    # Odd channels and an odd batch: the zero channel (and zero example) the CPU path adds.
    ((3, 7, 7, 5), (3, 3, 5, 3), (1, 1), "SAME", [(0, 0), (None, 0)]),
    ((1, 6, 6, 1), (3, 3, 1, 2), (1, 1), "VALID", [(0, None)]),
]


def _bounds(a, b, strides, padding, out, in_axes):
    """Sums of |terms| of the output and of both gradients of ``sum(out * cos(out))``.

    Each is the same linear map applied to absolute values: the convolution of |x| and |k|
    for the output; the transposed convolutions of |g| (g = d loss / d out) for the
    gradients, plus the output's own rounding carried through |g'| (g' = d g / d out).
    """
    conv = lambda a, b: lax.conv_general_dilated(a, b, strides, padding, dimension_numbers=DN)
    one = lambda a, b: conv(jnp.abs(a), jnp.abs(b))
    out_mag = jax.vmap(one, in_axes)(a, b)
    g = jnp.abs(jnp.cos(out) - out * jnp.sin(out))
    g2 = jnp.abs(2 * jnp.sin(out) + out * jnp.cos(out))

    def transposed(a, b, cot):  # conv is linear in each argument: vjp at |a|, |b|
        return jax.vjp(conv, jnp.abs(a), jnp.abs(b))[1](cot)

    grad_mag = jax.vmap(transposed, (*in_axes, 0))(a, b, g)
    carried = jax.vmap(transposed, (*in_axes, 0))(a, b, g2 * out_mag)
    return out_mag, grad_mag, carried


@pytest.mark.parametrize("x_shape, k_shape, strides, padding, vmaps", _CONVS)
def test_cpu_conv_matches_lax_values_gradients_and_vmap(x_shape, k_shape, strides, padding, vmaps):
    x = jax.random.normal(jax.random.key(0), (3, *x_shape))
    k = jax.random.normal(jax.random.key(1), (3, *k_shape))
    # Reduction lengths: the output sums kh*kw*cin products; the kernel gradient sums over
    # batch and output positions; the input gradient over kh*kw*cout. One bound for all.
    n_out = k_shape[0] * k_shape[1] * k_shape[2]
    n = max(n_out, x_shape[0] * x_shape[1] * x_shape[2], n_out // k_shape[2] * k_shape[3]) + 4

    def loss(conv, a, b):
        out = conv(a, b, strides, padding, dimension_numbers=DN)
        return jnp.sum(out * jnp.cos(out)), out

    for in_axes in vmaps:
        a = x if in_axes[0] == 0 else x[0]
        b = k if in_axes[1] == 0 else k[0]
        results = []
        convs = (lax.conv_general_dilated, cpu_conv.conv_general_dilated, cpu_conv.patch_conv)
        for conv in convs:
            grad = jax.grad(functools.partial(loss, conv), argnums=(0, 1), has_aux=True)
            results.append(jax.jit(jax.vmap(grad, in_axes))(a, b))
        (ref_grads, ref_out), *others = results
        out_mag, grad_mag, carried = _bounds(a, b, strides, padding, ref_out, in_axes)
        # Each gradient: its own sums' bound, plus the output's rounding (gamma(n_out) per
        # unit of out_mag, on both sides) carried through g'.
        grad_bound = [
            m + 2 * gamma(n_out) / gamma(n) * c for m, c in zip(grad_mag, carried, strict=True)
        ]
        for grads, out in others:  # another summation order than lax's: float32 bounds
            assert_sum_close(out, ref_out, out_mag, n_out, what="output")
            for g, r, mag in zip(grads, ref_grads, grad_bound, strict=True):
                assert_sum_close(g, r, np.broadcast_to(mag, np.shape(r)), n, what="gradient")


def test_cpu_conv_stays_canonical_inside_scan():
    """The kernel gradient inside a scan body must not be a non-canonical convolution."""
    x, k = jnp.ones((4, 12, 12, 3)), jnp.ones((5, 5, 3, 6))

    def labels(conv) -> set[str]:
        def run(w, x):
            def step(w, _):
                out = lambda w: conv(x, w, (1, 1), "VALID", dimension_numbers=DN)
                return w - 0.1 * jax.grad(lambda w: jnp.sum(out(w) ** 2))(w), None

            return lax.scan(step, w, None, length=2)[0]

        text = jax.jit(run).lower(k, x).compile().as_text()
        found = [
            line.split("dim_labels=")[1] for line in text.splitlines() if "dim_labels=" in line
        ]
        return {entry.split(",")[0] for entry in found}

    assert labels(cpu_conv.conv_general_dilated) == {"b01f_01io->b01f"}
    assert labels(lax.conv_general_dilated) != {"b01f_01io->b01f"}  # what the workaround avoids


@pytest.mark.parametrize(
    "options",
    [
        {"rhs_dilation": (2, 2), "dimension_numbers": DN},
        {"lhs_dilation": (2, 1), "dimension_numbers": DN},
        {"feature_group_count": 2, "dimension_numbers": DN},
        {"dimension_numbers": ("NCHW", "OIHW", "NCHW")},
        {"dimension_numbers": DN, "window_strides": (2, 2)},  # patch_conv: stride-1 only
    ],
)
@pytest.mark.parametrize("conv", [cpu_conv.conv_general_dilated, cpu_conv.patch_conv])
def test_convolutions_it_does_not_handle_are_lax_s(conv, options):
    """Dilation, groups, other layouts (and strides, for patch_conv) go to lax unchanged."""
    options = dict(options)
    strides = options.pop("window_strides", (1, 1))
    groups = options.get("feature_group_count", 1)
    if options["dimension_numbers"][0] == "NCHW":
        x_shape, k_shape = (2, 4, 9, 9), (6, 4 // groups, 3, 3)
    else:
        x_shape, k_shape = (2, 9, 9, 4), (3, 3, 4 // groups, 6)
    x = jax.random.normal(jax.random.key(0), x_shape)
    k = jax.random.normal(jax.random.key(1), k_shape)
    pads = ((1, 1), (1, 1))
    ours = conv(x, k, strides, pads, **options)
    ref = lax.conv_general_dilated(x, k, strides, pads, **options)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
