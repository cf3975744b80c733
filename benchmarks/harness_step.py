"""Per-step cost of LeNet training inside the experiment harness vs a bare jitted step.

Usage: ``python -m benchmarks.harness_step [--steps 50] [--repeats 3] [--replicas 1 4]``.

For each replica count R it times, per SGD step (batch 100, MNIST-shaped data, standard
dropout 0.5 before the last layer, SGD momentum 0.9 with weight decay):

* ``bare``: the same model (``experiments.harness.models.LeNet``) and optimiser in a plain
  ``jax.jit`` step (dropout keys folded in inside it, parameters and optimiser state
  donated) called from a Python loop on one batch already on the device (``vmap``-ed
  over R parameter sets for R > 1);
* ``bare step in scan``: that step, ``steps`` times in one jitted ``lax.scan`` (what the
  harness does, minus shuffling, gathering and bookkeeping);
* ``harness``: :meth:`experiments.harness.train.Trainer.segment`, i.e. ``steps`` iterations in one
  ``lax.scan`` with on-device shuffling, batch gathering, per-step keys and the replica
  ``vmap``;
* ``bare, stock conv``: the bare step with ``flax.linen.Conv`` on ``lax.conv_general_dilated``
  (what the model would use without :mod:`dropjax.cpu_conv`), and the same in a
  ``lax.scan``, which shows the XLA:CPU slowdown the harness avoids.

Times are the minimum over repeats after a warm-up, in milliseconds per step.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from experiments.harness.models import DropoutConfig, LeNet
from experiments.harness.train import ArrayData, TrainConfig, Trainer

BATCH = 100


class StockLeNet(nn.Module):
    """LeNet as in ``experiments.harness.models`` but on stock ``nn.Conv`` (no CPU workaround)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.max_pool(nn.Conv(20, (5, 5), padding="VALID")(x), (2, 2), strides=(2, 2))
        x = nn.max_pool(nn.Conv(50, (5, 5), padding="VALID")(x), (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(500)(x.reshape(x.shape[0], -1)))
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(10)(x)


def _min_ms_per_step(fn, steps: int, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (compiles)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / steps


def _bare(model, tx, x, y, replicas: int, steps: int, repeats: int, *, scan: bool = False):
    def init(key):
        params = model.init(key, x[:1], train=False)["params"]
        return params, tx.init(params)

    def step(params, opt_state, key):
        def loss(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    keys = jax.random.split(jax.random.key(0), replicas)
    params, opt_state = jax.vmap(init)(keys)

    def replicated_step(params, opt_state, t):
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, t)
        return jax.vmap(step)(params, opt_state, step_keys)

    if scan:
        body = lambda carry, t: (replicated_step(*carry, t), None)
        run = jax.jit(lambda p, o: lax.scan(body, (p, o), jnp.arange(steps))[0])
        return _min_ms_per_step(lambda: run(params, opt_state), steps, repeats)
    jitted = jax.jit(replicated_step, donate_argnums=(0, 1))  # update in place
    counters = [jnp.asarray(t, jnp.int32) for t in range(steps)]  # on device before timing

    def loop():
        p, o = jax.tree.map(jnp.copy, (params, opt_state))  # the donated copies
        for t in counters:
            p, o = jitted(p, o, t)
        return p

    return _min_ms_per_step(loop, steps, repeats)


def measure(steps: int, repeats: int, replica_counts, stock: bool) -> list[dict]:
    """Per-step milliseconds for each replica count (rows as in the module docstring)."""
    rng = np.random.default_rng(0)
    n = 60_000
    images = rng.random((n, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, n).astype(np.int32)
    data = ArrayData(images, labels, images[:1000], labels[:1000], "synthetic-mnist-shaped")
    cfg = TrainConfig(
        iterations=steps, batch_size=BATCH, learning_rate=0.01, momentum=0.9,
        weight_decay=5e-4, eval_every=steps,
    )  # fmt: skip
    tx = cfg.optimizer()
    model = LeNet(dropout=DropoutConfig("standard", 0.5))
    x, y = jnp.asarray(images[:BATCH]), jnp.asarray(labels[:BATCH])
    rows = []
    for replicas in replica_counts:
        bare = _bare(model, tx, x, y, replicas, steps, repeats)
        bare_scan = _bare(model, tx, x, y, replicas, steps, repeats, scan=True)
        trainer = Trainer(model, data, cfg)
        seeds = list(range(replicas))
        state = trainer.init(seeds)
        run_segment = lambda tr=trainer, s=state, z=seeds: tr.segment(s, 0, z, steps)
        harness = _min_ms_per_step(run_segment, steps, repeats)
        stock_ms = stock_scan = float("nan")
        if stock:
            stock_ms = _bare(StockLeNet(), tx, x, y, replicas, steps, repeats)
            few = max(2, steps // 10)  # the slow case: fewer steps
            stock_scan = _bare(StockLeNet(), tx, x, y, replicas, few, 1, scan=True)
        rows.append(
            dict(replicas=replicas, bare_ms=bare, bare_scan_ms=bare_scan, harness_ms=harness,
                 stock_conv_ms=stock_ms, stock_conv_scan_ms=stock_scan)
        )  # fmt: skip
    return rows


def _table(rows) -> list[str]:
    lines = [
        "| R | bare jit step | bare step in scan | harness | harness / bare "
        "| harness / bare in scan | stock conv, jit step | stock conv, in scan |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['replicas']} | {r['bare_ms']:.1f} ms | {r['bare_scan_ms']:.1f} ms "
            f"| {r['harness_ms']:.1f} ms | {r['harness_ms'] / r['bare_ms']:.2f} "
            f"| {r['harness_ms'] / r['bare_scan_ms']:.2f} | {r['stock_conv_ms']:.1f} ms "
            f"| {r['stock_conv_scan_ms']:.1f} ms |"
        )
    return lines


def run(*, quick: bool = False) -> dict:
    """The suite's entry point (``python -m benchmarks``): R = 1 and 4, ms per step."""
    rows = measure(20 if quick else 50, 2 if quick else 3, (1, 4), stock=not quick)
    title = f"## LeNet training step in the harness (batch {BATCH}), ms per step"
    return {"rows": rows, "markdown": "\n".join([title, "", *_table(rows)])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--no-stock", action="store_true", help="skip the stock-conv rows")
    args = parser.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}")
    print(f"LeNet, batch {BATCH}, {args.steps} steps per run, min of {args.repeats} runs\n")
    rows = measure(args.steps, args.repeats, args.replicas, stock=not args.no_stock)
    print("\n".join(_table(rows)))


if __name__ == "__main__":
    main()
