"""Deep Bayesian active learning with MC dropout (Gal, Islam & Ghahramani, ICML 2017, Fig. 1).

**Beyond the seeds.** None of the project's seed documents has this experiment: it puts
:mod:`dropjax.mc` and :mod:`dropjax.acquisition` to work on the paper's MNIST protocol.

Claim (Section 5.1, Figure 1): acquisition functions that use the MC dropout posterior
(BALD, variation ratios, max entropy) reach a given test accuracy with markedly fewer
labels than random acquisition. We add BatchBALD (Kirsch et al., 2019), which selects the
10 points of a round jointly.

Protocol (the paper's, with its code's choices where the text is silent):

* MNIST; the initial training set is 20 labelled images, 2 per class, drawn with the seed;
  every round acquires 10 images from the rest of the training set (the pool) until
  ``max_labels`` labels.
* Model, retrained from scratch every round: conv - ReLU - conv - ReLU - max-pool - dropout
  0.25 - dense 128 - ReLU - dropout 0.5 - dense 10 (32 filters of 4x4 in the ``paper``
  preset), Adam (lr 1e-3), batch 128, 50 epochs over the labelled set, an L2 penalty
  ``c / L * ||W_fc||^2`` on the 128-unit layer (``c = 3.5``, ``L`` the number of labels).
  A round trains ``max(min_steps, epochs * ceil(L / batch))`` steps whose batches are drawn
  with replacement from the labelled set (so every round runs one compiled program).
* Acquisition: ``T = 20`` MC dropout samples with *consistent* masks
  (``dropjax.mc.sample(..., consistent=True)``) over a random subset of 2,000 pool points,
  redrawn every round (as the paper's code does, to bound the cost); the score picks the
  best 10 of the subset (top-10 for the per-point scores, the greedy joint batch for
  BatchBALD). Dropout sits after the convolutions only, so the convolutional features are
  computed once per pool point and only the head is sampled ``T`` times (the same
  predictive distribution as ``T`` full passes). ``random`` takes 10 points of the subset.
* Test accuracy of the deterministic network (dropout off) after every round.

Arms x seeds (5 x 3 by default) are trained together: every round trains all replicas in
one ``jax.vmap``-ed program. Replica ``(arm, s)`` uses seed ``seed + s``: the arms of a seed
start from the same 20 labels, the same initialisation and dropout keys in every round, and
see the same pool subset order, so they are paired.

Summary: accuracy vs labels (mean and 95% t-interval over seeds); labels needed to reach
90% and 95% test accuracy (the first round at or above it; a seed that never reaches it is
*censored* at ``max_labels + 10``); the fraction of labels saved against random, paired by
seed, decided by :func:`experiments.stats.decide` with "markedly fewer" read as at least 20%
fewer labels. A verdict that censoring could flip is reported as inconclusive.

Presets: ``smoke`` uses scikit-learn's 8x8 digits (1,437 training images as the pool, 360
test images) and a tiny net, up to 40 labels (seconds after compiling). ``quick``: MNIST up
to 300 labels with a smaller net (8 and 16 filters of 5x5, each followed by 2x2 max-pooling,
64 hidden units), batch 32 and at least 100 steps per round, 3 seeds, a fixed 2,000-image
test subset; training dominates its cost (about 8,000 steps of all 15 replicas over the 29
rounds), and the results record the wall time of every round. ``paper``: the protocol
above, up to 1,000 labels, on the full test set. Each round is checkpointed (labelled
indices, metrics so far) under ``$DROPJAX_RUNS/active_learning/<preset>``; rerunning the
same command resumes from the last finished round.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dropjax
from dropjax import acquisition, mc
from dropjax.cpu_conv import conv_general_dilated
from experiments import data as data_lib
from experiments import stats
from experiments.cells import Budget, runs_dir
from experiments.registry import RunContext, register, save_figure_atomic, write_json_atomic

NAME = "active_learning"
SOURCE = "Gal, Islam & Ghahramani, Deep Bayesian Active Learning with Image Data, ICML 2017"
SCOPE = (
    "beyond the seeds: no seed document has this experiment; it exercises dropjax.mc "
    "(consistent masks) and dropjax.acquisition on the paper's MNIST protocol"
)
CLAIM = (
    "BALD-type acquisition (BALD, BatchBALD, max entropy, variation ratio) on MC dropout "
    "needs markedly fewer labels than random acquisition to reach a given test accuracy"
)
ARMS = ("bald", "batch_bald", "max_entropy", "variation_ratio", "random")
BALD_TYPE = ARMS[:4]
THRESHOLDS = (0.90, 0.95)
MARKED_SAVING = 0.2  # "markedly fewer": at least 20% fewer labels than random
PAPER_MAX_LABELS = 1000
SCORES = {
    "bald": acquisition.bald,
    "max_entropy": acquisition.max_entropy,
    "variation_ratio": acquisition.variation_ratio,
}


@dataclasses.dataclass(frozen=True)
class Net:
    """The convolutional net: ``filters``/``pools`` per conv layer, then the dropout head."""

    filters: tuple[int, ...] = (32, 32)
    kernel: int = 4
    pools: tuple[int, ...] = (1, 2)
    hidden: int = 128
    rates: tuple[float, float] = (0.25, 0.5)


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: data, loop sizes, acquisition and training protocol."""

    dataset: str
    seeds: int
    max_labels: int
    net: Net
    initial: int = 20
    acquire: int = 10
    pool_subset: int = 2000
    num_samples: int = 20
    test_subset: int | None = None
    epochs: int = 50
    min_steps: int = 0
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 3.5
    batchbald_samples: int = 1000
    chunk: int = 500  # inputs per evaluation chunk (bounds activation memory)


PRESETS = {
    "smoke": Preset(
        "digits",
        seeds=2,
        max_labels=40,
        net=Net(filters=(8, 8), kernel=3, pools=(1, 2), hidden=32),
        pool_subset=200,
        num_samples=8,
        epochs=10,
        min_steps=100,
        batch_size=32,
        learning_rate=1e-2,
        weight_decay=0.5,
        batchbald_samples=64,
        chunk=200,
    ),
    "quick": Preset(
        "mnist",
        seeds=3,
        max_labels=300,
        net=Net(filters=(8, 16), kernel=5, pools=(2, 2), hidden=64),
        test_subset=2000,
        epochs=50,
        min_steps=100,
        batch_size=32,
    ),
    "paper": Preset("mnist", seeds=3, max_labels=PAPER_MAX_LABELS, net=Net()),
}

_Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


class ALNet(nn.Module):
    """Conv layers (ReLU, optional max-pool each) then dropout - dense - ReLU - dropout - dense.

    ``features`` is deterministic; ``head`` applies both dropouts when given a key (the first
    on the flattened features, as the paper's dropout after pooling; the second on the
    hidden units) and none without one.
    """

    net: Net
    num_classes: int = 10

    def setup(self) -> None:
        k = self.net.kernel
        self.convs = [_Conv(f, (k, k), padding="VALID") for f in self.net.filters]
        self.fc = nn.Dense(self.net.hidden)
        self.out = nn.Dense(self.num_classes)

    def features(self, x: jax.Array) -> jax.Array:
        for conv, pool in zip(self.convs, self.net.pools, strict=True):
            x = nn.relu(conv(x))
            if pool > 1:
                x = nn.max_pool(x, (pool, pool), strides=(pool, pool))
        return x.reshape(x.shape[0], -1)

    def head(self, h: jax.Array, key: jax.Array | None = None) -> jax.Array:
        on = key is not None
        k1, k2 = jax.random.split(key) if on else (None, None)
        h = dropjax.dropout(k1, h, self.net.rates[0], deterministic=not on)
        h = nn.relu(self.fc(h))
        h = dropjax.dropout(k2, h, self.net.rates[1], deterministic=not on)
        return self.out(h)

    def __call__(self, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return self.head(self.features(x), key)


# --------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True, eq=False)
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str
    num_classes: int

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "num_train": len(self.y_train),
            "num_test": len(self.y_test),
            "input_shape": list(self.x_train.shape[1:]),
            "preprocessing": "uint8 / 255",
        }


def load_data(name: str, test_subset: int | None) -> Data:
    """Images scaled to [0, 1]; the test set optionally cut to a fixed random subset."""
    ds = data_lib.load(name)
    p = data_lib.preprocess(ds, scale=1 / 255)
    x_test, y_test = p.x_test, p.y_test
    if test_subset is not None and test_subset < len(y_test):
        keep = np.sort(np.random.default_rng(12345).permutation(len(y_test))[:test_subset])
        x_test, y_test = x_test[keep], y_test[keep]
    source = ds.source if ds.source == ds.origin else f"{ds.source} (origin: {ds.origin})"
    return Data(p.x_train, p.y_train, x_test, y_test, ds.name, source, ds.num_classes)


def initial_labels(y: np.ndarray, count: int, num_classes: int, seed: int) -> np.ndarray:
    """``count`` training indices, ``count // num_classes`` per class, drawn with ``seed``."""
    rng = np.random.default_rng([seed, 0])
    per_class = count // num_classes
    picks = [
        rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(num_classes)
    ]
    return rng.permutation(np.concatenate(picks))


def pool_subset(labelled: np.ndarray, n: int, size: int, seed: int, round_: int) -> np.ndarray:
    """The first ``size`` unlabelled indices of a permutation drawn with ``(seed, round)``."""
    order = np.random.default_rng([seed, 1, round_]).permutation(n)
    return order[~np.isin(order, labelled)][:size]


# --------------------------------------------------------------------------- compiled parts


class Programs:
    """The jit-compiled pieces of a round, vmapped over replicas where cheap."""

    def __init__(self, model: ALNet, preset: Preset):
        self.model, self.preset = model, preset
        tx = optax.adam(preset.learning_rate)

        def loss_fn(params, x, y, key, decay):
            logits = model.apply({"params": params}, x, key)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return ce + decay * jnp.sum(jnp.square(params["fc"]["kernel"]))

        def fit_one(seed_key, x_lab, y_lab, count, num_steps):
            init_key, data_key, drop_key = jax.random.split(seed_key, 3)
            params = model.init(init_key, x_lab[:1])["params"]
            decay = jnp.float32(preset.weight_decay) / count.astype(jnp.float32)

            def step(i, carry):
                params, opt = carry
                pos = jax.random.randint(
                    jax.random.fold_in(data_key, i), (preset.batch_size,), 0, count
                )
                grads = jax.grad(loss_fn)(
                    params, x_lab[pos], y_lab[pos], jax.random.fold_in(drop_key, i), decay
                )
                with jax.numpy_dtype_promotion("standard"):  # optax's adam mixes int/float
                    updates, opt = tx.update(grads, opt, params)
                return optax.apply_updates(params, updates), opt

            params, _ = jax.lax.fori_loop(0, num_steps, step, (params, tx.init(params)))
            return params

        self.fit = jax.jit(jax.vmap(fit_one, in_axes=(0, 0, 0, None, None)))

        def chunked(fn, x):  # fn over chunks of the inputs: bounded activation memory
            n = x.shape[0]
            size = min(preset.chunk, n)
            num = -(-n // size)
            xs = jnp.pad(x, ((0, num * size - n),) + ((0, 0),) * (x.ndim - 1))
            out = jax.lax.map(fn, xs.reshape(num, size, *x.shape[1:]))
            return out.reshape(num * size, *out.shape[2:])[:n]

        def accuracy_one(params, x, y):
            logits = chunked(lambda xc: model.apply({"params": params}, xc), x)
            return jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))

        self.accuracy = jax.jit(jax.vmap(accuracy_one, in_axes=(0, None, None)))

        def mc_one(params, x_pool, key):
            feats = chunked(
                lambda xc: model.apply({"params": params}, xc, method=ALNet.features), x_pool
            )

            def sample(k, h):
                logits = model.apply({"params": params}, h, k, method=ALNet.head)
                return jax.nn.softmax(logits, axis=-1)

            # Two samples at a time: the dropped features of all replicas stay small.
            return mc.sample(sample, key, preset.num_samples, feats, consistent=True, chunk_size=2)

        self.mc_probs = jax.jit(jax.vmap(mc_one))
        self.scores = {name: jax.jit(fn) for name, fn in SCORES.items()}

    def batch_bald(self, probs: jax.Array, key: jax.Array) -> np.ndarray:
        result = acquisition.batch_bald(
            probs, self.preset.acquire, key=key, num_samples=self.preset.batchbald_samples
        )
        return np.asarray(result.indices)


@functools.lru_cache(maxsize=4)
def _programs(preset: Preset, num_classes: int) -> Programs:
    """One set of compiled programs per preset: a resumed run in the same process reuses it."""
    return Programs(ALNet(preset.net, num_classes), preset)


def _describe(net: Net) -> str:
    convs = ", ".join(
        f"conv {f} {net.kernel}x{net.kernel} ReLU" + (f" maxpool {p}" if p > 1 else "")
        for f, p in zip(net.filters, net.pools, strict=True)
    )
    return (
        f"{convs}, flatten, dropout {net.rates[0]:g}, dense {net.hidden} ReLU, "
        f"dropout {net.rates[1]:g}, dense"
    )


def train_steps(preset: Preset, labels: int) -> int:
    return max(preset.min_steps, preset.epochs * -(-labels // preset.batch_size))


# --------------------------------------------------------------------------- the loop


def _fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_path(preset: str) -> Path:
    """``$DROPJAX_RUNS/active_learning/<preset>/state.json``."""
    return runs_dir() / NAME / preset / "state.json"


def _load_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint:
        raise ValueError(
            f"the checkpoint {path} belongs to another configuration of {NAME} (preset, seeds, "
            "data or protocol differ); delete it to start over"
        )
    return state


def _progress(total: int, initial: int, quiet: bool):
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=NAME, unit="round", dynamic_ncols=True)


def run_loop(
    preset: Preset, data: Data, seeds: list[int], *, name: str, quiet: bool, budget: Budget
) -> dict[str, Any]:
    """Runs (or resumes) every round for every arm x seed; returns the raw history."""
    num_seeds = len(seeds)
    replicas = [(arm, s) for arm in ARMS for s in range(num_seeds)]
    num_rounds = (preset.max_labels - preset.initial) // preset.acquire + 1
    config = {
        "preset": dataclasses.asdict(preset),
        "seeds": seeds,
        "arms": list(ARMS),
        "data": data.describe(),
    }
    fingerprint = _fingerprint(config)
    path = checkpoint_path(name)
    state = _load_state(path, fingerprint)
    if state is None:
        start = [initial_labels(data.y_train, preset.initial, data.num_classes, s) for s in seeds]
        labelled = np.stack([start[s] for _, s in replicas])
        state = {"fingerprint": fingerprint, "round": 0, "history": [], "resumed_from": None}
    else:
        labelled = np.asarray(state["labelled"], np.int64)
        state["resumed_from"] = state["round"]
    programs = _programs(preset, data.num_classes)
    x_test, y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    bar = _progress(num_rounds, state["round"], quiet)
    budget.start_segment_clock()
    try:
        for round_ in range(state["round"], num_rounds):
            t0 = time.perf_counter()
            count = labelled.shape[1]
            # Pad the labelled set to the final size so every round has the same shapes.
            pad = preset.max_labels - count
            idx = np.pad(labelled, ((0, 0), (0, pad)))
            keys = jnp.stack(
                [jax.random.fold_in(jax.random.key(seeds[s]), round_) for _, s in replicas]
            )
            params = programs.fit(
                keys,
                jnp.asarray(data.x_train[idx]),
                jnp.asarray(data.y_train[idx]),
                jnp.int32(count),
                jnp.int32(train_steps(preset, count)),
            )
            acc = np.asarray(programs.accuracy(params, x_test, y_test))
            t_train = time.perf_counter() - t0
            if count < preset.max_labels:
                labelled = np.concatenate(
                    [labelled, acquire(programs, params, labelled, data, seeds, replicas, round_)],
                    1,
                )
            state["history"].append(
                {
                    "labels": count,
                    "accuracy": acc.tolist(),
                    "train_eval_s": round(t_train, 3),
                    "round_s": round(time.perf_counter() - t0, 3),
                }
            )
            state["round"] = round_ + 1
            state["labelled"] = labelled.tolist()
            if jax.process_index() == 0:
                write_json_atomic(path, state)
            if bar is not None:
                bar.update(1)
                means = {
                    arm: acc[[i for i, r in enumerate(replicas) if r[0] == arm]].mean()
                    for arm in ARMS
                }
                bar.set_postfix(labels=count, **{a[:6]: f"{m:.3f}" for a, m in means.items()})
            if round_ + 1 < num_rounds:
                budget.check()
    finally:
        if bar is not None:
            bar.close()
    return state


def acquire(programs, params, labelled, data, seeds, replicas, round_) -> np.ndarray:
    """The next ``acquire`` training indices of every replica, ``(R, acquire)``."""
    preset = programs.preset
    pools = np.stack(
        [
            pool_subset(labelled[r], len(data.y_train), preset.pool_subset, seeds[s], round_)
            for r, (_, s) in enumerate(replicas)
        ]
    )
    mc_keys = jnp.stack(
        [jax.random.fold_in(jax.random.key(seeds[s] + 10_000), round_) for _, s in replicas]
    )
    needs_mc = [r for r, (arm, _) in enumerate(replicas) if arm != "random"]
    probs = programs.mc_probs(
        jax.tree.map(lambda a: a[np.asarray(needs_mc)], params),
        jnp.asarray(data.x_train[pools[needs_mc]]),
        mc_keys[np.asarray(needs_mc)],
    )
    chosen = np.empty((len(replicas), preset.acquire), np.int64)
    for r, (arm, s) in enumerate(replicas):
        if arm == "random":
            pick = np.arange(preset.acquire)  # the pool subset is already a random draw
        else:
            p = probs[needs_mc.index(r)]
            if arm == "batch_bald":
                key = jax.random.fold_in(jax.random.key(seeds[s] + 20_000), round_)
                pick = programs.batch_bald(p, key)
            else:
                pick = np.asarray(jax.lax.top_k(programs.scores[arm](p), preset.acquire)[1])
        chosen[r] = pools[r][pick]
    return chosen


# --------------------------------------------------------------------------- summary


def labels_to(labels: list[int], accuracy: np.ndarray, target: float) -> int | None:
    """The first label count whose accuracy is at least ``target`` (None: never)."""
    hit = np.flatnonzero(accuracy >= target)
    return int(labels[hit[0]]) if hit.size else None


def _censoring_safe(decision: dict[str, Any], arm_censored: bool, base_censored: bool) -> dict:
    """A verdict that a censored seed could flip becomes inconclusive.

    A censored count is a lower bound: for the arm it can only make the arm look better
    (so ``reproduced`` is not safe), for random only worse (so ``refuted`` and
    ``contradicted`` are not safe).
    """
    verdict = decision["verdict"]
    unsafe = (verdict == "reproduced" and arm_censored) or (
        verdict in ("refuted", "contradicted") and base_censored
    )
    if unsafe:
        decision = dict(decision, verdict="inconclusive", headline="inconclusive")
        decision["note"] = "censored seeds (target not reached within max_labels) could flip it"
    return decision


def _combine(verdicts: list[str]) -> str:
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if any(v == "reproduced" for v in verdicts) and not any(
        v in ("refuted", "contradicted") for v in verdicts
    ):
        return "partly reproduced"
    if all(v in ("refuted", "contradicted") for v in verdicts):
        return "not reproduced"
    if any(v == "indicative" for v in verdicts) and not any(
        v in ("refuted", "contradicted", "inconclusive") for v in verdicts
    ):
        return "indicative"
    return "mixed" if any(v == "reproduced" for v in verdicts) else "inconclusive"


def summarise(
    history: list[dict[str, Any]], preset: Preset, num_seeds: int, substitute: bool
) -> dict[str, Any]:
    """Curves with CIs, labels-to-accuracy, savings against random and the verdicts."""
    labels = [h["labels"] for h in history]
    acc = np.asarray([h["accuracy"] for h in history])  # (rounds, arms * seeds)
    per_arm = {arm: acc[:, i * num_seeds : (i + 1) * num_seeds].T for i, arm in enumerate(ARMS)}
    censor = preset.max_labels + preset.acquire
    coverage = min(1.0, preset.max_labels / PAPER_MAX_LABELS)
    curves, reach = {}, {}
    for arm, a in per_arm.items():
        curves[arm] = {
            "per_seed": a.tolist(),
            "summary": [stats.mean_ci(a[:, j]) for j in range(a.shape[1])],
            "mean_accuracy": stats.mean_ci(a.mean(1)),  # area under the curve / rounds
        }
        reach[arm] = {}
        for target in THRESHOLDS:
            raw = [labels_to(labels, a[s], target) for s in range(num_seeds)]
            values = [censor if v is None else v for v in raw]
            reach[arm][f"{target:g}"] = {
                "per_seed": raw,
                "reached": sum(v is not None for v in raw),
                "summary": stats.mean_ci(values),
                "censored_at": censor,
            }
    comparisons = {}
    for arm in BALD_TYPE:
        comparisons[arm] = {}
        for target in THRESHOLDS:
            key = f"{target:g}"
            mine, base = reach[arm][key], reach["random"][key]
            if base["reached"] == 0 and mine["reached"] == 0:
                comparisons[arm][key] = {"verdict": "not reached", "headline": "not reached"}
                continue
            a = np.asarray([censor if v is None else v for v in mine["per_seed"]], float)
            b = np.asarray([censor if v is None else v for v in base["per_seed"]], float)
            saving = stats.mean_ci((b - a) / b)
            decision = stats.decide(
                saving, +1, MARKED_SAVING, coverage=coverage, substitute=substitute
            )
            decision = _censoring_safe(
                decision, mine["reached"] < num_seeds, base["reached"] < num_seeds
            )
            comparisons[arm][key] = {"saving": saving, **decision}
        curve = stats.paired_difference(
            per_arm["random"].mean(1), per_arm[arm].mean(1)
        )  # arm - random of the mean accuracy over rounds
        comparisons[arm]["mean_accuracy"] = {
            "difference": curve,
            "verdict": stats.verdict_of_sign(curve, +1),
        }
    primary = f"{THRESHOLDS[0]:g}"
    verdicts = [comparisons[arm][primary]["verdict"] for arm in BALD_TYPE]
    headlines = [comparisons[arm][primary]["headline"] for arm in BALD_TYPE]
    return {
        "labels": labels,
        "curves": curves,
        "labels_to": reach,
        "comparisons": comparisons,
        "verdict": _combine(verdicts),
        "headline": _combine(headlines),
        "coverage": coverage,
    }


# --------------------------------------------------------------------------- render, plot


def _fmt_ci(s: dict[str, Any], digits: int = 0) -> str:
    if s["ci_low"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def _fmt_diff(comp: dict[str, Any]) -> str:
    d = comp["difference"]
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.3f} [n/a] ({comp['verdict']})"
    return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] ({comp['verdict']})"


def render(results: dict[str, Any]) -> str:
    """Markdown: accuracy at a few label counts, labels to 90/95 %, savings and verdicts."""
    cfg, labels = results["config"], results["labels"]
    p = cfg["preset"]
    cols = sorted({0, len(labels) // 2, len(labels) - 1})
    head = " | ".join(f"acc @ {labels[c]}" for c in cols)
    rows = [
        f"| arm | {head} | labels to 90% | saving vs random (90%) | verdict (90%) "
        "| labels to 95% | verdict (95%) |",
        "|---" * (6 + len(cols)) + "|",
    ]
    for arm in ARMS:
        curve = results["curves"][arm]["summary"]
        accs = " | ".join(_fmt_ci(curve[c], 3) for c in cols)
        cells = []
        for target in THRESHOLDS:
            key = f"{target:g}"
            r = results["labels_to"][arm][key]
            if r["reached"] == 0:
                reached = f"> {p['max_labels']} (not reached)"
            else:
                reached = f"{_fmt_ci(r['summary'])} ({r['reached']}/{len(r['per_seed'])} reached)"
            comp = results["comparisons"].get(arm, {}).get(key)
            if comp is None:
                cells.append((reached, "–", "–"))
            elif "saving" not in comp:
                cells.append((reached, "–", comp["headline"]))
            else:
                s = comp["saving"]
                saving = f"{100 * s['mean']:.0f}%" + (
                    f" [{100 * s['ci_low']:.0f}, {100 * s['ci_high']:.0f}]"
                    if s["ci_low"] is not None
                    else ""
                )
                cells.append((reached, saving, comp["headline"]))
        rows.append(
            f"| {arm} | {accs} | {cells[0][0]} | {cells[0][1]} | {cells[0][2]} "
            f"| {cells[1][0]} | {cells[1][2]} |"
        )
    lines = [
        f"**Active learning on {results['data']['name']}** ({results['data']['source']}; "
        f"{results['scope']}): {p['initial']} balanced initial labels, {p['acquire']} acquired "
        f"per round up to {p['max_labels']}, T = {p['num_samples']} MC dropout samples "
        f"(consistent masks) over {p['pool_subset']} random pool points per round, the net "
        "retrained from scratch each round; "
        f"{len(results['seeds'])} seeds (seeds {results['seeds']}). Test accuracy of the "
        "deterministic net, mean [95% t-interval] over seeds; labels to X% is the first label "
        "count at or above X% (censored seeds count as "
        f"{results['labels_to']['random']['0.9']['censored_at']}); saving = paired "
        "(random − arm) / random.",
        "",
        *rows,
        "",
        "Mean accuracy over the rounds (area under the learning curve), arm − random, paired "
        "[95% CI]: "
        + "; ".join(
            f"{arm} {_fmt_diff(results['comparisons'][arm]['mean_accuracy'])}" for arm in BALD_TYPE
        )
        + ".",
        "",
        f"Claim ({results['source']}): {results['claim']}. Verdict at 90% over the BALD-type "
        f"arms: **{results['headline']}** (raw verdict {results['verdict']}; coverage "
        f"{results['coverage']:.2f} of the paper's {PAPER_MAX_LABELS} labels).",
    ]
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = results["labels"]
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for arm in ARMS:
        s = results["curves"][arm]["summary"]
        mean = np.array([x["mean"] for x in s])
        (line,) = ax.plot(labels, mean, label=arm, marker="o", markersize=2.5)
        if s[0]["ci_low"] is not None:
            lo = np.clip([x["ci_low"] for x in s], 0.0, 1.0)
            hi = np.clip([x["ci_high"] for x in s], 0.0, 1.0)
            ax.fill_between(labels, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
    for target in THRESHOLDS:
        ax.axhline(target, color="gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(max(0.0, min(ax.get_ylim()[0], 0.5)), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title(
        f"Active learning on {results['data']['name']}: mean and 95% CI over "
        f"{len(results['seeds'])} seeds",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


@register(
    NAME,
    "MC dropout active learning on MNIST: BALD/BatchBALD/entropy/var-ratio vs random "
    "(Gal et al. 2017, Fig. 1; beyond the seeds)",
)
def run(ctx: RunContext) -> dict[str, Any]:
    """Runs the rounds (resuming from the checkpoint), summarises, plots."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset, preset.test_subset)
    seeds = ctx.seeds(preset.seeds)
    quiet = ctx.quiet or bool(os.environ.get("CI"))
    start = time.perf_counter()
    state = run_loop(
        preset,
        data,
        seeds,
        name=ctx.preset,
        quiet=quiet,
        budget=Budget(ctx.time_budget),
    )
    wall = time.perf_counter() - start
    substitute = data.name != "mnist"
    results = {
        "source": SOURCE,
        "scope": SCOPE,
        "claim": CLAIM,
        "config": {
            "preset": dataclasses.asdict(preset),
            "arms": list(ARMS),
            "model": _describe(preset.net),
            "train_steps_per_round": "max(min_steps, epochs * ceil(labels / batch_size))",
            "claimed_saving": MARKED_SAVING,
        },
        "data": data.describe(),
        "seeds": seeds,
        **summarise(state["history"], preset, len(seeds), substitute),
        "timing": {
            "wall_s": round(wall, 3),
            "resumed_from_round": state["resumed_from"],
            "round_s": [h["round_s"] for h in state["history"]],
        },
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    if jax.process_index() == 0:
        _plot(results, figure)
        path = checkpoint_path(ctx.preset)
        shutil.rmtree(path.parent, ignore_errors=True)  # finished: the results file has it all
    results["figure"] = figure.name
    return results
