"""The cells of :mod:`experiments.claims.mc_uncertainty`: what each measures, and how they are
summarised and decided."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import dropjax.linen
import dropjax.mc
from dropjax import uncertainty as unc
from experiments.claims.mc_uncertainty._protocol import (
    _TINY,
    CONTEXT_METRICS,
    CURVE_POINTS,
    DECISIONS,
    DELTA_AUROC,
    DELTA_ECE,
    DELTA_NLL,
    HOLDOUT_SEED,
    MEMBER_STRIDE,
    NUM_BINS,
    PAPER_ITERATIONS,
    TPR,
    Preset,
    SeedOutputs,
)
from experiments.claims.mc_uncertainty._render import (
    at_path,
    rows,
)
from experiments.harness import stats
from experiments.harness.models import DropDense, DropoutConfig, LeNet
from experiments.harness.recipes import lenet_images as load_data
from experiments.harness.train import ArrayData, host_replicas


def ood_inputs(name: str, like: ArrayData) -> tuple[np.ndarray, str]:
    """The out-of-distribution test inputs, preprocessed like the in-distribution ones.

    Args:
      name: ``fashion_mnist`` (its test set, scaled by 1/256) or ``noise`` (uniform pixel
        noise on the same grid and scale, as many images as ``like``'s test set, seed 0).
      like: the in-distribution arrays (for the shape and count of the noise).

    Returns:
      ``(x_ood, description)``.
    """
    if name == "noise":
        rng = np.random.default_rng(0)
        shape = like.x_test.shape
        x = (rng.integers(0, 256, size=shape) / 256).astype(np.float32)
        return x, "uniform pixel noise (integers 0..255 / 256), numpy seed 0"
    ood = load_data(name)
    return ood.x_test, f"{ood.name} test set ({ood.source}), uint8 / 256"


def split_holdout(data: ArrayData, size: int) -> tuple[ArrayData, np.ndarray, np.ndarray]:
    """Holds out ``size`` training examples (a fixed permutation, numpy seed 0).

    Args:
      data: the arrays.
      size: how many training examples to hold out (``0 < size < num_train``).

    Returns:
      ``(train_data, x_holdout, y_holdout)``: ``train_data`` keeps the test set and the
      remaining training examples in their original order.
    """
    if not 0 < size < data.num_train:
        raise ValueError(f"holdout must be in (0, {data.num_train}); got {size}")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(data.num_train)
    keep, held = np.sort(perm[:-size]), np.sort(perm[-size:])
    notes = (
        f"{data.notes}; {size} training examples held out (numpy seed {HOLDOUT_SEED} "
        "permutation) to fit the temperatures"
    )
    train_data = ArrayData(
        data.x_train[keep],
        data.y_train[keep],
        data.x_test,
        data.y_test,
        data.name,
        data.source,
        notes,
    )
    return train_data, data.x_train[held], data.y_train[held]


def member_seeds(seeds: list[int], members: int) -> list[int]:
    """Every network's seed, member-major: index ``j * len(seeds) + r`` is member ``j`` of
    the ensemble of ``seeds[r]`` (seed ``seeds[r] + MEMBER_STRIDE * j``; member 0 is the
    single network of the other arms)."""
    if members < 2:
        raise ValueError(f"an ensemble needs at least 2 members; got {members}")
    if max(seeds) - min(seeds) >= MEMBER_STRIDE or min(seeds) < 0:
        raise ValueError(f"seeds must be non-negative and span < {MEMBER_STRIDE}; got {seeds}")
    return [s + MEMBER_STRIDE * j for j in range(members) for s in seeds]


def _feature_fn(model: LeNet):
    """Jitted ``(params, x) -> ReLU(ip1(x))``: the deterministic input of the dropout head."""

    def features(params, x):
        _, state = model.apply(
            {"params": params},
            x,
            train=False,
            capture_intermediates=lambda mdl, _: mdl.name == "ip1",
            mutable=["intermediates"],
        )
        return nn.relu(state["intermediates"]["ip1"]["__call__"][0])

    return jax.jit(features)


def head(cfg: DropoutConfig, num_classes: int = 10) -> DropDense:
    """LeNet's last layer as a standalone module (apply it with ``params["ip2"]``)."""
    return DropDense(num_classes, cfg)


@functools.lru_cache(maxsize=8)
def _head_fns(cfg: DropoutConfig, num_samples: int):
    """Jitted ``(params, h) -> logits`` (dropout off) and ``(params, key, h) -> MC probs``.

    Cached, so replicas and data chunks reuse one compiled program. The sampler must only
    be called inside :func:`dropjax.linen.mc_dropout` (the switch is read when it traces).
    """
    module = head(cfg)

    def deterministic(params, h):
        return module.apply({"params": params}, h, train=False)

    def sampler(params, key, h):
        def one(k, x):
            logits = module.apply({"params": params}, x, train=False, rngs={"dropout": k})
            return jax.nn.softmax(logits, axis=-1)

        return dropjax.mc.sample(one, key, num_samples, h, chunk_size=16)

    return jax.jit(deterministic), jax.jit(sampler)


def head_predictions(
    cfg: DropoutConfig,
    head_params: Any,
    feats: jax.Array,
    key: jax.Array,
    num_samples: int,
    chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic logits and MC softmax samples of the dropout head on ``ip1`` features.

    Args:
      cfg: the head's dropout configuration.
      head_params: ``params["ip2"]`` of a trained LeNet.
      feats: ``(N, 500)`` ReLU features of ``ip1``.
      key: the MC key; data chunk ``c`` uses ``fold_in(key, c)``.
      num_samples: ``T``.
      chunk: inputs per data chunk (bounds the memory of the masks).

    Returns:
      ``(logits, mc)``: ``(N, C)`` logits with dropout off and ``(T, N, C)`` MC softmax
      samples.
    """
    deterministic, sampler = _head_fns(cfg, num_samples)
    starts = range(0, feats.shape[0], chunk)
    det = [np.asarray(deterministic(head_params, feats[s : s + chunk])) for s in starts]
    with dropjax.linen.mc_dropout():  # read at trace time: the sampler traces in here
        mc = [
            np.asarray(sampler(head_params, jax.random.fold_in(key, c), feats[s : s + chunk]))
            for c, s in enumerate(starts)
        ]
    return np.concatenate(det, 0), np.concatenate(mc, 1)


def _softmax(z: np.ndarray) -> np.ndarray:
    return np.asarray(jax.nn.softmax(jnp.asarray(z, jnp.float32), axis=-1))


@jax.jit
def _fit_temperature(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return unc.temperature_scale(logits, labels)[0]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The NLL-optimal temperature of ``(N, C)`` held-out logits (Guo et al., 2017)."""
    return float(_fit_temperature(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)))


def _log_mean(samples: np.ndarray) -> np.ndarray:
    """The log of the sample mean, as logits (floored at the smallest normal float32)."""
    return np.log(np.maximum(samples.mean(0), _TINY))


def arm_predictions(out: SeedOutputs, num_samples: tuple[int, ...]) -> dict[str, Any]:
    """Every arm's predictive probabilities on the test and OOD sets.

    Returns:
      ``{"deterministic": arm, "deterministic_ts": arm, "mc": {T: arm}, "mc_ts": {T: arm},
      "ensemble": arm}``, each ``arm`` a dict with ``in`` and ``out`` (``(n, C)``
      probabilities), ``samples_in`` / ``samples_out`` (the MC samples or the members'
      softmax, else None) and, for the TS arms, the fitted ``temperature``.
    """
    z, y_hold = out.logits, out.labels_holdout
    arms: dict[str, Any] = {
        "deterministic": {"in": _softmax(z["test"]), "out": _softmax(z["ood"])},
    }
    t_det = fit_temperature(z["holdout"], y_hold)
    arms["deterministic_ts"] = {
        "in": _softmax(z["test"] / t_det),
        "out": _softmax(z["ood"] / t_det),
        "temperature": t_det,
    }
    arms["mc"], arms["mc_ts"] = {}, {}
    for t in num_samples:
        s_in, s_out = out.mc["test"][:t], out.mc["ood"][:t]
        arms["mc"][str(t)] = {
            "in": s_in.mean(0),
            "out": s_out.mean(0),
            "samples_in": s_in,
            "samples_out": s_out,
        }
        temp = fit_temperature(_log_mean(out.mc["holdout"][:t]), y_hold)
        arms["mc_ts"][str(t)] = {
            "in": _softmax(_log_mean(s_in) / temp),
            "out": _softmax(_log_mean(s_out) / temp),
            "temperature": temp,
        }
    m_in, m_out = _softmax(out.members["test"]), _softmax(out.members["ood"])
    arms["ensemble"] = {
        "in": m_in.mean(0),
        "out": m_out.mean(0),
        "samples_in": m_in,
        "samples_out": m_out,
    }
    return arms


def arm_metrics(
    p_in: np.ndarray,
    p_out: np.ndarray,
    labels: np.ndarray,
    samples_in: np.ndarray | None = None,
    samples_out: np.ndarray | None = None,
) -> dict[str, float]:
    """Calibration, selective-risk and OOD metrics of one arm.

    Args:
      p_in: ``(N, C)`` predictive probabilities on the in-distribution test set.
      p_out: ``(M, C)`` on the OOD set.
      labels: ``(N,)`` test labels.
      samples_in: ``(T, N, C)`` samples whose mean is ``p_in`` (MC passes or ensemble
        members), for the mutual-information score; None for a single predictor.
      samples_out: the same on the OOD set.

    Returns:
      ``accuracy, nll, ece, aece, cwece, brier, aurc`` and, for each OOD score ``s`` in
      ``entropy``, ``maxprob`` (``1 - max p``) and ``mi`` (with samples),
      ``auroc_s, aupr_s, fpr95_s`` with the OOD set as the positive class.
    """
    correct = p_in.argmax(-1) == labels
    m = {
        "accuracy": float(correct.mean()),
        "nll": unc.negative_log_likelihood(p_in, labels),
        "ece": unc.expected_calibration_error(p_in, labels, NUM_BINS),
        "aece": unc.adaptive_calibration_error(p_in, labels, NUM_BINS),
        "cwece": unc.classwise_calibration_error(p_in, labels, NUM_BINS),
        "brier": unc.brier_score(p_in, labels),
        "aurc": unc.aurc(p_in.max(-1), correct),
    }
    entropy = lambda p: np.asarray(unc.predictive_entropy(p[None]))  # noqa: E731  (T = 1)
    scores = {
        "entropy": (entropy(p_in), entropy(p_out)),
        "maxprob": (1 - p_in.max(-1), 1 - p_out.max(-1)),
    }
    if samples_in is not None:
        scores["mi"] = (
            np.asarray(unc.mutual_information(samples_in)),
            np.asarray(unc.mutual_information(samples_out)),
        )
    is_ood = np.concatenate([np.zeros(len(p_in), bool), np.ones(len(p_out), bool)])
    for name, (s_in, s_out) in scores.items():
        s = np.concatenate([s_in, s_out]).astype(np.float32)
        m[f"auroc_{name}"] = unc.auroc(s, is_ood)
        m[f"aupr_{name}"] = unc.aupr(s, is_ood)
        m[f"fpr95_{name}"] = unc.fpr_at_tpr(s, is_ood, TPR)
    return {k: float(v) for k, v in m.items()}


def evaluate_seed(out: SeedOutputs, num_samples: tuple[int, ...]) -> tuple[dict, dict]:
    """One seed's metrics for every arm, and the arms' predictions (for the figures).

    Returns:
      ``(metrics, arms)``: ``metrics`` mirrors :func:`arm_predictions`' layout with
      :func:`arm_metrics` dicts (plus ``temperature`` for the TS arms).
    """
    arms = arm_predictions(out, num_samples)

    def score(arm: dict) -> dict[str, float]:
        m = arm_metrics(
            arm["in"], arm["out"], out.labels, arm.get("samples_in"), arm.get("samples_out")
        )
        if "temperature" in arm:
            m["temperature"] = arm["temperature"]
        return m

    metrics = {
        k: ({t: score(a) for t, a in v.items()} if k in ("mc", "mc_ts") else score(v))
        for k, v in arms.items()
    }
    return metrics, arms


def _summary_of(per_seed: list[dict]) -> dict:
    """mean_ci over seeds of every leaf, keeping the nesting."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {k: _summary_of([r[k] for r in per_seed]) for k in first}
    return stats.mean_ci(per_seed)


def _context_pairs(t_max: str, members: int) -> list[tuple[str, tuple, tuple]]:
    """(label, arm path, baseline path) of the paired differences reported as context."""
    m = str(members)
    return [
        (f"MC T={t_max} − det. + TS", ("mc", t_max), ("deterministic_ts",)),
        (f"MC T={m} − ensemble M={m} (same test passes)", ("mc", m), ("ensemble",)),
        (f"MC T={t_max} − ensemble M={m}", ("mc", t_max), ("ensemble",)),
        (f"MC + TS T={t_max} − det. + TS", ("mc_ts", t_max), ("deterministic_ts",)),
        ("det. + TS − det.", ("deterministic_ts",), ("deterministic",)),
        (f"ensemble M={m} − det.", ("ensemble",), ("deterministic",)),
    ]


def _resolve(path: tuple[str, ...], t_max: str) -> tuple[str, ...]:
    return tuple(t_max if p == "T" else p for p in path)


def _side(diff: dict, better: int) -> str:
    lo, hi = diff["ci_low"], diff["ci_high"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    if (lo > 0 and better > 0) or (hi < 0 and better < 0):
        return "better"
    if (hi < 0 and better > 0) or (lo > 0 and better < 0):
        return "worse"
    return "n.s."


def summarise(
    per_seed: list[dict],
    num_samples: tuple[int, ...],
    members: int,
    *,
    coverage: float,
    substitute: bool,
) -> dict[str, Any]:
    """Means and CIs of every metric, the decided comparisons and the context differences."""
    t_max = str(max(num_samples))
    summary = _summary_of(per_seed)
    decisions = []
    for key, label, arm, base, m_arm, m_base, sign, delta, sub in DECISIONS:
        a = [at_path(r, _resolve(base, t_max))[m_base] for r in per_seed]
        b = [at_path(r, _resolve(arm, t_max))[m_arm] for r in per_seed]
        diff = stats.paired_difference(a, b)
        decisions.append(
            {
                "key": key,
                "label": label,
                "T": int(t_max),
                "sub_claim": sub,
                "claimed_sign": sign,
                "difference": diff,
                **stats.decide(diff, sign, delta, coverage=coverage, substitute=substitute),
            }
        )
    context = []
    for label, arm, base in _context_pairs(t_max, members):
        if str(members) not in map(str, num_samples) and arm == ("mc", str(members)):
            continue
        entry = {"label": label, "arm": list(arm), "baseline": list(base), "metrics": {}}
        for metric, better in CONTEXT_METRICS:
            diff = stats.paired_difference(
                [at_path(r, base)[metric] for r in per_seed],
                [at_path(r, arm)[metric] for r in per_seed],
            )
            entry["metrics"][metric] = {"difference": diff, "arm_is": _side(diff, better)}
        context.append(entry)
    sub_claims = {
        sub: stats.combine_decisions([d for d in decisions if d["sub_claim"] == sub])
        for sub in ("ood_detection", "calibration")
    }
    overall = stats.combine_decisions(decisions)
    return {
        "summary": summary,
        "decisions": decisions,
        "context": context,
        "sub_claims": sub_claims,
        "overall": overall,
    }


def evidence(decisions: list[dict], coverage: float, substitute: bool) -> dict[str, Any]:
    """The report's evidence record: the weakest primary decision's power, and its delta."""
    weakest = min(decisions, key=lambda d: np.nan_to_num(d["power"], nan=-1.0))
    return {
        "coverage": coverage,
        "data": "SUBSTITUTE" if substitute else "real",
        "power": weakest["power"],
        "delta": weakest["delta"],
        "pairs": weakest["difference"]["n"],
        "power_of": weakest["key"],
    }


def costs(
    preset: Preset, seeds: list[int], training_wall_s: float, timing: dict[str, list[float]]
) -> dict[str, Any]:
    """Training and test-time cost of each arm: counts, and the measured seconds as run."""
    it, m, t_max = preset.train.iterations, preset.members, max(preset.num_samples)
    networks = len(seeds) * m
    per_net = training_wall_s / networks
    med = {k: float(np.median(v)) for k, v in timing.items()}
    return {
        "budget": "test time: M ensemble members = M full forward passes = MC dropout with "
        "T = M samples",
        "training_networks_in_run": networks,
        "training_wall_s": round(training_wall_s, 3),
        "training_wall_s_per_network": round(per_net, 3),
        "arms": {
            "deterministic": {"networks": 1, "train_iterations": it, "test_passes": 1},
            "deterministic_ts": {
                "networks": 1,
                "train_iterations": it,
                "test_passes": 1,
                "extra": f"1 pass over the {preset.holdout} held-out images + a 1-D fit",
            },
            "mc": {
                "networks": 1,
                "train_iterations": it,
                "test_passes": f"T (1 to {t_max})",
                "as_run": "1 trunk pass + T head passes (exact: dropout only before ip2)",
            },
            "mc_ts": {
                "networks": 1,
                "train_iterations": it,
                "test_passes": "T",
                "extra": f"T passes over the {preset.holdout} held-out images + a 1-D fit",
            },
            "ensemble": {"networks": m, "train_iterations": m * it, "test_passes": m},
        },
        "measured_test_s_median_over_seeds": {k: round(v, 4) for k, v in med.items()},
        "training_wall_s_per_network_note": "all networks of the run train together as "
        "vmapped replicas; this is the run's training wall time divided by their number",
    }


def _curve(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    cov, acc = unc.accuracy_coverage_curve(confidence, correct)
    cov, acc = np.asarray(cov), np.asarray(acc)
    idx = np.unique(np.linspace(0, len(cov) - 1, CURVE_POINTS).round().astype(int))
    return {"coverage": cov[idx].tolist(), "accuracy": acc[idx].tolist()}


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    return out, time.perf_counter() - start


def _chunked(fn, params, x: np.ndarray, chunk: int) -> jax.Array:
    parts = [fn(params, jnp.asarray(x[i : i + chunk])) for i in range(0, len(x), chunk)]
    return jnp.concatenate(parts, 0)


def predict_seed(
    model: LeNet,
    fns: tuple[Any, Any],
    nets: list[Any],
    splits: dict[str, np.ndarray],
    labels: tuple[np.ndarray, np.ndarray],
    key: jax.Array,
    preset: Preset,
) -> tuple[SeedOutputs, dict[str, float]]:
    """One seed's network outputs on every split, and the seconds each arm took as run.

    Args:
      model: the LeNet.
      fns: its jitted ``(features, logits)`` functions (:func:`forward_fns`).
      nets: the parameters of the seed's ``M`` networks (member 0: the single network).
      splits: ``test``, ``ood`` and ``holdout`` inputs.
      labels: ``(test labels, held-out labels)``.
      key: the MC key (split ``i`` uses ``fold_in(key, i)``).
      preset: the preset (``T_max``, chunk size).

    Returns:
      ``(outputs, seconds)``; the seconds cover the test and OOD sets.
    """
    cfg = model.dropout
    features, logits_fn = fns
    logits, mc, secs = {}, {}, {"deterministic": 0.0, "mc": 0.0, "ensemble": 0.0}
    for i, (split, x) in enumerate(splits.items()):
        feats, det_s = _timed(_chunked, features, nets[0], x, preset.chunk)
        (logits[split], mc[split]), mc_s = _timed(
            head_predictions,
            cfg,
            nets[0]["ip2"],
            feats,
            jax.random.fold_in(key, i),
            max(preset.num_samples),
            preset.chunk,
        )
        if split != "holdout":
            secs["deterministic"] += det_s
            secs["mc"] += det_s + mc_s
    members = {}  # member 0 is the single network: its logits are computed above
    for split in ("test", "ood"):
        outs = [logits[split]]
        for p in nets[1:]:
            z, s = _timed(_chunked, logits_fn, p, splits[split], preset.chunk)
            outs.append(np.asarray(z))
            secs["ensemble"] += s
        members[split] = np.stack(outs)
    secs["ensemble"] += secs["deterministic"]
    return SeedOutputs(labels[0], labels[1], logits, mc, members), secs


def forward_fns(model: LeNet) -> tuple[Any, Any]:
    """Jitted ``ip1`` features and full-network logits (dropout off)."""
    logits = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
    return _feature_fn(model), logits


def _example(arms: dict[str, Any], labels: np.ndarray, preset: Preset) -> dict[str, Any]:
    """The first seed's predictions that the figures draw."""
    probs = {
        label: at_path(arms, path)["in"] for label, path in rows(preset.num_samples, preset.members)
    }
    mc_arm = arms["mc"][str(max(preset.num_samples))]
    return {
        "labels": labels,
        "probs": probs,
        "mi_in": np.asarray(unc.mutual_information(mc_arm["samples_in"])),
        "mi_out": np.asarray(unc.mutual_information(mc_arm["samples_out"])),
        "curves": {label: _curve(p.max(-1), p.argmax(-1) == labels) for label, p in probs.items()},
    }


def measure(model, result, splits, labels, preset: Preset, seeds: list[int]):
    """Per seed: the arms' predictions on every split and their metrics; returns the
    per-seed metrics, seed 0's arms (for the figures) and the prediction timings."""
    fns = forward_fns(model)
    replicas = len(seeds)
    per_seed, example = [], {}
    timing: dict[str, list[float]] = {"deterministic": [], "mc": [], "ensemble": []}
    params = host_replicas(result.state.params)  # on the host: one compile for every replica
    for r, seed in enumerate(seeds):
        # member j of seed r is replica j * replicas + r of the training run
        nets = [params[j * replicas + r] for j in range(preset.members)]
        key = jax.random.fold_in(jax.random.key(seed), 0x3C)  # independent of training keys
        outputs, secs = predict_seed(model, fns, nets, splits, labels, key, preset)
        for k, v in secs.items():
            timing[k].append(v)
        metrics, arms = evaluate_seed(outputs, preset.num_samples)
        per_seed.append(metrics)
        if r == 0:
            example = _example(arms, labels[0], preset)
    return per_seed, example, timing


def _config(preset: Preset, cfg: DropoutConfig, replicas: int) -> dict[str, Any]:
    """The run's configuration, as recorded in its results."""
    return {
        "model": "LeNet (Caffe MNIST), standard dropout 0.5 on the input of the last layer",
        "dropout": dataclasses.asdict(cfg),
        "replicas": replicas,
        "members": preset.members,
        "member_seeds": f"seed + {MEMBER_STRIDE} * j, j = 0..M-1 (member 0 = the single "
        "network of the other arms)",
        "holdout": preset.holdout,
        "num_samples": list(preset.num_samples),
        "ece_bins": NUM_BINS,
        "protocol_iterations": PAPER_ITERATIONS,
        "fpr_at_tpr": TPR,
        "train": dataclasses.asdict(preset.train),
        "mc_method": "features of ip1 computed once; the ip2 dropout head sampled T times "
        "with dropjax.mc.sample under dropjax.linen.mc_dropout (exact: LeNet's only "
        "dropout is there); smaller T are prefixes of the T_max samples",
        "temperature": "one temperature per arm and seed, fitted by NLL with "
        "dropjax.uncertainty.temperature_scale on the held-out split (MC: on the log of "
        "the MC average)",
        "headline_T": max(preset.num_samples),
        "deltas": {"auroc": DELTA_AUROC, "nll": DELTA_NLL, "ece": DELTA_ECE},
    }
