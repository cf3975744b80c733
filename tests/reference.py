"""Independent references for the tests: masks rebuilt in numpy from the documented rule.

``dropjax.keep_mask`` keeps an element iff its 32 bits are >= floor(rate * 2**32), where the
bits are ``mix(mix(i ^ s0) ^ s1)`` for the row-major index ``i`` of the drawn (unbroadcast)
mask and ``s0, s1 = jax.random.bits(key, (2,), uint32)``. This module recomputes that in
numpy uint32 arithmetic, without calling dropjax.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _mix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def bits_ref(key, shape):
    """The 32 mask bits of every element of ``shape``, in numpy."""
    s0, s1 = np.asarray(jax.random.bits(key, (2,), dtype=jnp.uint32))
    index = np.arange(int(np.prod(shape)), dtype=np.uint64).astype(np.uint32).reshape(shape)
    with np.errstate(over="ignore"):
        return _mix32(_mix32(index ^ s0) ^ s1)


def keep_ref(key, shape, rate, broadcast_dims=()):
    """The keep-mask as numpy bools, from the bits and a float64 threshold."""
    ndim = len(shape)
    dims = {d % ndim for d in broadcast_dims}
    drawn = tuple(1 if i in dims else s for i, s in enumerate(shape))
    bits = bits_ref(key, drawn).astype(np.uint64)
    threshold = np.floor(np.float64(np.float32(rate)) * 2.0**32)
    keep = bits >= threshold
    if rate >= 1.0:
        keep[...] = False
    return np.broadcast_to(keep, shape)


def extra_key(key):
    """The documented key of the extra / independent backward mask."""
    return jax.random.fold_in(key, 1)


def sigma_bound(n, p, k=4.0):
    """k standard deviations of a Binomial(n, p) fraction."""
    return k * np.sqrt(p * (1.0 - p) / n)


def nested_keep_ref(key, shape, rate, extra_rate, broadcast_dims=()):
    """The nested backward mask: the forward bits against a second, higher threshold.

    t = floor(rate * 2**32) (float32 product); keep iff bits >= t + floor(extra_rate *
    float32(2**32 - 1 - t)), in numpy uint32 arithmetic.
    """
    ndim = len(shape)
    dims = {d % ndim for d in broadcast_dims}
    drawn = tuple(1 if i in dims else s for i, s in enumerate(shape))
    bits = bits_ref(key, drawn).astype(np.uint64)
    t = np.uint64(np.floor(np.float64(np.float32(rate) * np.float32(2.0**32))))
    room = np.float32(np.uint32(0xFFFFFFFF - int(t)))
    extra = np.uint64(np.floor(np.float64(np.float32(extra_rate) * room)))
    keep = bits >= t + extra
    if rate >= 1.0 or extra_rate >= 1.0:
        keep[...] = False
    return np.broadcast_to(keep, shape)


# ------------------------------------------------------------ float32 rounding bounds
F32_UNIT_ROUNDOFF = 2.0**-24
"""u for float32 round-to-nearest: every operation is exact times (1 + e), |e| <= u."""


def gamma(n):
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of n float32 roundings."""
    nu = n * F32_UNIT_ROUNDOFF
    return nu / (1.0 - nu)


def assert_sum_close(actual, expected, magnitude, n, *, what=""):
    """Two float32 evaluations of one exact sum of products agree within twice its bound.

    A sum of ``n`` products, accumulated in any order (a loop, a vmapped batch, a blocked
    matmul, another instruction set), is within ``gamma(n) * sum |terms|`` of the exact value
    (Higham 2002, Sec. 3.1), so two evaluations differ by at most twice that. ``magnitude`` is
    ``sum |terms|`` elementwise (e.g. ``|x| @ |w|``), computed by the test in float64. Bit
    equality is the wrong test across programs that batch or order a reduction differently:
    it holds on one CPU and fails on the next.
    """
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    bound = 2.0 * gamma(n) * np.asarray(magnitude, np.float64) + np.finfo(np.float32).tiny
    excess = np.abs(actual - expected) - bound
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert (excess <= 0).all(), (
        f"{what}: {int((excess > 0).sum())} elements differ by more than the float32 "
        f"accumulation bound over {n} terms (largest excess {excess.max():.3g})"
    )
