"""Bouthillier et al. (2015), Section 5.3 / Figure 6: random dropout vs dropout on an MLP.

Protocol (paper): permutation-invariant MNIST, a ReLU MLP with two hidden layers (2500-625,
2500-1250 or 2500-2500) and a softmax output; each network trained for 501 epochs (best
validation model, then 150 more epochs on all 60k examples, test error averaged over the
last 75 epochs). Three sweeps (Figure 6, MNIST row):

* (a) dropout, hidden noise fixed at 0.5, input noise 0.0 .. 0.7;
* (b) dropout, input noise fixed at 0.2, hidden noise 0.0 .. 0.7;
* (c) random dropout (Eq. 10: one rate rho ~ U(0, x) per layer per call, activations scaled
  by 1 / (1 - rho)) with the same range [0, x] at the input and hidden layers, x = 0 .. 0.8.

The claim (Sec. 5.3, "Random dropout improves the performance of the models over dropout
with no additional computational cost"; abstract: "it improves dropout results"). Figure 6's
values are not in the text, so only this qualitative claim is compared.

What is compared, every arm trained with the same seeds (replica ``r`` of every arm shares
initial parameters and data order, so differences are paired):

* **best vs best** (the verdict): the random-dropout setting with the lowest mean test
  error against the best dropout setting of sweeps (a) and (b); paired 95% t-interval of
  random − standard test error. Both are picked on the test set (the paper picks on a
  validation split), which biases both sides alike.
* **matched levels**: random [0, x] at input and hidden against dropout at rate x at input
  and hidden, for the x where the grid has such a dropout arm (the sweeps contain
  (0.5, 0.5) and (0.2, 0.2)).
* **each random setting vs the best dropout setting**.

Presets: ``smoke`` is scikit-learn's 8x8 digits, a 32-16 MLP, a few dozen iterations;
``quick`` is real MNIST with a 512-256 MLP and only 4 epochs (the paper trains 501 epochs,
plus 150), a small grid and 4 replicas; ``paper`` is the 2500-1250 architecture, 501 epochs
and the full grids (no validation split or extra 150 epochs: the test error is averaged
over the last 75 epochs of the 501).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments import recipes, stats
from experiments.models import MLP, DropoutConfig
from experiments.registry import RunContext, register, save_figure_atomic
from experiments.train import TrainConfig, train

NAME = "random_dropout_mlp"
SOURCE = (
    "Bouthillier, Konda, Vincent & Memisevic, Dropout as data augmentation (2015), "
    "Sec. 5.3 and Figure 6 (seed 002)"
)
CLAIM = (
    "random dropout (rho ~ U(0, x) per layer, Eq. 10) gives lower test error than dropout "
    "on a 2-hidden-layer ReLU MLP on permutation-invariant MNIST"
)
PAPER_QUOTES = [
    "Random dropout improves the performance of the models over dropout with no additional "
    "computational cost. (Sec. 5.3)",
    "we propose a new dropout noise scheme based on our observations and show that it "
    "improves dropout results without adding significant computational cost. (Abstract)",
    "Figure 6's error percentages are shown only as plots; no values are in the text, so "
    "only the qualitative claim is compared.",
]


@dataclasses.dataclass(frozen=True)
class Preset:
    """Data, architecture, the three sweeps, replicas, protocol, and evaluation averaging."""

    dataset: str
    hidden: tuple[int, ...]
    input_sweep: tuple[float, ...]  # (a): input rates, hidden fixed at fixed_hidden
    fixed_hidden: float
    hidden_sweep: tuple[float, ...]  # (b): hidden rates, input fixed at fixed_input
    fixed_input: float
    random_sweep: tuple[float, ...]  # (c): upper ends x of U(0, x), input and hidden
    replicas: int
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    average_last: int  # test error averaged over the last this many evaluations
    eval_per_epoch: int = 1


PRESETS = {
    "smoke": Preset(
        "digits", (32, 16), (0.2,), 0.5, (0.5,), 0.2, (0.5,), 2, 1, 64, 0.05, 0.9, 1, 1
    ),
    "quick": Preset(
        "mnist",
        (512, 256),
        (0.0, 0.2, 0.5),
        0.5,
        (0.0, 0.2, 0.5),
        0.2,
        (0.2, 0.5, 0.8),
        4,
        4,
        100,
        0.05,
        0.9,
        1,
    ),
    "paper": Preset(
        "mnist",
        (2500, 1250),
        tuple(round(0.1 * i, 1) for i in range(8)),
        0.5,
        tuple(round(0.1 * i, 1) for i in range(8)),
        0.2,
        tuple(round(0.1 * i, 1) for i in range(9)),
        3,
        501,
        100,
        0.05,
        0.9,
        75,
    ),
}


load_data = recipes.flat_images


def settings(preset: Preset) -> dict[str, tuple[str, float, float]]:
    """Every arm by key: ``(kind, input rate, hidden rate)``; shared grid points merge."""
    out: dict[str, tuple[str, float, float]] = {}
    for r in preset.input_sweep:
        out[_key("standard", r, preset.fixed_hidden)] = ("standard", r, preset.fixed_hidden)
    for r in preset.hidden_sweep:
        out[_key("standard", preset.fixed_input, r)] = ("standard", preset.fixed_input, r)
    for x in preset.random_sweep:
        out[_key("random_rate", x, x)] = ("random_rate", x, x)
    return out


def _key(kind: str, rin: float, rhid: float) -> str:
    if kind == "random_rate":
        return f"random [0,{rin:g}]"
    return f"dropout in {rin:g} hid {rhid:g}"


def _model(preset: Preset, kind: str, rin: float, rhid: float) -> MLP:
    return MLP(
        hidden=preset.hidden,
        num_classes=10,
        input_dropout=DropoutConfig(kind, rin),
        dropout=DropoutConfig(kind, rhid),
    )


def _config(preset: Preset, num_train: int) -> TrainConfig:
    spe = num_train // preset.batch_size
    return TrainConfig(
        iterations=preset.epochs * spe,
        batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        momentum=preset.momentum,
        eval_every=max(1, spe // preset.eval_per_epoch),
        eval_batch_size=2000,
    )


def _errors(result_json: dict[str, Any], last: int) -> list[float]:
    """Per-replica test error (%) averaged over the last ``last`` evaluations."""
    acc = np.array([c["test_acc"] for c in result_json["curves"][-last:]])
    return (100.0 * (1.0 - acc.mean(0))).tolist()


def _compare(errors: dict[str, list[float]], base: str, other: str) -> dict[str, Any]:
    diff = stats.paired_difference(errors[base], errors[other])
    return {
        "standard": base,
        "random": other,
        "difference": diff,
        "verdict": stats.verdict(diff, -1),
    }


def _plot(results: dict[str, Any], path: Path) -> None:
    """Figure 6's MNIST row: three panels of test error vs noise level (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    summary = results["summary"]
    panels = [
        (
            "dropout: input noise (hidden {:g})".format(cfg["fixed_hidden"]),
            [(r, _key("standard", r, cfg["fixed_hidden"])) for r in cfg["input_sweep"]],
            "input noise",
        ),
        (
            "dropout: hidden noise (input {:g})".format(cfg["fixed_input"]),
            [(r, _key("standard", cfg["fixed_input"], r)) for r in cfg["hidden_sweep"]],
            "hidden noise",
        ),
        (
            "random dropout: range [0, x]",
            [(x, _key("random_rate", x, x)) for x in cfg["random_sweep"]],
            "x",
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharey=True)
    best_std = results["best"]["standard"]
    for ax, (title, points, xlabel) in zip(axes, panels, strict=True):
        xs = [p[0] for p in points]
        mean = np.array([summary[k]["mean"] for _, k in points])
        std = np.array([summary[k]["std"] for _, k in points])
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3)
        ax.axhline(summary[best_std]["mean"], color="gray", ls="--", lw=0.8, label="best dropout")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test error (%)")
    axes[0].legend(fontsize="small")
    fig.suptitle(
        f"MLP {'-'.join(map(str, cfg['hidden']))} on {results['data']['name']}, "
        f"{cfg['epochs']} epochs: mean ± std over {len(results['seeds'])} replicas",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def _fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f}"


def _fmt_diff(d: dict[str, float]) -> str:
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.2f} [n/a]"
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def render(results: dict[str, Any]) -> str:
    """Markdown: test error per arm, then the paired comparisons and the verdict."""
    rows = ["| arm | test error % (mean ± std) |", "|---|---|"]
    for key, s in results["summary"].items():
        rows.append(f"| {key} | {_fmt(s)} |")
    comp = [
        "| comparison | Δ error random − dropout, pp [95% CI] | verdict |",
        "|---|---|---|",
    ]
    for label, c in results["comparisons"].items():
        comp.append(f"| {label} | {_fmt_diff(c['difference'])} | {c['verdict']} |")
    cfg = results["config"]
    lines = [
        f"**MLP {'-'.join(map(str, cfg['hidden']))} on {results['data']['name']}** "
        f"({results['data']['source']}): {cfg['epochs']} epochs (paper: 501), batch "
        f"{cfg['batch_size']}, SGD lr {cfg['learning_rate']:g} momentum {cfg['momentum']:g}; "
        f"{len(results['seeds'])} paired replicas; test error averaged over the last "
        f"{cfg['average_last']} evaluation(s).",
        "",
        *rows,
        "",
        *comp,
        "",
        f"Verdict (best random vs best dropout): **{results['verdict']}**. Paper: "
        f'"{PAPER_QUOTES[0]}" ({PAPER_QUOTES[2]})',
    ]
    return "\n".join(lines)


@register(NAME, "Random dropout vs dropout on an MNIST MLP (Bouthillier et al. Fig. 6)", render)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains every arm of the three sweeps with the same seeds; paired comparisons."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    cfg = _config(preset, data.num_train)
    arms: dict[str, Any] = {}
    errors: dict[str, list[float]] = {}
    summary: dict[str, Any] = {}
    for key, (kind, rin, rhid) in settings(preset).items():
        result = train(
            _model(preset, kind, rin, rhid),
            data,
            cfg,
            seeds,
            quiet=ctx.quiet or None,
            desc=key,
        )
        arms[key] = {"kind": kind, "input_rate": rin, "hidden_rate": rhid, **result.to_json()}
        errors[key] = _errors(arms[key], preset.average_last)
        summary[key] = stats.mean_std(errors[key])
    standard = [k for k in arms if arms[k]["kind"] == "standard"]
    random = [k for k in arms if arms[k]["kind"] == "random_rate"]
    best_std = min(standard, key=lambda k: summary[k]["mean"])
    best_rnd = min(random, key=lambda k: summary[k]["mean"])
    comparisons = {"best random vs best dropout": _compare(errors, best_std, best_rnd)}
    for x in preset.random_sweep:
        matched = _key("standard", x, x)
        if matched in errors:
            comparisons[f"random [0,{x:g}] vs dropout {x:g}/{x:g} (matched level)"] = _compare(
                errors, matched, _key("random_rate", x, x)
            )
    for x in preset.random_sweep:
        comparisons[f"random [0,{x:g}] vs best dropout"] = _compare(
            errors, best_std, _key("random_rate", x, x)
        )
    verdict = comparisons["best random vs best dropout"]["verdict"]
    results = {
        "source": SOURCE,
        "claim": CLAIM,
        "config": {
            "model": "ReLU MLP, dropout on the input and on every hidden layer",
            "hidden": list(preset.hidden),
            "input_sweep": list(preset.input_sweep),
            "fixed_hidden": preset.fixed_hidden,
            "hidden_sweep": list(preset.hidden_sweep),
            "fixed_input": preset.fixed_input,
            "random_sweep": list(preset.random_sweep),
            "epochs": preset.epochs,
            "batch_size": preset.batch_size,
            "learning_rate": preset.learning_rate,
            "momentum": preset.momentum,
            "average_last": preset.average_last,
            "replicas": replicas,
            "train": dataclasses.asdict(cfg),
            "metric": "test error (%) = 100 (1 - test accuracy)",
        },
        "data": data.describe(),
        "seeds": seeds,
        "paper": {
            "quotes": PAPER_QUOTES,
            "protocol": "501 epochs on 50k (best validation model), 150 more epochs on 60k, "
            "test error averaged over the last 75 epochs; hidden 2500-625/2500-1250/2500-2500",
        },
        "summary": summary,
        "best": {"standard": best_std, "random": best_rnd},
        "comparisons": comparisons,
        "verdict": verdict,
        "arms": arms,
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    if jax.process_index() == 0:
        _plot(results, figure)
    results["figure"] = figure.name
    return results
