"""Monte Carlo dropout: dropjax.mc vs the stock approaches (vmap over keys, a Python loop)."""

from __future__ import annotations

import flax.linen as nn
import jax

import dropjax
import dropjax.linen as djnn
from benchmarks.common import min_time, temp_bytes

__all__ = ["run"]


class MLP(nn.Module):
    """784-1024-1024-10 with dropout 0.5 after each hidden layer (or only before the head)."""

    dropout_cls: type
    head_only: bool = False

    @nn.compact
    def __call__(self, x, deterministic: bool):
        x = nn.relu(nn.Dense(1024)(x))
        if not self.head_only:
            x = self.dropout_cls(0.5)(x, deterministic=deterministic)
        x = nn.relu(nn.Dense(1024)(x))
        x = self.dropout_cls(0.5)(x, deterministic=deterministic)
        return nn.Dense(10)(x)


def run(*, quick: bool = False, T: int = 64, batch: int = 256) -> dict:
    repeats = 3 if quick else 7
    x = jax.random.normal(jax.random.key(0), (batch, 784))
    key = jax.random.key(1)
    rows = []

    def add(name, seconds, ref, note=""):
        rows.append(
            dict(impl=name, seconds=seconds, ratio_to_T_deterministic=seconds / ref, note=note)
        )

    flax_model, dj_model = MLP(nn.Dropout), MLP(djnn.Dropout)
    v = flax_model.init(jax.random.key(2), x, True)
    single_det = jax.jit(lambda v, x: flax_model.apply(v, x, True))
    t_det = min_time(single_det, v, x, repeats=repeats, min_total=0.2)
    ref = T * t_det
    add(f"{T} deterministic passes (T x one pass)", ref, ref)

    keys = jax.random.split(key, T)
    stock_vmap = jax.jit(
        lambda v, x, ks: jax.vmap(lambda k: flax_model.apply(v, x, False, rngs={"dropout": k}))(ks)
    )
    add(
        "stock: jax.vmap over keys, flax Dropout",
        min_time(stock_vmap, v, x, keys, repeats=repeats),
        ref,
    )
    one = jax.jit(lambda v, x, k: flax_model.apply(v, x, False, rngs={"dropout": k}))

    def loop(v, x, ks):
        return [one(v, x, ks[i]) for i in range(T)]

    add(
        "stock: Python loop over keys, flax Dropout",
        min_time(loop, v, x, keys, repeats=repeats),
        ref,
    )

    def dj_fn(k, v, x):
        return dj_model.apply(v, x, False, rngs={"dropout": k})

    mc_full = jax.jit(lambda v, x, k: dropjax.mc.sample(dj_fn, k, T, v, x))
    add(
        "dropjax.mc.sample (vmap, dropjax Dropout)",
        min_time(mc_full, v, x, key, repeats=repeats),
        ref,
    )

    # Prefix caching: dropout only before the last layer.
    head_model = MLP(djnn.Dropout, head_only=True)
    params = v["params"]

    def prefix(x):
        h = nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
        return nn.relu(h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"])

    def head(k, h):
        h = dropjax.dropout(k, h, 0.5)
        return h @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]

    full_head_only = jax.jit(
        lambda x, k: dropjax.mc.sample(
            lambda kk, xx: head_model.apply(v, xx, False, rngs={"dropout": kk}), k, T, x
        )
    )
    cached = jax.jit(lambda x, k: dropjax.mc.sample_head(prefix, head, k, T, x))
    add("head-only dropout: full sampling", min_time(full_head_only, x, key, repeats=repeats), ref)
    add(
        "head-only dropout: dropjax.mc.sample_head (prefix once)",
        min_time(cached, x, key, repeats=repeats),
        ref,
    )

    # Memory: chunked sampling vs c concurrent single passes (compiled temporaries).
    memory = []
    single = jax.jit(lambda v, x, k: dj_fn(k, v, x))
    single_bytes = temp_bytes(single, v, x, key)
    for c in (1, 4, 16):
        chunked = jax.jit(lambda v, x, k, c=c: dropjax.mc.sample(dj_fn, k, T, v, x, chunk_size=c))
        b = temp_bytes(chunked, v, x, key)
        memory.append(
            dict(
                chunk_size=c,
                temp_bytes=b,
                single_pass_temp_bytes=single_bytes,
                ratio_to_c_single=b / (c * single_bytes),
            )
        )
    lines = [
        f"## Monte Carlo dropout (MLP 784-1024-1024-10, batch {batch}, T = {T})",
        "",
        "| approach | ms | / T deterministic passes |",
        "| --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['impl']} | {r['seconds'] * 1e3:.1f} | {r['ratio_to_T_deterministic']:.2f} |"
        )
    lines += [
        "",
        "| chunk_size c | temp MiB | c single passes MiB | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for m in memory:
        lines.append(
            f"| {m['chunk_size']} | {m['temp_bytes'] / 2**20:.1f} | "
            f"{m['chunk_size'] * m['single_pass_temp_bytes'] / 2**20:.1f} | "
            f"{m['ratio_to_c_single']:.2f} |"
        )
    return {"rows": rows + [dict(memory=memory)], "markdown": "\n".join(lines)}
