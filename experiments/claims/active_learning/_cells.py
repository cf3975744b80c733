"""The cells of :mod:`experiments.claims.active_learning`: what each measures, and how they are
summarised and decided."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.claims.active_learning._protocol import (
    ARMS,
    BALD_TYPE,
    DECIDED,
    NAME,
    PAPER_LABELS,
    PAPER_MAX_LABELS,
    THRESHOLDS,
    ALNet,
    Data,
    Net,
    Preset,
    Programs,
    delta_for,
)
from experiments.harness import data as data_lib
from experiments.harness import stats
from experiments.harness.budget import Budget
from experiments.harness.cells import runs_dir
from experiments.harness.results import write_json_atomic


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


def _initial_state(preset: Preset, data: Data, seeds: list[int], replicas, path):
    """The loop's state and labelled sets: the checkpoint's when it matches this run's
    configuration, else round 0 with each seed's class-balanced initial labels."""
    config = {
        "preset": dataclasses.asdict(preset),
        "seeds": seeds,
        "arms": list(ARMS),
        "data": data.describe(),
    }
    fingerprint = _fingerprint(config)
    state = _load_state(path, fingerprint)
    if state is None:
        start = [initial_labels(data.y_train, preset.initial, data.num_classes, s) for s in seeds]
        labelled = np.stack([start[s] for _, s in replicas])
        state = {"fingerprint": fingerprint, "round": 0, "history": [], "resumed_from": None}
    else:
        labelled = np.asarray(state["labelled"], np.int64)
        state["resumed_from"] = state["round"]
    return state, labelled


def _show(bar, acc: np.ndarray, replicas, count: int) -> None:
    """The progress bar's step: labels so far and each arm's mean accuracy."""
    bar.update(1)
    means = {arm: acc[[i for i, r in enumerate(replicas) if r[0] == arm]].mean() for arm in ARMS}
    bar.set_postfix(labels=count, **{a[:6]: f"{m:.3f}" for a, m in means.items()})


def run_loop(
    preset: Preset, data: Data, seeds: list[int], *, name: str, quiet: bool, budget: Budget
) -> dict[str, Any]:
    """Runs (or resumes) every round for every arm x seed; returns the raw history."""
    num_seeds = len(seeds)
    replicas = [(arm, s) for arm in ARMS for s in range(num_seeds)]
    num_rounds = (preset.max_labels - preset.initial) // preset.acquire + 1
    path = checkpoint_path(name)
    state, labelled = _initial_state(preset, data, seeds, replicas, path)
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
                _show(bar, acc, replicas, count)
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
    for arm in DECIDED:
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
                saving, +1, delta_for(arm, key), coverage=coverage, substitute=substitute
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
        "paper_labels": PAPER_LABELS,
    }
