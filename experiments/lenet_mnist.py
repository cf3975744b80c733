"""Gao et al. (2019), Table 3: LeNet on MNIST, standard vs augmented dropout.

Protocol (Section 6.2): Caffe's LeNet with dropout on the input of the last fully connected
layer, SGD with momentum 0.9, batch 100, weight decay 5e-4, learning rate 0.01 divided by 10
at 6,000 iterations, 12,000 iterations; forward rates 0.1 .. 0.5, backward rate 1e-4; the
mean of four runs. The claim: augmented dropout beats standard dropout at every rate.

Arms, each trained with the same seeds (so replica ``r`` of every arm shares initial
parameters, data order and forward dropout masks, and the arms are *paired*):

* ``standard``: :class:`dropjax.linen.Dropout` at the rate;
* ``augmented``: the elementwise augmented dropout (nested backward mask, extra rate 1e-4)
  before the last layer;
* ``augmented_exact``: the layer-exact Eq. 9 form (:class:`dropjax.linen.DecoupledDense`),
  whose weight gradient also uses the backward mask.

For each rate: per-arm mean ± std of the final test accuracy, and the paired difference
(arm − standard) with its 95% Student-t interval and verdict (``reproduced`` when the
interval lies above 0).

Presets: ``smoke`` uses scikit-learn's 8x8 digits (no download), each image upsampled 3x by
pixel repetition to 24x24 and zero-padded by 2 pixels to MNIST's 28x28 layout, 20
iterations, batch 64, one rate, 2 replicas. ``quick`` uses real MNIST with a shortened
schedule (600 iterations, learning-rate step at 300) at rate 0.5 only, 4 replicas (about
five minutes on a 2-core CPU).
``paper`` is the protocol above. Inputs are scaled by 1/256 as in Caffe's LeNet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments import data as data_lib
from experiments import stats
from experiments.models import DropoutConfig, LeNet
from experiments.registry import RunContext, register, save_figure_atomic
from experiments.train import ArrayData, TrainConfig, step_sgd, train

NAME = "lenet_mnist"
BACKWARD_RATE = 1e-4
ARMS = ("standard", "augmented", "augmented_exact")
PAPER_TABLE3 = {
    "standard": {0.1: 0.9916, 0.2: 0.9922, 0.3: 0.9918, 0.4: 0.9917, 0.5: 0.9922},
    "augmented": {0.1: 0.9918, 0.2: 0.9923, 0.3: 0.9925, 0.4: 0.9920, 0.5: 0.9925},
}
SOURCE = "Gao, Pei & Huang, Demystifying Dropout, ICML 2019, Table 3"
_GRAY28 = ("mnist", "fashion_mnist", "digits")


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: the data, the rates, the replica count and the optimisation protocol."""

    dataset: str
    rates: tuple[float, ...]
    replicas: int
    train: TrainConfig


_protocol = functools.partial(step_sgd, learning_rate=0.01)


PRESETS = {
    "smoke": Preset(
        "digits", (0.5,), 2, _protocol(20, 10, batch_size=64, eval_every=10, eval_batch_size=360)
    ),
    "quick": Preset("mnist", (0.5,), 4, _protocol(600, 300, batch_size=100, eval_every=300)),
    "paper": Preset(
        "mnist",
        (0.1, 0.2, 0.3, 0.4, 0.5),
        4,
        _protocol(12000, 6000, batch_size=100, eval_every=1000),
    ),
}


def _upsample_digits(x: np.ndarray) -> np.ndarray:
    """8x8 digits -> 28x28: 3x pixel repetition (24x24), then 2 pixels of zero padding."""
    big = x.repeat(3, axis=1).repeat(3, axis=2)
    return np.pad(big, ((0, 0), (2, 2), (2, 2), (0, 0)))


def load_data(name: str) -> ArrayData:
    """A 28x28 grayscale dataset for LeNet, scaled by 1/256 (Caffe's LeNet input scale).

    Args:
      name: ``mnist``, ``fashion_mnist`` or ``digits`` (upsampled to 28x28).

    Returns:
      The arrays, with the loader's source recorded.

    Raises:
      ValueError: a dataset that is not 28x28 grayscale (or digits).
    """
    ds = data_lib.load(name)
    if ds.name not in _GRAY28:
        raise ValueError(f"{NAME} needs 28x28 grayscale images: one of {_GRAY28}; got {name!r}")
    notes = "uint8 / 256"
    if ds.name == "digits":
        ds = dataclasses.replace(
            ds, x_train=_upsample_digits(ds.x_train), x_test=_upsample_digits(ds.x_test)
        )
        notes = "8x8 digits upsampled 3x (pixel repetition) and zero-padded to 28x28; " + notes
    p = data_lib.preprocess(ds, scale=1 / 256)
    source = ds.source if ds.source == ds.origin else f"{ds.source} (origin: {ds.origin})"
    return ArrayData(p.x_train, p.y_train, p.x_test, p.y_test, ds.name, source, notes)


def _dropout(arm: str, rate: float) -> DropoutConfig:
    backward = 0.0 if arm == "standard" else BACKWARD_RATE
    return DropoutConfig(arm, rate, backward)


def _plot(results: dict[str, Any], path: Path) -> None:
    """Test-accuracy curves (mean over replicas), one panel per rate; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = results["config"]["rates"]
    width = max(5.0, 4.0 * len(rates))
    fig, axes = plt.subplots(1, len(rates), figsize=(width, 3.4), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for arm in ARMS:
            curves = results["arms"][arm][f"{rate:g}"]["curves"]
            steps = [c["step"] for c in curves]
            acc = np.array([c["test_acc"] for c in curves])
            mean, std = acc.mean(1), acc.std(1)
            ax.plot(steps, mean, label=arm, marker="o", markersize=3)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(f"forward rate {rate:g}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    replicas = len(results["seeds"])
    fig.suptitle(
        f"LeNet on {results['data']['name']}: test accuracy, mean ± std over {replicas} replicas",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def _fmt(summary: dict[str, float]) -> str:
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def _fmt_diff(diff: dict[str, float]) -> str:
    if not np.isfinite(diff["ci_low"]):
        return f"{diff['mean']:+.4f} [n/a]"
    return f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"


def render(results: dict[str, Any]) -> str:
    """The markdown table: the paper's Table 3 next to our means and paired differences."""
    cfg = results["config"]
    rows = [
        "| rate | paper std | paper aug | ours std | ours aug | Δ aug − std [95% CI] | verdict "
        "| ours aug-exact | Δ exact − std [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in cfg["rates"]:
        key = f"{rate:g}"
        s = results["summary"]
        paper = [PAPER_TABLE3[arm].get(rate) for arm in ("standard", "augmented")]
        paper_txt = [f"{p:.4f}" if p is not None else "–" for p in paper]
        aug = results["comparisons"]["augmented"][key]
        exact = results["comparisons"]["augmented_exact"][key]
        rows.append(
            f"| {key} | {paper_txt[0]} | {paper_txt[1]} | {_fmt(s['standard'][key])} "
            f"| {_fmt(s['augmented'][key])} | {_fmt_diff(aug['difference'])} | {aug['verdict']} "
            f"| {_fmt(s['augmented_exact'][key])} | {_fmt_diff(exact['difference'])} "
            f"| {exact['verdict']} |"
        )
    t = cfg["train"]
    pooled = results["pooled"]
    lines = [
        f"**LeNet on {results['data']['name']}** ({results['data']['source']}): "
        f"{t['iterations']} iterations, batch {t['batch_size']}, lr {t['learning_rate']:g} "
        f"÷10 at {', '.join(map(str, t['lr_boundaries']))}, momentum {t['momentum']:g}, "
        f"weight decay {t['weight_decay']:g}; backward rate {cfg['backward_rate']:g}; "
        f"{len(results['seeds'])} paired replicas (seeds {results['seeds']}). "
        "Test accuracy mean ± std over replicas; Δ = paired difference with its 95% t-interval.",
        "",
        *rows,
        "",
        "Pooled over rates (all rate × seed pairs): augmented − standard "
        f"{_fmt_diff(pooled['augmented']['difference'])} → **{pooled['augmented']['verdict']}**; "
        f"augmented_exact − standard {_fmt_diff(pooled['augmented_exact']['difference'])} → "
        f"**{pooled['augmented_exact']['verdict']}**. Overall: **{results['verdict']}** "
        f"({results['source']}).",
    ]
    return "\n".join(lines)


@register(NAME, "LeNet on MNIST: standard vs augmented dropout (Gao et al. Table 3)", render=render)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains every (arm, rate) with the same seeds; returns the paired comparison."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    ckpt_root = ctx.out_dir / "checkpoints" / ctx.preset
    arms: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    summary: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    for rate in preset.rates:
        key = f"{rate:g}"
        for arm in ARMS:
            model = LeNet(num_classes=10, dropout=_dropout(arm, rate))
            result = train(
                model,
                data,
                preset.train,
                seeds,
                checkpoint_dir=ckpt_root / f"{arm}_{key}",
                quiet=ctx.quiet or None,
                desc=f"{arm} {key}",
            )
            arms[arm][key] = result.to_json()
            summary[arm][key] = stats.mean_std(result.final["test_acc"])
    comparisons: dict[str, dict[str, Any]] = {}
    pooled: dict[str, Any] = {}
    for arm in ARMS[1:]:
        comparisons[arm] = {}
        base_all, arm_all = [], []
        for rate in preset.rates:
            key = f"{rate:g}"
            base = arms["standard"][key]["final"]["test_acc"]
            other = arms[arm][key]["final"]["test_acc"]
            diff = stats.paired_difference(base, other)
            comparisons[arm][key] = {"difference": diff, "verdict": stats.verdict(diff, +1)}
            base_all += base
            arm_all += other
        diff = stats.paired_difference(base_all, arm_all)
        pooled[arm] = {"difference": diff, "verdict": stats.verdict(diff, +1)}
    results = {
        "source": SOURCE,
        "claim": "augmented dropout (forward rate p, backward rate 1e-4) has higher test "
        "accuracy than standard dropout at rate p, for p = 0.1 .. 0.5",
        "config": {
            "model": "LeNet (Caffe MNIST), dropout on the input of the last dense layer",
            "rates": list(preset.rates),
            "backward_rate": BACKWARD_RATE,
            "arms": list(ARMS),
            "replicas": replicas,
            "train": dataclasses.asdict(preset.train),
        },
        "data": data.describe(),
        "seeds": seeds,
        "paper": {arm: {f"{r:g}": v for r, v in t.items()} for arm, t in PAPER_TABLE3.items()},
        "summary": summary,
        "comparisons": comparisons,
        "pooled": pooled,
        "verdict": pooled["augmented"]["verdict"],
        "arms": arms,
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    if jax.process_index() == 0:
        _plot(results, figure)
        shutil.rmtree(ckpt_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            ckpt_root.parent.rmdir()  # only when no other preset's checkpoints remain
    results["figure"] = figure.name
    return results
