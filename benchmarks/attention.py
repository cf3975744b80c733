"""Attention with dropout: blockwise (regenerated masks) against materialised attention.

Usage: ``python -m benchmarks.attention [--quick] [--out benchmarks/results]``.

For each sequence length T (self-attention, batch 1, 4 heads, head dim 64, float32) it
compiles the forward pass and the forward+backward pass (gradients of ``out.sum()`` with
respect to q, k, v) of:

* ``dropjax blockwise + dropout``: ``dropjax.dot_product_attention(...,
  implementation="blockwise", dropout_rate=0.1)``;
* ``dropjax blockwise, no dropout``: the same with rate 0;
* ``jax.nn (xla), no dropout``: ``jax.nn.dot_product_attention`` (it has no dropout);
* ``flax.linen + dropout (materialised)``: ``flax.linen.dot_product_attention`` with
  ``dropout_rate=0.1`` and ``broadcast_dropout=False``.

and reports XLA's compiled temporary memory (``memory_analysis().temp_size_in_bytes``) and
the minimum wall time over repeats. A configuration whose compiled temp memory exceeds
4 GiB is compiled (for its memory figure) but not run. A second table compares the
materialised and blockwise paths of dropjax itself at short lengths: the rule
``implementation=None`` uses on CPU. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import dropjax
from benchmarks.common import device_label, min_time, write_text_atomic

HEADS, HEAD_DIM, RATE = 4, 64, 0.1
RUN_LIMIT = 4 * 2**30  # do not run a configuration that needs more temp memory than this
KEY = jax.random.key(0)
GOALS = {
    "fwd+bwd temp memory, blockwise dropout / no dropout": 1.1,
    "fwd+bwd time, blockwise dropout / no dropout": 1.3,
}
COMMAND = "nice -n 10 taskset -c 0 python -m benchmarks.attention"


def _methods():
    def blockwise(rate):
        def f(q, k, v):
            return dropjax.dot_product_attention(
                q, k, v, dropout_key=KEY, dropout_rate=rate, implementation="blockwise"
            )

        return f

    def jax_nn(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, implementation="xla")

    def flax_dropout(q, k, v):
        return nn.dot_product_attention(
            q, k, v, dropout_rng=KEY, dropout_rate=RATE, broadcast_dropout=False
        )

    return {
        "dropjax blockwise + dropout": blockwise(RATE),
        "dropjax blockwise, no dropout": blockwise(0.0),
        "jax.nn (xla), no dropout": jax_nn,
        "flax.linen + dropout (materialised)": flax_dropout,
    }


def _inputs(t: int):
    rng = np.random.default_rng(0)
    return [jnp.asarray(rng.standard_normal((1, t, HEADS, HEAD_DIM), np.float32)) for _ in range(3)]


def _measure(fn, args, repeats: int, warmup: int):
    """Compiled temp memory of fwd and fwd+bwd, and their times when under the limit."""

    def loss(q, k, v):
        return fn(q, k, v).sum()

    row = {}
    for name, f in (("fwd", fn), ("fwd+bwd", jax.value_and_grad(loss, argnums=(0, 1, 2)))):
        compiled = jax.jit(f).lower(*args).compile()
        temp = int(compiled.memory_analysis().temp_size_in_bytes)
        row[f"{name} temp_bytes"] = temp
        seconds = None
        if temp <= RUN_LIMIT:
            seconds = min_time(compiled, *args, repeats=repeats, warmup=warmup)
        row[f"{name} seconds"] = seconds
    return row


def run_lengths(lengths, quick: bool):
    rows = []
    for t in lengths:
        args = _inputs(t)
        long = t >= 16384
        repeats, warmup = (1, 0) if long else ((2, 1) if quick else (3, 1))
        for method, fn in _methods().items():
            print(f"[attention] T={t} {method} ...", flush=True)
            row = {"T": t, "method": method, **_measure(fn, args, repeats, warmup)}
            rows.append(row)
    return rows


def run_crossover(lengths, quick: bool):
    """dropjax's own xla vs blockwise paths with dropout at short lengths (fwd+bwd)."""
    rows = []
    for t in lengths:
        args = _inputs(t)
        for impl in ("xla", "blockwise"):

            def loss(q, k, v, impl=impl):
                return dropjax.dot_product_attention(
                    q, k, v, dropout_key=KEY, dropout_rate=RATE, implementation=impl
                ).sum()

            compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(*args).compile()
            seconds = min_time(compiled, *args, repeats=3 if quick else 7, warmup=1)
            temp = int(compiled.memory_analysis().temp_size_in_bytes)
            rows.append({"T": t, "implementation": impl, "seconds": seconds, "temp_bytes": temp})
    return rows


def _summary(rows):
    out = {}
    by = {(r["T"], r["method"]): r for r in rows}
    for t in sorted({r["T"] for r in rows}):
        drop = by[(t, "dropjax blockwise + dropout")]
        base = by[(t, "dropjax blockwise, no dropout")]
        out[f"fwd+bwd temp memory, blockwise dropout / no dropout [T={t}]"] = (
            drop["fwd+bwd temp_bytes"] / base["fwd+bwd temp_bytes"]
        )
        if drop["fwd+bwd seconds"] and base["fwd+bwd seconds"]:
            out[f"fwd+bwd time, blockwise dropout / no dropout [T={t}]"] = (
                drop["fwd+bwd seconds"] / base["fwd+bwd seconds"]
            )
    return out


def _mib(b):
    return f"{b / 2**20:,.1f}"


def _ms(s):
    return "not run (> 4 GiB)" if s is None else f"{s * 1e3:,.1f}"


def markdown(payload) -> str:
    lines = [
        f"# Attention with dropout on {payload['device']}",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Batch 1, {HEADS} heads, head dim {HEAD_DIM}, float32, self-attention of length T, "
        f"dropout rate {RATE}; gradients of `out.sum()` w.r.t. q, k, v. Memory is XLA's "
        "compiled temporary allocation; time the minimum over repeats (one run at T = 16384). "
        f"jax {payload['jax']}, flax {payload['flax']}; wall time {payload['wall_time_s']} s.",
        "",
        "## Summary against the goals",
        "",
        "| figure | value | goal |",
        "| --- | --- | --- |",
    ]
    for name, value in payload["summary"].items():
        goal = next(g for k, g in GOALS.items() if name.startswith(k))
        mark = "met" if value <= goal else "not met"
        lines.append(f"| {name} | {value:.2f}x | <= {goal}x ({mark}) |")
    lines += [
        "",
        "## Memory and time",
        "",
        "| T | method | fwd temp MiB | fwd+bwd temp MiB | fwd ms | fwd+bwd ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['T']} | {r['method']} | {_mib(r['fwd temp_bytes'])} | "
            f"{_mib(r['fwd+bwd temp_bytes'])} | {_ms(r['fwd seconds'])} | "
            f"{_ms(r['fwd+bwd seconds'])} |"
        )
    lines += [
        "",
        "## dropjax's own paths with dropout at short lengths (fwd+bwd)",
        "",
        '`implementation=None` on CPU uses `"blockwise"` from T x S >= 128 x 128 up.',
        "",
        "| T | implementation | ms | temp MiB |",
        "| --- | --- | --- | --- |",
    ]
    for r in payload["crossover"]:
        lines.append(
            f"| {r['T']} | {r['implementation']} | {r['seconds'] * 1e3:,.2f} | "
            f"{_mib(r['temp_bytes'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(payload, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = payload["rows"]
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        ts = [r["T"] for r in sel]
        mem = [r["fwd+bwd temp_bytes"] / 2**20 for r in sel]
        # The two blockwise lines coincide: draw the dropout one dashed, on top.
        style = dict(marker="o", ms=8)
        if method == "dropjax blockwise + dropout":
            style = dict(marker="x", ms=8, ls="--", color="k", zorder=3)
        ax.plot(ts, mem, label=method, **style)
    ax.axhline(RUN_LIMIT / 2**20, color="k", ls="--", lw=1, label="4 GiB")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("fwd+bwd compiled temp memory (MiB)")
    ax.set_title(f"Attention, batch 1, {HEADS} heads x {HEAD_DIM}, {payload['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, T up to 4096")
    parser.add_argument(
        "--replot", action="store_true", help="re-render the .md and .png from the saved .json"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if args.replot:
        stem = args.out / f"attention_{device_label()}"
        payload = json.loads(stem.with_suffix(".json").read_text())
        write_text_atomic(stem.with_suffix(".md"), markdown(payload))
        plot(payload, stem.with_suffix(".png"))
        return
    start = time.time()
    lengths = (1024, 4096) if args.quick else (1024, 4096, 16384)
    rows = run_lengths(lengths, args.quick)
    print("[attention] crossover ...", flush=True)
    crossover = run_crossover((128, 256, 512, 1024), args.quick)
    payload = {
        "device": device_label(),
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "command": COMMAND + (" --quick" if args.quick else ""),
        "rows": rows,
        "crossover": crossover,
        "summary": _summary(rows),
        "wall_time_s": round(time.time() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"attention_{payload['device']}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(payload, indent=1) + "\n")
    write_text_atomic(stem.with_suffix(".md"), markdown(payload))
    plot(payload, stem.with_suffix(".png"))
    print(markdown(payload))


if __name__ == "__main__":
    main()
