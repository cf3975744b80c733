"""MC dropout uncertainty (claim 10): does keeping dropout on at test time give useful doubt?

The explainer seed ("A Final Trick", "The Oracle's Whisper") says that running a trained
network many times with fresh dropout masks yields a distribution of predictions whose
spread is a practical estimate of the model's (epistemic) uncertainty, and whose mean is a
"more robust prediction". We test two operational readings of that claim:

1. **Out-of-distribution detection.** LeNet trained on MNIST (dropout 0.5 on the input of
   the last layer) sees the MNIST test set (in-distribution) and the Fashion-MNIST test set
   (out-of-distribution, OOD). Scores: the mutual information (BALD) and the predictive
   entropy of the MC average of ``T`` samples, against the usual baseline of the
   deterministic network (dropout off, weight-scaling inference): ``1 - max softmax``.
   Metric: AUROC of separating OOD (positive) from in-distribution inputs.
2. **Calibration.** ECE (15 bins), NLL and Brier score of the MC average on the MNIST test
   set against the deterministic network; selective prediction via the accuracy-coverage
   curve and its area (AURC) with the maximum probability as confidence.

**Cheap exact MC.** LeNet's only dropout is on the input of its last dense layer (``ip2``),
so everything before it is deterministic. We compute the 500 ReLU features of ``ip1`` once
per input and sample only the head ``ip2 = DropDense(10, standard 0.5)`` ``T`` times with
:func:`dropjax.mc.sample` inside :func:`dropjax.linen.mc_dropout` (the head is applied with
``train=False``; the context makes its dropout sample anyway). This is the same predictive
distribution as running the whole network ``T`` times, at a fraction of the cost. The MC
sets for smaller ``T`` are prefixes of the largest one (nested samples), which makes the
curves over ``T`` smooth without changing any single estimate's distribution.

Replicas are seeds; every metric is reported as mean ± std over replicas, and the headline
comparisons as paired differences (MC − deterministic, same replica) with 95% t-intervals.

Presets: ``smoke`` trains on scikit-learn's 8x8 digits (upsampled to 28x28 as in
:mod:`experiments.lenet_mnist`) for a few steps with uniform-noise images as the OOD set
(seconds). ``quick`` uses real MNIST / Fashion-MNIST with a shortened Gao et al. schedule
(800 iterations, lr step at 400), 4 replicas and ``T`` up to 64 (about 5.5 minutes on a
shared 2-core CPU). ``paper`` is Gao et al.'s LeNet protocol (12,000 iterations, lr 0.01
÷10 at 6,000, momentum 0.9, weight decay 5e-4, batch 100) with ``T`` up to 128.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import dropjax.linen
import dropjax.mc
from dropjax import uncertainty as unc
from experiments import stats
from experiments.models import DropDense, DropoutConfig, LeNet
from experiments.recipes import lenet_images as load_data
from experiments.registry import RunContext, register, save_figure_atomic
from experiments.train import ArrayData, TrainConfig, step_sgd, train

NAME = "mc_uncertainty"
SOURCE = (
    "explainer seed 000_181800e08f4700ac ('A Final Trick', 'The Oracle's Whisper'); "
    "protocol after Gal & Ghahramani (2016) and Gao et al. (2019) Sec. 6.2"
)
CLAIM = (
    "MC dropout (dropout kept on at test time, T stochastic passes) gives useful uncertainty: "
    "its mutual information / predictive entropy detect out-of-distribution inputs better than "
    "the deterministic network's max-softmax, and the MC average is better calibrated (lower "
    "ECE, NLL) than the deterministic prediction"
)
QUOTES = (
    "The mean of this distribution can serve as our final, more robust prediction. But far "
    "more exciting is the variance of this distribution. [...] If the predictions are "
    "scattered widely, the model is effectively communicating its uncertainty",
    "the variance of this distribution of answers can be interpreted as a measure of the "
    "model's epistemic uncertainty",
)
RATE = 0.5
NUM_BINS = 15
CURVE_POINTS = 101


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: in-distribution data, the OOD set, replicas, protocol and the T grid."""

    dataset: str
    ood: str
    replicas: int
    train: TrainConfig
    num_samples: tuple[int, ...]
    chunk: int = 5000


_protocol = functools.partial(step_sgd, learning_rate=0.01)


PRESETS = {
    "smoke": Preset(
        "digits",
        "noise",
        3,
        _protocol(30, 15, batch_size=64, eval_every=30, eval_batch_size=360),
        (1, 8),
        chunk=360,
    ),
    "quick": Preset(
        "mnist",
        "fashion_mnist",
        4,
        _protocol(800, 400, batch_size=100, eval_every=800),
        (1, 2, 4, 8, 16, 32, 64),
    ),
    "paper": Preset(
        "mnist",
        "fashion_mnist",
        4,
        _protocol(12000, 6000, batch_size=100, eval_every=2000),
        (1, 2, 4, 8, 16, 32, 64, 128),
    ),
}


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
    """Jitted ``(params, h) -> probs`` (dropout off) and ``(params, key, h) -> MC samples``.

    Cached, so replicas and data chunks reuse one compiled program. The sampler must only
    be called inside :func:`dropjax.linen.mc_dropout` (the switch is read when it traces).
    """
    module = head(cfg)

    def deterministic(params, h):
        return jax.nn.softmax(module.apply({"params": params}, h, train=False), axis=-1)

    def sampler(params, key, h):
        def one(k, x):
            logits = module.apply({"params": params}, x, train=False, rngs={"dropout": k})
            return jax.nn.softmax(logits, axis=-1)

        return dropjax.mc.sample(one, key, num_samples, h, chunk_size=16)

    return jax.jit(deterministic), jax.jit(sampler)


def mc_probs(
    cfg: DropoutConfig,
    head_params: Any,
    feats: jax.Array,
    key: jax.Array,
    num_samples: int,
    chunk: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic and MC softmax outputs of the dropout head on precomputed features.

    Args:
      cfg: the head's dropout configuration.
      head_params: ``params["ip2"]`` of a trained LeNet.
      feats: ``(N, 500)`` ReLU features of ``ip1``.
      key: the MC key; data chunk ``c`` uses ``fold_in(key, c)``.
      num_samples: ``T``.
      chunk: inputs per data chunk (bounds the memory of the masks).

    Returns:
      ``(det, mc)``: ``(N, C)`` probabilities with dropout off and ``(T, N, C)`` MC samples.
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


def _curve(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float]]:
    cov, acc = unc.accuracy_coverage_curve(confidence, correct)
    cov, acc = np.asarray(cov), np.asarray(acc)
    idx = np.unique(np.linspace(0, len(cov) - 1, CURVE_POINTS).round().astype(int))
    return {"coverage": cov[idx].tolist(), "accuracy": acc[idx].tolist()}


def _scalar(x: Any) -> float:
    return float(np.asarray(x))


def prediction_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, ECE, NLL, Brier score and AURC of ``(N, C)`` predictive probabilities."""
    correct = probs.argmax(-1) == labels
    return {
        "accuracy": float(correct.mean()),
        "ece": _scalar(unc.expected_calibration_error(probs, labels, NUM_BINS)),
        "nll": _scalar(unc.negative_log_likelihood(probs, labels)),
        "brier": _scalar(unc.brier_score(probs, labels)),
        "aurc": _scalar(unc.aurc(probs.max(-1), correct)),
    }


def evaluate_replica(
    det_in: np.ndarray,
    mc_in: np.ndarray,
    det_out: np.ndarray,
    mc_out: np.ndarray,
    labels: np.ndarray,
    num_samples: tuple[int, ...],
) -> dict[str, Any]:
    """All metrics of one replica: the deterministic net, and MC with each ``T``.

    Args:
      det_in: ``(N, C)`` deterministic probabilities on the in-distribution test set.
      mc_in: ``(T_max, N, C)`` MC samples on it.
      det_out: ``(M, C)`` deterministic probabilities on the OOD set.
      mc_out: ``(T_max, M, C)`` MC samples on it.
      labels: ``(N,)`` in-distribution labels.
      num_samples: the ``T`` values (each at most ``T_max``; prefixes of the samples).

    Returns:
      ``{"deterministic": {...}, "mc": {T: {...}}}`` with the prediction metrics and OOD
      AUROCs (``auroc_maxprob``: score ``1 - max p``; ``auroc_entropy``; ``auroc_mi``).
    """
    is_ood = np.concatenate([np.zeros(len(det_in), bool), np.ones(len(det_out), bool)])

    def ood_auroc(score_in, score_out) -> float:
        return _scalar(unc.auroc(np.concatenate([score_in, score_out]), is_ood))

    def entropy(p):  # entropy of (N, C) probabilities via the (T=1) MC function
        return np.asarray(unc.predictive_entropy(p[None]))

    det = prediction_metrics(det_in, labels)
    det["auroc_maxprob"] = ood_auroc(1 - det_in.max(-1), 1 - det_out.max(-1))
    det["auroc_entropy"] = ood_auroc(entropy(det_in), entropy(det_out))
    mc: dict[str, Any] = {}
    for t in num_samples:
        p_in, p_out = mc_in[:t], mc_out[:t]
        mean_in, mean_out = p_in.mean(0), p_out.mean(0)
        m = prediction_metrics(mean_in, labels)
        m["nll"] = _scalar(unc.mc_negative_log_likelihood(p_in, labels))
        m["auroc_maxprob"] = ood_auroc(1 - mean_in.max(-1), 1 - mean_out.max(-1))
        m["auroc_entropy"] = ood_auroc(
            np.asarray(unc.predictive_entropy(p_in)), np.asarray(unc.predictive_entropy(p_out))
        )
        m["auroc_mi"] = ood_auroc(
            np.asarray(unc.mutual_information(p_in)), np.asarray(unc.mutual_information(p_out))
        )
        mc[str(t)] = m
    return {"deterministic": det, "mc": mc}


# (label, metric, MC score, deterministic score, claimed sign of MC − deterministic)
HEADLINE = (
    ("OOD AUROC: MC mutual information vs deterministic max-softmax", "auroc", "mi", "maxprob", +1),
    ("OOD AUROC: MC entropy vs deterministic max-softmax", "auroc", "entropy", "maxprob", +1),
    ("ECE: MC average vs deterministic", "ece", None, None, -1),
    ("NLL: MC average vs deterministic", "nll", None, None, -1),
    (
        "OOD AUROC: MC entropy vs det. entropy (secondary)",
        "auroc",
        "entropy",
        "entropy",
        +1,
    ),
    ("Brier: MC average vs deterministic", "brier", None, None, -1),
    ("AURC: MC average vs deterministic", "aurc", None, None, -1),
)


def _key(metric: str, score: str | None) -> str:
    return f"{metric}_{score}" if score else metric


def _combine(verdicts: list[str]) -> str:
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if all(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    if any(v == "reproduced" for v in verdicts) and not any(
        v == "not reproduced" for v in verdicts
    ):
        return "partly reproduced"
    if any(v == "not reproduced" for v in verdicts) and not any(
        v == "reproduced" for v in verdicts
    ):
        return "inconclusive, leaning not reproduced"
    return "mixed"


def summarise(per_replica: list[dict[str, Any]], num_samples: tuple[int, ...]) -> dict[str, Any]:
    """Mean ± std over replicas of every metric, and the headline paired comparisons."""
    metrics = per_replica[0]["deterministic"].keys()
    summary: dict[str, Any] = {
        "deterministic": {
            m: stats.mean_std([r["deterministic"][m] for r in per_replica]) for m in metrics
        },
        "mc": {},
    }
    for t in map(str, num_samples):
        keys = per_replica[0]["mc"][t].keys()
        summary["mc"][t] = {k: stats.mean_std([r["mc"][t][k] for r in per_replica]) for k in keys}
    t_max = str(max(num_samples))
    comparisons = []
    for label, metric, mc_score, det_score, sign in HEADLINE:
        det = [r["deterministic"][_key(metric, det_score)] for r in per_replica]
        mc = [r["mc"][t_max][_key(metric, mc_score)] for r in per_replica]
        diff = stats.paired_difference(det, mc)
        comparisons.append(
            {
                "label": label,
                "T": int(t_max),
                "metric": metric,
                "claimed_sign": sign,
                "difference": diff,
                "verdict": stats.verdict(diff, sign),
            }
        )
    ood = _combine([c["verdict"] for c in comparisons[:2]])  # MI, entropy vs max-softmax
    calib = _combine([c["verdict"] for c in comparisons[2:4]])  # ECE, NLL
    return {
        "summary": summary,
        "comparisons": comparisons,
        "verdicts": {"ood_detection": ood, "calibration": calib},
    }


def overall_verdict(verdicts: dict[str, str]) -> str:
    """One verdict when both sub-claims agree, else ``mixed (...)`` naming both."""
    ood, calib = verdicts["ood_detection"], verdicts["calibration"]
    if ood == calib:
        return ood
    return f"mixed (OOD detection: {ood}; calibration: {calib})"


def _plot(results: dict[str, Any], example: dict[str, np.ndarray], path: Path) -> None:
    """Metrics vs T, reliability diagrams, uncertainty histograms, accuracy-coverage curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = results["config"]["num_samples"]
    summ = results["summary"]
    fig, axes = plt.subplots(2, 4, figsize=(19, 8.5))

    def vs_t(ax, series, det_series, ylabel, title):
        for key, label in series:
            mean = np.array([summ["mc"][str(t)][key]["mean"] for t in ts])
            std = np.array([summ["mc"][str(t)][key]["std"] for t in ts])
            ax.errorbar(ts, mean, yerr=std, marker="o", capsize=3, label=label)
        for key, label in det_series:
            d = summ["deterministic"][key]
            line = ax.axhline(d["mean"], ls="--", label=label, color="k" if "max" in key else "C7")
            ax.axhspan(
                d["mean"] - d["std"], d["mean"] + d["std"], alpha=0.12, color=line.get_color()
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("MC samples T")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")

    vs_t(
        axes[0, 0],
        [
            ("auroc_mi", "MC mutual information"),
            ("auroc_entropy", "MC entropy"),
            ("auroc_maxprob", "MC 1 − max p"),
        ],
        [("auroc_maxprob", "det. 1 − max p"), ("auroc_entropy", "det. entropy")],
        "AUROC (OOD positive)",
        f"OOD detection: {results['data']['name']} vs {results['ood']['name']}",
    )
    vs_t(axes[0, 1], [("ece", "MC average")], [("ece", "deterministic")], "ECE", "calibration")
    vs_t(axes[0, 2], [("nll", "MC average")], [("nll", "deterministic")], "NLL (nats)", "NLL")
    vs_t(
        axes[0, 3], [("aurc", "MC average")], [("aurc", "deterministic")], "AURC", "selective risk"
    )

    t_max = max(ts)
    labels = example["labels"]
    unc.reliability_diagram(example["det_in"], labels, NUM_BINS, ax=axes[1, 0])
    axes[1, 0].set_title(f"deterministic\n{axes[1, 0].get_title()}", fontsize="small")
    unc.reliability_diagram(example["mean_in"], labels, NUM_BINS, ax=axes[1, 1])
    axes[1, 1].set_title(f"MC average, T={t_max}\n{axes[1, 1].get_title()}", fontsize="small")
    unc.uncertainty_histogram(example["mi_in"], example["mi_out"], ax=axes[1, 2])
    axes[1, 2].set_title(
        f"MC mutual information (T={t_max})\n{axes[1, 2].get_title()}", fontsize="small"
    )
    axes[1, 2].set_xlabel("mutual information (nats)")
    ax = axes[1, 3]
    for key, label in (("det", "deterministic"), ("mc", f"MC average, T={t_max}")):
        curve = example[f"curve_{key}"]
        ax.plot(curve["coverage"], curve["accuracy"], label=label)
    ax.set_xlabel("coverage")
    ax.set_ylabel("accuracy of the most confident")
    ax.set_title("accuracy-coverage (max p as confidence)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle(
        f"MC dropout on LeNet ({results['data']['name']}, dropout {RATE:g}): "
        f"mean ± std over {len(results['seeds'])} replicas; bottom row: replica 0",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


def _fmt(s: dict[str, float], digits: int = 4) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _fmt_diff(d: dict[str, float]) -> str:
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.4f} [n/a]"
    return f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


def render(results: dict[str, Any]) -> str:
    """Markdown: metrics vs T, the headline paired comparisons and the verdicts."""
    cfg, summ = results["config"], results["summary"]
    t = cfg["train"]
    cols = ("accuracy", "ece", "nll", "brier", "aurc", "auroc_maxprob", "auroc_entropy")
    head = (
        "| predictor | acc | ECE | NLL | Brier | AURC | AUROC 1−max p | AUROC entropy | AUROC MI |"
    )
    rows = [head, "|---|---|---|---|---|---|---|---|---|"]
    det = summ["deterministic"]
    rows.append("| deterministic | " + " | ".join(_fmt(det[c]) for c in cols) + " | – |")
    for n in cfg["num_samples"]:
        m = summ["mc"][str(n)]
        rows.append(
            f"| MC T={n} | " + " | ".join(_fmt(m[c]) for c in cols) + f" | {_fmt(m['auroc_mi'])} |"
        )
    comp = [
        "| comparison (MC − det.) | T | Δ [95% CI] | claimed | verdict |",
        "|---|---|---|---|---|",
    ]
    for c in results["comparisons"]:
        sign = "> 0" if c["claimed_sign"] > 0 else "< 0"
        comp.append(
            f"| {c['label']} | {c['T']} | {_fmt_diff(c['difference'])} | {sign} | {c['verdict']} |"
        )
    v = results["verdicts"]
    return "\n".join(
        [
            f"**MC dropout uncertainty: LeNet (standard dropout {RATE:g} before the last layer) "
            f"on {results['data']['name']} ({results['data']['source']}), OOD = "
            f"{results['ood']['description']}.** {t['iterations']} iterations, batch "
            f"{t['batch_size']}, lr {t['learning_rate']:g} ÷10 at "
            f"{', '.join(map(str, t['lr_boundaries']))}, momentum {t['momentum']:g}, weight "
            f"decay {t['weight_decay']:g}; {len(results['seeds'])} replicas (seeds "
            f"{results['seeds']}); mean ± std over replicas; AUROC with OOD as positive.",
            "",
            *rows,
            "",
            *comp,
            "",
            f"Verdicts ({results['source']}): OOD detection by MC uncertainty better than "
            f"max-softmax: **{v['ood_detection']}**; MC averaging improves calibration (ECE "
            f"and NLL): **{v['calibration']}**. Overall: **{results['verdict']}**.",
        ]
    )


@register(NAME, "MC dropout uncertainty: OOD AUROC, calibration vs T (explainer claim)", render)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains LeNet replicas, then evaluates the deterministic net and MC dropout."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    x_ood, ood_desc = ood_inputs(preset.ood, data)
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    cfg = DropoutConfig("standard", RATE)
    model = LeNet(num_classes=10, dropout=cfg)
    result = train(model, data, preset.train, seeds, quiet=ctx.quiet or None, desc=NAME)
    features = _feature_fn(model)
    t_max = max(preset.num_samples)
    labels = data.y_test
    per_replica, example = [], {}
    for r, seed in enumerate(seeds):
        params = jax.tree.map(lambda a, r=r: a[r], result.state.params)

        def feats(x, params=params):
            parts = [
                features(params, jnp.asarray(x[i : i + preset.chunk]))
                for i in range(0, len(x), preset.chunk)
            ]
            return jnp.concatenate(parts, 0)

        key = jax.random.fold_in(jax.random.key(seed), 0x3C)  # independent of training keys
        k_in, k_out = jax.random.split(key)
        det_in, mc_in = mc_probs(cfg, params["ip2"], feats(data.x_test), k_in, t_max, preset.chunk)
        det_out, mc_out = mc_probs(cfg, params["ip2"], feats(x_ood), k_out, t_max, preset.chunk)
        per_replica.append(
            evaluate_replica(det_in, mc_in, det_out, mc_out, labels, preset.num_samples)
        )
        if r == 0:
            mean_in = mc_in.mean(0)
            example = {
                "labels": labels,
                "det_in": det_in,
                "mean_in": mean_in,
                "mi_in": np.asarray(unc.mutual_information(mc_in)),
                "mi_out": np.asarray(unc.mutual_information(mc_out)),
                "curve_det": _curve(det_in.max(-1), det_in.argmax(-1) == labels),
                "curve_mc": _curve(mean_in.max(-1), mean_in.argmax(-1) == labels),
            }
    out = summarise(per_replica, preset.num_samples)
    overall = overall_verdict(out["verdicts"])
    results = {
        "source": SOURCE,
        "claim": CLAIM,
        "quotes": list(QUOTES),
        "config": {
            "model": "LeNet (Caffe MNIST), standard dropout 0.5 on the input of the last layer",
            "dropout": dataclasses.asdict(cfg),
            "replicas": replicas,
            "num_samples": list(preset.num_samples),
            "ece_bins": NUM_BINS,
            "train": dataclasses.asdict(preset.train),
            "mc_method": "features of ip1 computed once; the ip2 dropout head sampled T times "
            "with dropjax.mc.sample under dropjax.linen.mc_dropout (exact: LeNet's only "
            "dropout is there); smaller T are prefixes of the T_max samples",
            "headline_T": t_max,
        },
        "data": data.describe(),
        "ood": {"name": preset.ood, "description": ood_desc, "num": int(len(x_ood))},
        "seeds": seeds,
        **out,
        "verdict": overall,
        "per_replica": per_replica,
        "curves": {"replica0": {"deterministic": example["curve_det"], "mc": example["curve_mc"]}},
        "training": result.to_json(),
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    if jax.process_index() == 0:
        _plot(results, example, figure)
    results["figure"] = figure.name
    return results
