"""Active learning with MC dropout on scikit-learn's digits: BALD, BatchBALD and random.

Start from 20 labelled digits (2 per class); every round, retrain a small Flax MLP with
dropout from scratch, run T stochastic forward passes over a random subset of the unlabelled
pool with ``dropjax.mc.sample(..., consistent=True)`` (every pool point sees the same T
dropout masks, so row t of the samples is one draw of the network), score the pool with
``dropjax.acquisition`` and "label" the 10 best points. Random acquisition is the baseline.

``consistent=True`` matters for BatchBALD, which scores a *batch* by the joint mutual
information of its labels: that needs the labels of different pool points to come from the
same network in each sample. Per-point scores (BALD) do not care.

Run: python examples/active_learning.py   (about a minute on a laptop CPU)
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import dropjax
from dropjax import acquisition, mc

RATE = 0.3  # probability of dropping a hidden unit
INITIAL, ACQUIRE, ROUNDS = 20, 10, 10  # 20 labels, then +10 per round: 20 .. 120
POOL_SUBSET = 500  # unlabelled points scored per round (fixed size: one compiled program)
NUM_SAMPLES = 20  # MC dropout samples T
STEPS, BATCH = 300, 32


class MLP(nn.Module):
    """64 -> 128 -> 128 -> 10 with dropout after each hidden layer (on when given a key)."""

    @nn.compact
    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        keys = jax.random.split(key) if key is not None else (None, None)
        for k in keys:
            x = nn.relu(nn.Dense(128)(x))
            x = dropjax.dropout(k, x, RATE, deterministic=key is None)
        return nn.Dense(10)(x)


model = MLP()
optimizer = optax.adam(1e-3)


@jax.jit
def fit(key, x_lab, y_lab, count):
    """Trains from scratch on the first ``count`` rows of the (padded) labelled set."""
    init_key, data_key, drop_key = jax.random.split(key, 3)
    params = model.init(init_key, x_lab[:1])

    def step(i, carry):
        params, opt_state = carry
        rows = jax.random.randint(jax.random.fold_in(data_key, i), (BATCH,), 0, count)

        def loss_fn(p):
            logits = model.apply(p, x_lab[rows], jax.random.fold_in(drop_key, i))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y_lab[rows]).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    params, _ = jax.lax.fori_loop(0, STEPS, step, (params, optimizer.init(params)))
    return params


@jax.jit
def mc_probs(params, key, x_pool):
    """``(T, N, 10)`` MC dropout probabilities; sample t uses one mask for the whole pool."""

    def predict(k, x):
        return jax.nn.softmax(model.apply(params, x, k))

    return mc.sample(predict, key, NUM_SAMPLES, x_pool, consistent=True)


@jax.jit
def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(model.apply(params, x), -1) == y)


def acquire(strategy, params, x_pool, key):
    """Positions (in ``x_pool``) of the next ``ACQUIRE`` points to label."""
    if strategy == "random":
        return np.arange(ACQUIRE)  # the pool subset is already a random draw
    probs = mc_probs(params, key, x_pool)
    if strategy == "bald":
        return np.asarray(jax.lax.top_k(acquisition.bald(probs), ACQUIRE)[1])
    # BatchBALD: exact joint entropies while 10**n <= 1000, then the sampled estimator.
    return np.asarray(acquisition.batch_bald(probs, ACQUIRE, key=key).indices)


def run(strategy, x, y, x_test, y_test, seed=0):
    rng = np.random.default_rng(seed)
    labelled = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 2, replace=False) for c in range(10)]
    )
    key = jax.random.key(seed)
    curve = []
    for r in range(ROUNDS + 1):
        count = len(labelled)
        padded = np.pad(labelled, (0, INITIAL + ROUNDS * ACQUIRE - count))  # fixed shapes
        params = fit(jax.random.fold_in(key, r), x[padded], y[padded], count)
        curve.append(float(accuracy(params, x_test, y_test)))
        if r == ROUNDS:
            break
        unlabelled = np.setdiff1d(np.arange(len(y)), labelled)
        pool = rng.permutation(unlabelled)[:POOL_SUBSET]
        picked = acquire(strategy, params, x[pool], jax.random.fold_in(key, 1000 + r))
        labelled = np.concatenate([labelled, pool[picked]])
    return curve


def main() -> None:
    start = time.perf_counter()
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = perm[:-500], perm[-500:]
    labels = [INITIAL + r * ACQUIRE for r in range(ROUNDS + 1)]
    print(f"pool {len(train)} digits, test {len(test)}; test accuracy after each round:")
    print(f"{'labels':>16s} " + " ".join(f"{n:5d}" for n in labels))
    for strategy in ("random", "bald", "batch_bald"):
        curve = run(strategy, x[train], y[train], x[test], y[test])
        print(f"{strategy:>16s} " + " ".join(f"{a:5.3f}" for a in curve))
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
