"""Where the experiment harness's training step spends its time: a ``jax.profiler`` trace by layer.

Usage::

    XLA_FLAGS="--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false \\
    intra_op_parallelism_threads=1" python -m benchmarks.profile_step --model convnet_quick

It traces one :meth:`experiments.harness.train.Trainer.segment` of ``--steps`` steps (batch 100, one
replica, synthetic data of the model's shape, standard dropout 0.5, as in
``benchmarks.torch_vs_harness``) after two warm-up segments, then sums the time of every
XLA operation that ran on each device's thread and attributes it to a layer and a pass
through the compiled HLO's ``op_name`` metadata: ``fwd conv1`` is the forward convolution
of ``conv1`` and its fused neighbours, ``bwd conv1`` its gradient, ``all-reduce`` the
gradient sum across devices (when the batch is split over several), including the wait for
the slowest device. The table is in milliseconds per step and per device, or per thread
when one device runs on XLA's thread pool (without the single-thread flags, independent
operations run concurrently on the pool's threads, each on one thread); it goes to
``benchmarks/results/profile_<model>_<device>_<n>devices_<1thread|pool>.md``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import tempfile
from pathlib import Path

import jax

from benchmarks.common import command_line, device_label, write_text_atomic
from benchmarks.torch_vs_harness import JAX_NETS, synthetic_trainer

RESULTS = Path(__file__).resolve().parent / "results"


def _op_layers(hlo_text: str, model_name: str) -> dict[str, str]:
    """Maps each HLO instruction name to ``"<pass> <layer>"`` from its ``op_name`` metadata."""
    out = {}
    pattern = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*?op_name=\"([^\"]+)\"")
    for line in hlo_text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        name, op_name = match.groups()
        if name.startswith(("all-reduce", "all-gather", "reduce-scatter")):
            out[name] = "all-reduce"
            continue
        found = re.search(rf"(transpose\()?jvp\({model_name}\)\)?/([^/]+)/", op_name)
        if found:
            scope = found.group(2)  # a submodule, or a jitted helper between the layers
            layer = "pooling, ReLU" if scope.startswith("jit(") else scope
            out[name] = f"{'bwd' if found.group(1) else 'fwd'} {layer}"
        elif re.search(rf"jvp\({model_name}\)", op_name):
            out[name] = f"{'bwd' if 'transpose(' in op_name else 'fwd'} pooling, ReLU"
        else:
            out[name] = "loss, optimizer, batch"
    return out


def profile(model_name: str, steps: int) -> dict:
    model, shape = JAX_NETS[model_name]
    trainer = synthetic_trainer(model, shape, steps)
    state = trainer.init([0])
    for _ in range(2):
        jax.block_until_ready(trainer.segment(state, 0, [0], steps))
    layers = _op_layers(trainer._executables[("segment", steps, 1)].as_text(), type(model).__name__)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            jax.block_until_ready(trainer.segment(state, 0, [0], steps))
        trace_file = next(Path(trace_dir).rglob("*perfetto_trace.json.gz"))
        trace = json.loads(gzip.decompress(trace_file.read_bytes()))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name"
    }
    per_thread: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in events:
        if e.get("ph") != "X" or e["name"] not in layers:
            continue
        thread = (e["pid"], e["tid"])
        per_thread[thread][layers[e["name"]]] += e["dur"] / 1e3 / steps
    busiest = max(sum(c.values()) for c in per_thread.values())
    # One thread per device does its work (XLA's single-thread flags); drop stray threads.
    devices = sorted(
        (t for t, c in per_thread.items() if sum(c.values()) > 0.05 * busiest),
        key=lambda t: threads.get(t, ""),
    )
    return {
        "model": model_name,
        "devices": jax.device_count(),
        "steps": steps,
        "ms_per_step": [dict(per_thread[t]) for t in devices],
    }


def _markdown(result: dict, meta: dict) -> str:
    rows = sorted(
        {k for d in result["ms_per_step"] for k in d},
        key=lambda k: -max(d.get(k, 0.0) for d in result["ms_per_step"]),
    )
    n = len(result["ms_per_step"])
    # With XLA's thread pool one device's operations run on several threads.
    unit = "device" if n == result["devices"] else "thread"
    head = " | ".join(f"{unit} {i}" for i in range(n))
    lines = [
        f"## Harness step of {result['model']} by layer, {meta['device']}, "
        f"{result['devices']} device(s)",
        "",
        f"Command: `{meta['command']}`. jax {meta['jax']}; one replica, batch 100 "
        f"({100 // result['devices']} per device), ms per step, summed over one traced "
        f"segment of {result['steps']} steps.",
        *([f"Conditions: {meta['conditions']}."] if meta.get("conditions") else []),
        "",
        f"| layer | {head} |",
        "|---|" + "---|" * n,
    ]
    for row in rows:
        cells = " | ".join(f"{d.get(row, 0.0):.2f}" for d in result["ms_per_step"])
        lines.append(f"| {row} | {cells} |")
    totals = " | ".join(f"**{sum(d.values()):.2f}**" for d in result["ms_per_step"])
    lines.append(f"| **total** | {totals} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(JAX_NETS), default="convnet_quick")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--conditions", default="", help="what else ran, for the results file")
    args = parser.parse_args(argv)
    result = profile(args.model, args.steps)
    meta = {
        "device": device_label(),
        "jax": jax.__version__,
        "conditions": args.conditions,
        "command": command_line("benchmarks.profile_step", argv),
    }
    threads = "1thread" if "multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "") else "pool"
    stem = RESULTS / f"profile_{args.model}_{meta['device']}_{result['devices']}devices_{threads}"
    text = _markdown(result, meta)
    write_text_atomic(stem.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
