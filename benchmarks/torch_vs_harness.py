"""The experiment harness's training step vs the same step in PyTorch, on this CPU.

Usage (PyTorch is an optional benchmark dependency: ``pip install -e ".[bench,torch]"``)::

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        taskset -c 0 python -m benchmarks.torch_vs_harness --threads 1

For LeNet (Caffe's MNIST net, batch 100, dropout 0.5 on the last FC input) and ConvNet-Quick
(Caffe's ``cifar10_quick``, 32x32x3, batch 100, dropout 0.5 on the inputs of both FC
layers), with SGD momentum 0.9 and weight decay, it times one training step:

* ``torch``: PyTorch eager, ``torch.set_num_threads(threads)``; R replicas are R models
  stepped one after another (what a researcher running R seeds in one process does);
* ``harness``: :meth:`experiments.harness.train.Trainer.segment`, i.e. ``steps`` iterations in one
  ``lax.scan`` with on-device shuffling and the R replicas ``vmap``-ed.

Both sides run in the same process, alternately, so that a busy machine slows both alike;
the figure is the minimum over repeats, in milliseconds per step and per replica. Compare
at the same thread count: pass ``--threads 1`` with XLA's single-thread flags (above), or
``--threads 2`` without them, or split the batch over two host devices of one thread each
(``--xla_force_host_platform_device_count=2`` with the single-thread flags: the harness's
data-parallel mesh, faster than Eigen's two threads for ConvNet-Quick). Results go to
``benchmarks/results/torch_vs_harness_<device>_<threads>t[_<n>devices].{json,md}``
(atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import command_line, write_text_atomic
from experiments.harness.host_devices import default_split
from experiments.harness.models import ConvNetQuick, DropoutConfig, LeNet
from experiments.harness.results import write_json_atomic
from experiments.harness.train import ArrayData, TrainConfig, Trainer

BATCH = 100
RESULTS = Path(__file__).resolve().parent / "results"


def _torch_models(torch):
    nn = torch.nn

    class TorchLeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            x = nn.functional.max_pool2d(self.conv1(x), 2, 2)
            x = nn.functional.max_pool2d(self.conv2(x), 2, 2)
            x = torch.relu(self.ip1(x.flatten(1)))
            return self.ip2(self.drop(x))

    class TorchQuick(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 32, 5, padding=2), nn.Conv2d(32, 32, 5, padding=2)
            self.c3 = nn.Conv2d(32, 64, 5, padding=2)
            self.ip1, self.ip2 = nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            f = nn.functional
            x = torch.relu(f.max_pool2d(self.c1(x), 3, 2, ceil_mode=True))
            x = f.avg_pool2d(torch.relu(self.c2(x)), 3, 2, ceil_mode=True)
            x = f.avg_pool2d(torch.relu(self.c3(x)), 3, 2, ceil_mode=True)
            x = self.ip1(self.drop(x.flatten(1)))
            return self.ip2(self.drop(x))

    return {"lenet": (TorchLeNet, (1, 28, 28)), "convnet_quick": (TorchQuick, (3, 32, 32))}


def _torch_timer(torch, build, shape, replicas: int, steps: int):
    torch.manual_seed(0)
    models = [build() for _ in range(replicas)]
    opts = [
        torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for m in models
    ]
    x = torch.randn(BATCH, *shape)
    y = torch.randint(0, 10, (BATCH,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def run():
        for _ in range(steps):
            for m, opt in zip(models, opts, strict=True):
                opt.zero_grad(set_to_none=True)
                loss_fn(m(x), y).backward()
                opt.step()

    return run


# The harness's models as benchmarked here: standard dropout 0.5, NHWC input shape.
JAX_NETS = {
    "lenet": (LeNet(dropout=DropoutConfig("standard", 0.5)), (28, 28, 1)),
    "convnet_quick": (ConvNetQuick(dropout=DropoutConfig("standard", 0.5)), (32, 32, 3)),
}


def synthetic_trainer(model, shape, steps: int) -> Trainer:
    """A harness :class:`Trainer` on 10 batches of Gaussian images of ``shape``, with the
    benchmark's SGD (lr 0.01, momentum 0.9, weight decay 5e-4, batch 100)."""
    rng = np.random.default_rng(0)
    n = 10 * BATCH
    images = rng.standard_normal((n, *shape), dtype=np.float32)
    labels = rng.integers(0, 10, n).astype(np.int32)
    data = ArrayData(images, labels, images[:BATCH], labels[:BATCH], "synthetic")
    cfg = TrainConfig(
        iterations=steps, batch_size=BATCH, learning_rate=0.01, momentum=0.9,
        weight_decay=5e-4, eval_every=steps,
    )  # fmt: skip
    return Trainer(model, data, cfg)


def _harness_timer(model, shape, replicas: int, steps: int):
    """The timed call, and how the trainer shares it over the devices."""
    trainer = synthetic_trainer(model, shape, steps)
    seeds = list(range(replicas))
    state = trainer.init(seeds)
    run = lambda: jax.block_until_ready(trainer.segment(state, 0, seeds, steps))
    return run, trainer.device_split


def measure(threads: int, steps: int, repeats: int, replica_counts) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    torch_nets = _torch_models(torch)
    rows = []
    for name in ("lenet", "convnet_quick"):
        for replicas in replica_counts:
            t_run = _torch_timer(torch, *torch_nets[name], replicas, steps)
            h_run, split = _harness_timer(*JAX_NETS[name], replicas, steps)
            t_run(), h_run()  # warm-up, compile
            best = {"torch": float("inf"), "harness": float("inf")}
            for _ in range(repeats):  # alternate, so a busy machine slows both alike
                for label, fn in (("torch", t_run), ("harness", h_run)):
                    start = time.perf_counter()
                    fn()
                    best[label] = min(best[label], time.perf_counter() - start)
            per = {k: 1e3 * v / steps / replicas for k, v in best.items()}
            rows.append(
                {
                    "model": name,
                    "replicas": replicas,
                    "torch_ms_per_replica_step": round(per["torch"], 2),
                    "harness_ms_per_replica_step": round(per["harness"], 2),
                    "harness_over_torch": round(per["harness"] / per["torch"], 3),
                    "split": split["split"],
                    "devices": split["devices"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _markdown(rows, meta) -> str:
    lines = [
        f"## Harness vs PyTorch training step, {meta['device']}, {meta['threads']} thread(s)",
        "",
        f"Command: `{meta['command']}`. torch {meta['torch']}, jax {meta['jax']}; batch "
        f"{BATCH}; ms per step per replica, minimum of {meta['repeats']} alternating runs of "
        f"{meta['steps']} steps. Goal: harness <= torch.",
        *([f"Conditions: {meta['conditions']}."] if meta.get("conditions") else []),
        "",
        "| model | R | harness devices | torch | harness | harness / torch | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "met" if r["harness_over_torch"] <= 1.0 else "not met"
        lines.append(
            f"| {r['model']} | {r['replicas']} | {_devices(r)} "
            f"| {r['torch_ms_per_replica_step']:.1f} ms "
            f"| {r['harness_ms_per_replica_step']:.1f} ms | {r['harness_over_torch']:.2f}x "
            f"| {met} |"
        )
    return "\n".join(lines) + "\n"


def _devices(row) -> str:
    """``"2 (replicas)"``: how many devices the harness used and how it split the work
    (rows from before the split was recorded: ``"-"``)."""
    return f"{row['devices']} ({row['split']})" if "split" in row else "-"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="PyTorch intra-op threads")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--conditions", default="", help="what else ran, for the results file")
    args = parser.parse_args(argv)
    import torch

    rows = measure(args.threads, args.steps, args.repeats, args.replicas)
    device = jax.devices()[0].device_kind
    meta = {
        "device": device,
        "threads": args.threads,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "split": default_split(jax.process_count()),
        "torch": torch.__version__,
        "jax": jax.__version__,
        "steps": args.steps,
        "conditions": args.conditions,
        "repeats": args.repeats,
        "command": command_line("benchmarks.torch_vs_harness", argv),
    }
    split = f"_{jax.device_count()}devices_{meta['split']}" if jax.device_count() > 1 else ""
    stem = RESULTS / f"torch_vs_harness_{device}_{args.threads}t{split}"
    write_json_atomic(stem.with_suffix(".json"), {"meta": meta, "rows": rows})
    text = _markdown(rows, meta)
    write_text_atomic(stem.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
