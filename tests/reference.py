"""Independent references for the tests: masks rebuilt from raw bits with numpy.

These follow the documented sampling rule of ``dropjax.keep_mask`` (keep iff the 32 raw
bits of ``jax.random.bits(key)`` are >= floor(rate * 2**32)) without calling dropjax.
"""

import jax
import jax.numpy as jnp
import numpy as np


def keep_ref(key, shape, rate, broadcast_dims=()):
    """The keep-mask as numpy bools, from the raw bits and a float64 threshold."""
    ndim = len(shape)
    dims = {d % ndim for d in broadcast_dims}
    drawn = tuple(1 if i in dims else s for i, s in enumerate(shape))
    bits = np.asarray(jax.random.bits(key, drawn, dtype=jnp.uint32)).astype(np.uint64)
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
