"""Dropout as an op: dropjax vs flax.linen.Dropout vs jnp.where(bernoulli) vs the roofline."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import dropjax
from benchmarks.common import min_time

__all__ = ["run"]


def _variants(rate: float):
    keep = 1.0 - rate

    def flax_fwd(k, x):
        return nn.Dropout(rate, deterministic=False).apply({}, x, rngs={"dropout": k})

    def where_fwd(k, x):
        mask = jax.random.bernoulli(k, keep, x.shape)
        return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))

    def dropjax_fwd(k, x):
        return dropjax.dropout(k, x, rate)

    def dropjax_threefry(k, x):
        with dropjax.mask_impl("bits"):
            return dropjax.dropout(k, x, rate)

    return {
        "dropjax": dropjax_fwd,
        "dropjax (threefry bits)": dropjax_threefry,
        "flax.linen.Dropout": flax_fwd,
        "jnp.where(bernoulli)": where_fwd,
    }


def _fwd_bwd(f):
    def run(k, x, g):
        y, vjp = jax.vjp(lambda x: f(k, x), x)
        return y, vjp(g)[0]

    return run


def run(*, size: int, repeats: int, rates=(0.1, 0.5), dtypes=("float32", "bfloat16")) -> list:
    """Rows of {dtype, rate, impl, pass, seconds, ratio_to_roofline}."""
    rows = []
    key = jax.random.key(0)
    for dtype_name in dtypes:
        dtype = jnp.dtype(dtype_name)
        x = jax.random.normal(jax.random.key(1), (size,), jnp.float32).astype(dtype)
        g = jax.random.normal(jax.random.key(2), (size,), jnp.float32).astype(dtype)
        c = jnp.asarray(1.5, dtype)
        roof_f = min_time(jax.jit(lambda x, c=c: x * c), x, repeats=repeats)
        roof_fb = min_time(jax.jit(lambda x, g, c=c: (x * c, g * c)), x, g, repeats=repeats)
        rows.append(
            dict(
                dtype=dtype_name,
                rate=None,
                impl="roofline x*c",
                **{"pass": "fwd"},
                seconds=roof_f,
                ratio=1.0,
            )
        )
        rows.append(
            dict(
                dtype=dtype_name,
                rate=None,
                impl="roofline x*c",
                **{"pass": "fwd+bwd"},
                seconds=roof_fb,
                ratio=1.0,
            )
        )
        for rate in rates:
            for name, f in _variants(rate).items():
                t_f = min_time(jax.jit(f), key, x, repeats=repeats)
                t_fb = min_time(jax.jit(_fwd_bwd(f)), key, x, g, repeats=repeats)
                rows.append(
                    dict(
                        dtype=dtype_name,
                        rate=rate,
                        impl=name,
                        **{"pass": "fwd"},
                        seconds=t_f,
                        ratio=t_f / roof_f,
                    )
                )
                rows.append(
                    dict(
                        dtype=dtype_name,
                        rate=rate,
                        impl=name,
                        **{"pass": "fwd+bwd"},
                        seconds=t_fb,
                        ratio=t_fb / roof_fb,
                    )
                )
    return rows
