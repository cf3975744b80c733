r"""A 2-D convolution whose backward pass stays fast inside ``lax.scan`` on XLA:CPU.

XLA:CPU runs a convolution through its fast library path only when the convolution is in
canonical form (NHWC input, HWIO kernel, NHWC output). The kernel gradient that autodiff
derives from a forward convolution is not (its dimension labels are ``f01b_i01o->01bf``),
and XLA:CPU rewrites such convolutions into canonical form only in the entry computation,
not inside a ``while`` loop body (https://github.com/jax-ml/jax/issues/12868). So a training
step inside ``lax.scan`` falls back to a naive loop nest: a LeNet step ran about 10x slower
in a scan than as a separately jitted step.

This is not dropout, but every Flax convolutional network trained inside ``lax.scan`` on a
CPU meets it (the experiments' LeNet, ConvNet-Quick and ResNets do), so it ships with the
library rather than hidden in the experiment harness.

:func:`conv_general_dilated` is a drop-in for ``lax.conv_general_dilated`` (pass it to
``flax.linen.Conv(conv_general_dilated=...)``) that, for the plain 2-D NHWC/HWIO case,
writes every convolution of the forward and backward pass in canonical form with explicit
transposes (a ``jax.custom_vjp``):

.. math::

    \bar x = \operatorname{conv}(\operatorname{dilate}_s(g), \operatorname{flip}(k)^{\top}),
    \qquad
    \bar k = \operatorname{conv}(x^{(c, h, w, n)}, \operatorname{dilate}_s(g)^{(h, w, n, o)})

(the input gradient is the full correlation of the stride-dilated cotangent with the
flipped kernel, in and out channels swapped; the kernel gradient treats channels as the
batch and examples as features). Under ``vmap`` with batched kernels (the harness's
replicas) the default batching rule would make a grouped convolution, also slow on
XLA:CPU; a ``custom_vmap`` rule runs one canonical convolution per replica instead (or
folds the replica axis into the batch or output channels when only one side is batched).

XLA:CPU's convolution is also about 4x slower when the input has an odd number of channels
above one (3, 5, 7: an RGB image's first layer) than with one zero channel more, which gives
the same sums (``benchmarks/cpu_conv_channels.py``); so every canonical convolution here
gets that zero channel, in the forward pass and in the gradients' convolutions (where the
batch plays the channel's part, an odd batch gets a zero example).

Other backends, and dilated, grouped or non-2-D convolutions, use
``lax.conv_general_dilated`` unchanged. Values and gradients equal lax's up to float
rounding (the tests compare them).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import custom_batching, lax

__all__ = ["conv_general_dilated", "patch_conv"]

_DN = ("NHWC", "HWIO", "NHWC")


@functools.cache
def _canonical(strides: tuple[int, int], pads: tuple, precision: Any):
    """A canonical NHWC/HWIO convolution whose vmap rule never makes a grouped one."""

    @custom_batching.custom_vmap
    def conv(x, k):
        return lax.conv_general_dilated(
            x, k, strides, pads, dimension_numbers=_DN, precision=precision
        )

    @conv.def_vmap
    def _rule(axis_size, in_batched, x, k):
        x_batched, k_batched = in_batched
        if x_batched and k_batched:  # one convolution per replica
            return jnp.stack([conv(x[r], k[r]) for r in range(axis_size)]), True
        if x_batched:  # fold the replica axis into the batch
            out = conv(x.reshape(-1, *x.shape[2:]), k)
            return out.reshape(axis_size, -1, *out.shape[1:]), True
        # fold the replica axis into the output channels
        kk = jnp.moveaxis(k, 0, -2).reshape(*k.shape[1:-1], axis_size * k.shape[-1])
        out = conv(x, kk)
        out = out.reshape(*out.shape[:-1], axis_size, k.shape[-1])
        return jnp.moveaxis(out, -2, 0), True

    return conv


def _conv(x, k, strides, pads, precision):
    if x.shape[-1] % 2 and x.shape[-1] > 1:  # an odd channel count > 1: add a zero channel
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 1)))
        k = jnp.pad(k, ((0, 0), (0, 0), (0, 1), (0, 0)))
    return _canonical(strides, pads, precision)(x, k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv2d(x, k, strides, pads, precision):
    return _conv(x, k, strides, pads, precision)


def _conv2d_fwd(x, k, strides, pads, precision):
    return _conv(x, k, strides, pads, precision), (x, k)


def _conv2d_bwd(strides, pads, precision, residuals, g):
    x, k = residuals
    (kh, kw), (sh, sw) = k.shape[:2], strides
    (pt, pb), (pl, pr) = pads
    # Rows/columns of the padded input that no window reaches (strided remainders).
    eh = x.shape[1] + pt + pb - kh - (g.shape[1] - 1) * sh
    ew = x.shape[2] + pl + pr - kw - (g.shape[2] - 1) * sw
    if (sh, sw) != (1, 1):
        zero = jnp.zeros((), g.dtype)
        g = lax.pad(g, zero, ((0, 0, 0), (0, 0, sh - 1), (0, 0, sw - 1), (0, 0, 0)))
    flipped = jnp.flip(k, (0, 1)).transpose(0, 1, 3, 2)
    dx_pads = ((kh - 1 - pt, kh - 1 - pb + eh), (kw - 1 - pl, kw - 1 - pr + ew))
    dx = _conv(g, flipped, (1, 1), dx_pads, precision)
    lhs, rhs = x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3)
    dk = _conv(lhs, rhs, (1, 1), ((pt, pb - eh), (pl, pr - ew)), precision)
    return dx, dk.transpose(1, 2, 0, 3)


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
    if lhs.ndim != 4 or rhs.ndim != 4:
        return False
    canonical = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DN)
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return given == canonical


# The keyword options of ``lax.conv_general_dilated`` after its four positional arguments.
_OPTIONS = (
    "lhs_dilation",
    "rhs_dilation",
    "dimension_numbers",
    "feature_group_count",
    "batch_group_count",
    "precision",
    "preferred_element_type",
)


def _plain_nhwc(lhs, rhs, options: dict[str, Any]) -> bool:
    """A 2-D NHWC/HWIO convolution without dilation, groups or a preferred output type."""
    return (
        _is_nhwc(lhs, rhs, options["dimension_numbers"])
        and all(d == 1 for d in (options["lhs_dilation"] or (1, 1)))
        and all(d == 1 for d in (options["rhs_dilation"] or (1, 1)))
        and options["feature_group_count"] == 1
        and options["batch_group_count"] == 1
        and options["preferred_element_type"] is None
    )


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` with a scan-friendly backward pass on XLA:CPU.

    Same signature and values as ``lax.conv_general_dilated``. On the CPU backend, a 2-D
    NHWC/HWIO convolution without dilation or groups uses canonical convolutions for its
    value and both gradients (see the module docstring); anything else calls lax.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dropjax.cpu_conv import conv_general_dilated
      >>> x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
      >>> dn = ("NHWC", "HWIO", "NHWC")
      >>> conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn).shape
      (2, 8, 8, 4)
    """
    options = {name: value for name, value in locals().items() if name in _OPTIONS}
    if not (jax.default_backend() == "cpu" and _plain_nhwc(lhs, rhs, options)):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **options)
    strides = tuple(int(s) for s in window_strides)
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv2d(lhs, rhs, strides, pads, precision)


def patch_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    r"""A stride-1 NHWC/HWIO convolution as shifted slices and one matrix product.

    Same signature and values (up to float rounding) as ``lax.conv_general_dilated``. For
    a small kernel on small maps (LeNet's 5x5 convolutions), writing the convolution as
    ``concat_{i,j} x[:, i:i+H', j:j+W', :] @ reshape(k, (kh kw c_in, c_out))`` is faster on
    XLA:CPU than any convolution, forward and backward: the transposes of slices are pads
    and the rest is a matrix product, which XLA:CPU runs through its fast library path
    (inside ``lax.scan`` too, and batched under ``vmap``). It costs ``kh * kw`` times the
    input in temporary memory. Anything else (strides, dilation, groups, other layouts)
    goes to :func:`conv_general_dilated`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from dropjax.cpu_conv import patch_conv
      >>> x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((5, 5, 3, 4))
      >>> patch_conv(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")).shape
      (2, 4, 4, 4)
    """
    options = {name: value for name, value in locals().items() if name in _OPTIONS}
    if not (all(int(s) == 1 for s in window_strides) and _plain_nhwc(lhs, rhs, options)):
        return conv_general_dilated(lhs, rhs, window_strides, padding, **options)
    kh, kw, cin, cout = rhs.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (1, 1), padding)
    (top, bottom), (left, right) = ((int(lo), int(hi)) for lo, hi in padding)
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    cols = [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1).reshape(n * oh * ow, kh * kw * cin)
    out = jnp.dot(patches, rhs.reshape(kh * kw * cin, cout), precision=precision)
    return out.reshape(n, oh, ow, cout)
