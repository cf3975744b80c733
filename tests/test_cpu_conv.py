"""Tests for dropjax.cpu_conv: values, gradients and vmap against lax, canonical in a scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dropjax import cpu_conv

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


@pytest.mark.parametrize("x_shape, k_shape, strides, padding, vmaps", _CONVS)
def test_cpu_conv_matches_lax_values_gradients_and_vmap(x_shape, k_shape, strides, padding, vmaps):
    x = jax.random.normal(jax.random.key(0), (3, *x_shape))
    k = jax.random.normal(jax.random.key(1), (3, *k_shape))

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
        for tol, (grads, out) in zip((1e-4, 1e-3), others, strict=True):
            # The patch form sums in another order: float32 rounding of a sum of ~2,000
            # terms of size ~1 (the kernel gradient) differs by up to ~1e-3 relative.
            np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
            for g, r in zip(grads, ref_grads, strict=True):
                np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


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
