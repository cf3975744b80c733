"""XLA:CPU convolution time against the number of input channels, lax vs dropjax.cpu_conv.

Usage::

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        taskset -c 0 python -m benchmarks.cpu_conv_channels

A 5x5 convolution, padding 2, of a batch of 100 32x32 maps with ``C`` input channels into
32 output channels (ConvNet-Quick's first layer when ``C = 3``), for ``C = 1 .. 8``:

* ``forward``: ``lax.conv_general_dilated`` and :func:`dropjax.cpu_conv.conv_general_dilated`;
* ``value and grad``: the value and the kernel gradient of ``sum(conv(x, k) ** 2)`` (what a
  training step's first layer costs; the input needs no gradient there).

On this CPU XLA's convolution runs several times slower for an odd channel count above one
than for the even count above it; :mod:`dropjax.cpu_conv` adds a zero channel in that case.
Times are the minimum over repeats after a warm-up, in milliseconds; results go to
``benchmarks/results/cpu_conv_channels_<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.common import command_line, device_label, min_time, write_text_atomic
from dropjax import cpu_conv
from experiments.harness.results import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"
DN = ("NHWC", "HWIO", "NHWC")
PADS = ((2, 2), (2, 2))


def _timers(conv, x, k):
    forward = jax.jit(lambda x, k: conv(x, k, (1, 1), PADS, dimension_numbers=DN))
    loss = lambda k, x: jnp.sum(conv(x, k, (1, 1), PADS, dimension_numbers=DN) ** 2)
    value_grad = jax.jit(jax.value_and_grad(loss))
    return {"forward": lambda: forward(x, k), "value and grad": lambda: value_grad(k, x)}


def measure(channels, batch: int, repeats: int) -> list[dict]:
    rows = []
    for c in channels:
        x = jax.random.normal(jax.random.key(0), (batch, 32, 32, c))
        k = jax.random.normal(jax.random.key(1), (5, 5, c, 32))
        lax_t = _timers(lax.conv_general_dilated, x, k)
        ours = _timers(cpu_conv.conv_general_dilated, x, k)
        for what in ("forward", "value and grad"):
            ms = {
                name: 1e3 * min_time(timers[what], repeats=repeats)
                for name, timers in (("lax", lax_t), ("cpu_conv", ours))
            }
            row = {"channels": c, "pass": what, **{f"{n}_ms": round(v, 2) for n, v in ms.items()}}
            row["lax_over_cpu_conv"] = round(ms["lax"] / ms["cpu_conv"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _markdown(rows, meta) -> str:
    lines = [
        f"## 5x5 convolution vs input channels, {meta['device']}",
        "",
        f"Command: `{meta['command']}`. jax {meta['jax']}; batch {meta['batch']}, 32x32 maps, "
        "32 output channels, padding 2; ms, minimum over repeats. `value and grad`: value "
        "and kernel gradient (the input needs none in a first layer).",
        "",
        "| C in | pass | lax | dropjax.cpu_conv | lax / cpu_conv |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['channels']} | {r['pass']} | {r['lax_ms']:.2f} ms | {r['cpu_conv_ms']:.2f} ms "
            f"| {r['lax_over_cpu_conv']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=list(range(1, 9)))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = measure(args.channels, args.batch, args.repeats)
    meta = {
        "device": device_label(),
        "jax": jax.__version__,
        "batch": args.batch,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": command_line("benchmarks.cpu_conv_channels", argv),
    }
    stem = RESULTS / f"cpu_conv_channels_{meta['device']}"
    write_json_atomic(stem.with_suffix(".json"), {"meta": meta, "rows": rows})
    write_text_atomic(stem.with_suffix(".md"), _markdown(rows, meta))
    print(_markdown(rows, meta))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
