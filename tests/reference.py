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
