"""DropBlock vs standard dropout on a convolutional net's feature maps (claim 12).

The explainer seed says, of dropout in computer vision: "Dropping individual pixels is like
adding salt-and-pepper noise; the network can easily learn to ignore it by looking at
neighboring pixels. A more effective strategy is to drop entire contiguous blocks of the
image, a technique called DropBlock. [...] The simple idea of making the dropout mask
itself structured leads to a much stronger regularizer." (Ghiasi et al., 2018, make the
same point for ResNets on ImageNet.)

We test it on Fashion-MNIST with a small conv net whose noise sits on the convolutional
feature maps, at the same expected drop fraction for every kind:

``conv1 (w1, 3x3) -> ReLU -> maxpool -> [noise on the 14x14xw1 map] -> conv2 (w2, 3x3) ->
ReLU -> maxpool -> [noise on the 7x7xw2 map] -> fc (hidden) -> ReLU -> fc 10``

Arms (same seeds, so replica ``r`` of every arm has the same initial parameters and data
order; see :mod:`experiments.train`):

* ``none``: no noise;
* ``standard``: elementwise inverted dropout at ``rate`` on both maps;
* ``dropblock``: :func:`dropjax.dropblock` with ``block_size`` 3 on both maps, calibrated
  so that the expected dropped fraction equals ``rate`` (the ``dropblock`` kind of
  :class:`experiments.models.DropoutConfig`); fixed rate, no schedule.

For each rate: test accuracy (and the clean-train minus test accuracy gap, on the first
10,000 training images, without noise) as mean ± std over replicas, and the paired
differences dropblock − standard and dropblock − none with 95% t-intervals. The claim's
verdict uses dropblock − standard test accuracy (claimed > 0).

Presets (our own protocols; the claim comes with none): ``smoke`` trains on the upsampled
8x8 digits for a few steps. ``quick``: Fashion-MNIST, widths 16/32, hidden 64, 700
iterations of SGD (lr 0.05 ÷10 at 500, momentum 0.9, weight decay 5e-4, batch 100), rate
0.2, 4 replicas (about 7.5 minutes on a shared 2-core CPU; too short for over-fitting to
set in: the clean-train minus test gap stays near 1.5 points). ``paper``: widths 32/64,
hidden 128, 12,000 iterations (20 epochs, lr step at 8,000), rates 0.1, 0.2, 0.3, 5
replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments import stats
from experiments.cpu_conv import conv_general_dilated
from experiments.models import NO_DROPOUT, DropConv, DropoutConfig, make_dropout
from experiments.recipes import lenet_images as load_data
from experiments.registry import RunContext, register, save_figure_atomic
from experiments.train import TrainConfig, step_sgd, train

NAME = "dropblock_conv"
ARMS = ("none", "standard", "dropblock")
SOURCE = "explainer seed 000_181800e08f4700ac (Applications: structured dropout, DropBlock)"
QUOTE = (
    "Dropping individual pixels is like adding salt-and-pepper noise; the network can easily "
    "learn to ignore it by looking at neighboring pixels. A more effective strategy is to drop "
    "entire contiguous blocks of the image, a technique called DropBlock. [...] The simple "
    "idea of making the dropout mask itself structured leads to a much stronger regularizer."
)
CLAIM = (
    "on a convolutional net, DropBlock on the feature maps regularises better than standard "
    "(elementwise) dropout at the same expected drop fraction: higher test accuracy"
)
TRAIN_PROBE = 10000

_Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


class MapNoiseConvNet(nn.Module):
    """Two 3x3 conv layers with the dropout kind applied to their (pooled) feature maps.

    Attributes:
      num_classes: output size.
      dropout: the noise on the 14x14 map (input of ``conv2``) and on the 7x7 map (before
        the dense layers); any kind of :class:`DropoutConfig` that takes an NHWC map.
      widths: channels of ``conv1`` and ``conv2``.
      hidden: units of the hidden dense layer.
    """

    num_classes: int = 10
    dropout: DropoutConfig = NO_DROPOUT
    widths: tuple[int, int] = (16, 32)
    hidden: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC images of 28x28."""
        x = nn.relu(_Conv(self.widths[0], (3, 3), padding="SAME", name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = DropConv(self.widths[1], (3, 3), self.dropout, padding="SAME", name="conv2")(x, train)
        x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
        key = self.make_rng("dropout") if train and self.dropout.active else None
        x = make_dropout(self.dropout, name="drop_map2")(x, key is None, rng=key)
        x = nn.relu(nn.Dense(self.hidden, name="fc1")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="fc2")(x)


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: data, network size, rates, block size, replicas, protocol."""

    dataset: str
    widths: tuple[int, int]
    hidden: int
    rates: tuple[float, ...]
    block_size: int
    replicas: int
    train: TrainConfig


_protocol = functools.partial(step_sgd, learning_rate=0.05)


PRESETS = {
    "smoke": Preset(
        "digits",
        (4, 8),
        16,
        (0.2,),
        3,
        4,
        _protocol(12, 8, batch_size=64, eval_every=12, eval_batch_size=360),
    ),
    "quick": Preset(
        "fashion_mnist", (16, 32), 64, (0.2,), 3, 4, _protocol(700, 500, eval_every=700)
    ),
    "paper": Preset(
        "fashion_mnist",
        (32, 64),
        128,
        (0.1, 0.2, 0.3),
        3,
        5,
        _protocol(12000, 8000, eval_every=2000),
    ),
}


def arm_config(arm: str, rate: float, block_size: int) -> DropoutConfig:
    """The :class:`DropoutConfig` of an arm (``none``, ``standard`` or ``dropblock``)."""
    if arm == "none":
        return NO_DROPOUT
    return DropoutConfig(arm, rate, block_size=block_size)


@functools.lru_cache(maxsize=4)
def _predict_fn(model: nn.Module):
    return jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, xb, train=False), -1))


def _clean_accuracy(model: nn.Module, params: Any, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Per-replica accuracy without noise on ``(x, y)`` (params with a replica axis).

    Without noise every arm computes the same function of its parameters, so pass the
    ``none`` arm's model: one compiled program serves all arms.
    """
    apply = _predict_fn(model)
    replicas = jax.tree.leaves(params)[0].shape[0]
    out = []
    for r in range(replicas):
        p = jax.tree.map(lambda a, r=r: a[r], params)
        pred = np.concatenate(
            [np.asarray(apply(p, jnp.asarray(x[i : i + 2000]))) for i in range(0, len(x), 2000)]
        )
        out.append(float((pred == y).mean()))
    return out


def _plot(results: dict[str, Any], path: Path) -> None:
    """Per rate: final test accuracy per replica (paired lines) and the generalisation gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = results["config"]["rates"]
    fig, axes = plt.subplots(
        2, len(rates), figsize=(max(6.0, 4.5 * len(rates)), 7.5), squeeze=False
    )
    for j, rate in enumerate(rates):
        key = f"{rate:g}"
        for row, (metric, ylabel) in enumerate(
            (("test_acc", "test accuracy"), ("gap", "clean-train − test accuracy"))
        ):
            ax = axes[row, j]
            vals = np.array([results["per_replica"][arm][key][metric] for arm in ARMS])
            xs = np.arange(len(ARMS))
            ax.plot(xs, vals, color="0.7", marker=".", lw=0.8)  # one line per replica
            ax.errorbar(
                xs,
                vals.mean(1),
                yerr=vals.std(1, ddof=1) if vals.shape[1] > 1 else None,
                fmt="o",
                color="C3",
                capsize=4,
                ms=7,
                label="mean ± std",
            )
            ax.set_xticks(xs, ARMS)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"rate {key}, block {results['config']['block_size']}")
                ax.legend(fontsize="small")
    fig.suptitle(
        f"{results['data']['name']}: conv-map noise, {len(results['seeds'])} paired replicas\n"
        "(grey lines: one replica across arms)",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def _fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.4f} ± {s['std']:.4f}"


def _fmt_diff(d: dict[str, float]) -> str:
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.4f} [n/a]"
    return f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


def render(results: dict[str, Any]) -> str:
    """Markdown: per rate, test accuracy and gap per arm, and the paired differences."""
    cfg, t = results["config"], results["config"]["train"]
    rows = [
        "| rate | none | standard | dropblock | Δ db − std [95% CI] | verdict | Δ db − none "
        "[95% CI] | gap none / std / db |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rate in cfg["rates"]:
        k = f"{rate:g}"
        s, c = results["summary"], results["comparisons"][k]
        gaps = " / ".join(f"{s[a][k]['gap']['mean']:.4f}" for a in ARMS)
        rows.append(
            f"| {k} | {_fmt(s['none'][k]['test_acc'])} | {_fmt(s['standard'][k]['test_acc'])} "
            f"| {_fmt(s['dropblock'][k]['test_acc'])} "
            f"| {_fmt_diff(c['dropblock_vs_standard']['difference'])} "
            f"| {c['dropblock_vs_standard']['verdict']} "
            f"| {_fmt_diff(c['dropblock_vs_none']['difference'])} | {gaps} |"
        )
    return "\n".join(
        [
            f"**DropBlock vs standard dropout on conv feature maps, {results['data']['name']}** "
            f"({results['data']['source']}): conv {cfg['widths'][0]}/{cfg['widths'][1]} 3x3, "
            f"hidden {cfg['hidden']}; noise on the 14x14 and 7x7 maps, DropBlock block "
            f"{cfg['block_size']} calibrated to the same expected drop fraction; "
            f"{t['iterations']} iterations, batch {t['batch_size']}, lr {t['learning_rate']:g} "
            f"÷10 at {', '.join(map(str, t['lr_boundaries']))}, momentum {t['momentum']:g}, "
            f"weight decay {t['weight_decay']:g}; {len(results['seeds'])} paired replicas. "
            "Test accuracy mean ± std; gap = clean-train (first "
            f"{TRAIN_PROBE} images) − test accuracy.",
            "",
            *rows,
            "",
            f'Claim ("{QUOTE}"): {CLAIM}. Pooled over rates: dropblock − standard '
            f"{_fmt_diff(results['pooled']['dropblock_vs_standard']['difference'])} → "
            f"**{results['verdict']}**; dropblock − none "
            f"{_fmt_diff(results['pooled']['dropblock_vs_none']['difference'])} → "
            f"{results['pooled']['dropblock_vs_none']['verdict']}.",
        ]
    )


@register(NAME, "DropBlock vs standard dropout on conv feature maps (explainer claim)", render)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains every (arm, rate) with the same seeds; returns the paired comparison."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    x_probe, y_probe = data.x_train[:TRAIN_PROBE], data.y_train[:TRAIN_PROBE]
    ckpt_root = ctx.out_dir / "checkpoints" / ctx.preset
    per_replica: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    summary: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    training: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    none_result = None
    clean_model = MapNoiseConvNet(10, NO_DROPOUT, preset.widths, preset.hidden)
    for rate in preset.rates:
        key = f"{rate:g}"
        for arm in ARMS:
            if arm == "none" and none_result is not None:  # "none" does not depend on rate
                per_replica[arm][key] = per_replica[arm][none_result]
                summary[arm][key] = summary[arm][none_result]
                continue
            cfg = arm_config(arm, rate, preset.block_size)
            model = MapNoiseConvNet(10, cfg, preset.widths, preset.hidden)
            result = train(
                model,
                data,
                preset.train,
                seeds,
                checkpoint_dir=ckpt_root / f"{arm}_{key}",
                quiet=ctx.quiet or None,
                desc=f"{arm} {key}",
            )
            test_acc = [float(a) for a in result.final["test_acc"]]
            train_acc = _clean_accuracy(clean_model, result.state.params, x_probe, y_probe)
            gap = [a - b for a, b in zip(train_acc, test_acc, strict=True)]
            per_replica[arm][key] = {"test_acc": test_acc, "train_acc_clean": train_acc, "gap": gap}
            summary[arm][key] = {
                "test_acc": stats.mean_std(test_acc),
                "train_acc_clean": stats.mean_std(train_acc),
                "gap": stats.mean_std(gap),
            }
            training[arm][key] = result.to_json()
            if arm == "none":
                none_result = key
    comparisons: dict[str, Any] = {}
    pooled_lists: dict[str, tuple[list, list]] = {
        "dropblock_vs_standard": ([], []),
        "dropblock_vs_none": ([], []),
    }
    for rate in preset.rates:
        k = f"{rate:g}"
        db = per_replica["dropblock"][k]["test_acc"]
        comparisons[k] = {}
        for name, base_arm in (
            ("dropblock_vs_standard", "standard"),
            ("dropblock_vs_none", "none"),
        ):
            base = per_replica[base_arm][k]["test_acc"]
            diff = stats.paired_difference(base, db)
            gap_diff = stats.paired_difference(
                per_replica[base_arm][k]["gap"], per_replica["dropblock"][k]["gap"]
            )
            comparisons[k][name] = {
                "difference": diff,
                "verdict": stats.verdict(diff, +1),
                "gap_difference": gap_diff,
            }
            pooled_lists[name][0].extend(base)
            pooled_lists[name][1].extend(db)
    pooled = {}
    for name, (base, db) in pooled_lists.items():
        diff = stats.paired_difference(base, db)
        pooled[name] = {"difference": diff, "verdict": stats.verdict(diff, +1)}
    results = {
        "source": SOURCE,
        "claim": CLAIM,
        "quote": QUOTE,
        "config": {
            "model": "MapNoiseConvNet: conv3x3-ReLU-pool-[noise]-conv3x3-ReLU-pool-[noise]-fc-fc",
            "widths": list(preset.widths),
            "hidden": preset.hidden,
            "rates": list(preset.rates),
            "block_size": preset.block_size,
            "arms": list(ARMS),
            "replicas": replicas,
            "train": dataclasses.asdict(preset.train),
            "train_probe": f"first {TRAIN_PROBE} training images, no noise",
        },
        "data": data.describe(),
        "seeds": seeds,
        "summary": summary,
        "comparisons": comparisons,
        "pooled": pooled,
        "verdict": pooled["dropblock_vs_standard"]["verdict"],
        "per_replica": per_replica,
        "training": training,
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    if jax.process_index() == 0:
        _plot(results, figure)
        shutil.rmtree(ckpt_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            ckpt_root.parent.rmdir()
    results["figure"] = figure.name
    return results
