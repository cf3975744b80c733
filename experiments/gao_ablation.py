"""Gao et al. (2019), Tables 1-2 and Figures 1-2: plain vs standard vs forward vs backward dropout.

The ablation of Section 4: dropout is split into its two passes. *Forward* dropout drops
features in the forward pass only (the gradient flows as if nothing were dropped);
*backward* dropout keeps every feature in the forward pass and drops features and
back-propagated errors in the backward pass only. Each is compared with standard dropout and
with the network without dropout ("plain") at rates 0.3, 0.2, 0.1, 0.05, 0.01 and 0.005.

Protocols (Section 4, four runs each, the mean reported):

* **Table 1, ConvNet-Quick on CIFAR-10** (Caffe's ``cifar10_quick``, dropout on the inputs
  of both fully connected layers): batch 100, SGD momentum 0.9, learning rate 0.001 divided
  by 10 at 4,000 iterations, 9,000 iterations, mean subtraction only, no augmentation. The
  paper gives no weight decay; we use Caffe's ``cifar10_quick_solver`` value 0.004 on every
  parameter (the harness has no per-layer multipliers, so Caffe's bias lr multiplier 2 is not
  modelled). Inputs are raw pixel values (0..255) minus the per-channel training mean, as
  Caffe's quick model sees them (its mean file is per pixel; ours per channel).
* **Table 2, ResNet-20 on CIFAR-10** (dropout between the two convolutions of every block):
  batch 128, Nesterov momentum 0.9, learning rate 0.1 times 0.1 at 320k and 480k iterations,
  640k iterations, weight decay 1e-3, pad-4 random crop + horizontal flip augmentation.
  **The harness has no data augmentation**: the ``paper`` preset trains ResNet-20 without it
  and says so in its results (``augmentation`` field and the rendered notes).

The claims tested, each with paired 95% Student-t intervals over replicas that share seeds
(replica ``r`` of every arm has the same initial parameters, data order and dropout keys):

(a) standard dropout beats forward-only and backward-only dropout at the large rates
    (0.3 and 0.2): both differences ``standard - forward`` and ``standard - backward`` > 0;
(b) forward-only dropout degrades badly at large rates compared with the plain network:
    ``forward - plain`` < 0 at 0.3 and 0.2;
(c) backward-only dropout beats the plain network at a small rate (0.005):
    ``backward - plain`` > 0.

A claim over several (rate, comparison) cells is *reproduced* when every cell's interval
lies on the claimed side, *not reproduced* when any lies on the other side, else
*inconclusive*. Claims about rates a preset does not train are *not tested*.

Presets:

* ``smoke``: scikit-learn's 8x8 digits, a small MLP (one hidden layer of 32 units, dropout
  on the input of the output layer) instead of ConvNet-Quick, 16 iterations in one segment,
  learning rate 0.05, batch 32, rates 0.3 and 0.005, 2 replicas. It exercises the whole
  code path in seconds (CI); the MLP stands in because XLA:CPU takes about ten seconds to
  compile each ConvNet-Quick arm.
* ``quick``: CIFAR-10 when it is available (``--dataset`` or auto-detected), otherwise
  **Fashion-MNIST as a substitute dataset** (28x28 grey images, clearly labelled as such):
  rates 0.3 and 0.005, 4 replicas, 120 iterations with the learning-rate step at 55 (about
  the paper's 4000/9000 ratio), evaluated on the first 2,000 test images. It is sized to finish
  in about ten minutes on a shared 2-core CPU, where ConvNet-Quick with 4 replicas runs at
  roughly half a second per step; that is far from convergence, so its verdicts say little
  about the paper's converged numbers.
* ``paper``: Table 1's protocol exactly (all six rates, 4 replicas, full test set) and
  Table 2's ResNet-20 protocol (without augmentation, see above; on a CPU-only machine this
  part is reported as not run). Needs CIFAR-10; without it the run returns a ``not_run``
  result saying how to obtain the data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments import data as data_lib
from experiments import stats
from experiments.models import MLP, ConvNetQuick, DropoutConfig, ResNet
from experiments.registry import RunContext, register, save_figure_atomic
from experiments.train import ArrayData, TrainConfig, step_sgd, train

NAME = "gao_ablation"
SOURCE = "Gao, Pei & Huang, Demystifying Dropout, ICML 2019, Section 4, Tables 1-2, Figures 1-2"
ALL_RATES = (0.3, 0.2, 0.1, 0.05, 0.01, 0.005)
ARMS = ("plain", "standard", "forward", "backward")
DROPOUT_ARMS = ARMS[1:]
LARGE_RATES = (0.3, 0.2)
SMALL_RATE = 0.005
FIGURE_RATES = (0.2, 0.05, 0.005)


def _row(*values: float) -> dict[str, float]:
    return {f"{r:g}": v for r, v in zip(ALL_RATES, values, strict=True)}


PAPER = {
    "table1": {
        "title": "Table 1: ConvNet-Quick, CIFAR-10",
        "plain": 0.7579,
        "standard": _row(0.7523, 0.7617, 0.7657, 0.7647, 0.7626, 0.7608),
        "forward": _row(0.6908, 0.7211, 0.7482, 0.7627, 0.7612, 0.7578),
        "backward": _row(0.7433, 0.7557, 0.7585, 0.7593, 0.7583, 0.7599),
    },
    "table2": {
        "title": "Table 2: ResNet-20, CIFAR-10",
        "plain": 0.9143,
        "standard": _row(0.9163, 0.9176, 0.9193, 0.9174, 0.9141, 0.9154),
        "forward": _row(0.9007, 0.9093, 0.9169, 0.9171, 0.9141, 0.9142),
        "backward": _row(0.9109, 0.9130, 0.9140, 0.9142, 0.9147, 0.9146),
    },
}

CLAIMS = {
    "a": "standard dropout beats forward-only and backward-only dropout at large rates (0.3, 0.2)",
    "b": "forward-only dropout degrades badly at large rates (0.3, 0.2) compared with plain",
    "c": "backward-only dropout beats the plain network at a small rate (0.005)",
}


# ------------------------------------------------------------------------------- protocol
@dataclasses.dataclass(frozen=True)
class Part:
    """One network's ablation (one of the paper's tables).

    Attributes:
      table: ``table1`` or ``table2`` (the key into :data:`PAPER`).
      model: ``convnet_quick`` or ``resnet20`` (or ``resnet8`` for smoke runs).
      rates: the dropout rates trained.
      train: the optimisation protocol.
      test_subset: evaluate on the first ``test_subset`` test images (None: all).
      augmentation: the paper's augmentation for this table ("" for none). The harness
        applies none; a non-empty value is reported as a deviation.
      needs_accelerator: on a CPU-only machine the part is reported as not run.
    """

    table: str
    model: str
    rates: tuple[float, ...]
    train: TrainConfig
    test_subset: int | None = None
    augmentation: str = ""
    needs_accelerator: bool = False


@dataclasses.dataclass(frozen=True)
class Preset:
    """A preset: the dataset (and its substitute when missing), replicas, the parts."""

    dataset: str
    substitute: str | None
    replicas: int
    parts: tuple[Part, ...]


def quick_protocol(iterations: int, boundary: int, **kw: Any) -> TrainConfig:
    """Table 1's ConvNet-Quick protocol with ``iterations`` steps and one lr step."""
    base = {"batch_size": 100, "eval_every": 1000, "weight_decay": 0.004, "learning_rate": 0.001}
    return step_sgd(iterations, boundary, **{**base, **kw})


RESNET_PAPER = TrainConfig(
    iterations=640_000,
    batch_size=128,
    learning_rate=0.1,
    lr_boundaries=(320_000, 480_000),
    lr_decay=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=1e-3,
    eval_every=10_000,
)
PAD_CROP_FLIP = "pad 4 + random 32x32 crop + horizontal flip"

PRESETS = {
    "smoke": Preset(
        "digits",
        None,
        2,
        (
            Part(
                "table1",
                "mlp",
                (0.3, 0.005),
                quick_protocol(
                    16, 8, batch_size=32, eval_every=16, eval_batch_size=360, learning_rate=0.05
                ),
            ),
        ),
    ),
    "quick": Preset(
        "cifar10",
        "fashion_mnist",
        4,
        (
            Part(
                "table1",
                "convnet_quick",
                (0.3, 0.005),
                quick_protocol(120, 55, eval_every=40),
                test_subset=2000,
            ),
        ),
    ),
    "paper": Preset(
        "cifar10",
        None,
        4,
        (
            Part("table1", "convnet_quick", ALL_RATES, quick_protocol(9000, 4000, eval_every=500)),
            Part("table2", "resnet20", ALL_RATES, RESNET_PAPER, PAD_CROP_FLIP, True),
        ),
    ),
}


# ------------------------------------------------------------------------------- data
def load_data(name: str, model: str, test_subset: int | None = None) -> ArrayData:
    """A dataset prepared as the paper prepares it for ``model``.

    ConvNet-Quick sees raw pixel values (0..255) minus the per-channel training mean
    (Caffe's ``cifar10_quick`` has no input scaling); ResNets, and the smoke runs' MLP, see
    pixels scaled to [0, 1] minus the per-channel training mean. Fashion-MNIST stays 28x28
    (ConvNet-Quick's Caffe-style pooling works at any size: 28 -> 14 -> 7 -> 3 instead of
    CIFAR's 32 -> 16 -> 8 -> 4).

    Args:
      name: a :func:`experiments.data.load` name.
      model: ``convnet_quick`` or a ResNet name.
      test_subset: keep only the first ``test_subset`` test images.

    Raises:
      DatasetNotFoundError: the dataset is not available here (the message says how to get it).
    """
    ds = data_lib.load(name)
    notes = []
    convnet = model == "convnet_quick"
    p = data_lib.preprocess(ds, scale=1.0 if convnet else 1 / 255, mean_subtract=True)
    notes.append(
        "raw pixels 0..255 minus the per-channel training mean"
        if convnet
        else "pixels / 255 minus the per-channel training mean"
    )
    x_test, y_test = p.x_test, p.y_test
    if test_subset is not None and test_subset < len(y_test):
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]
        notes.append(f"evaluated on the first {test_subset} of {len(p.y_test)} test images")
    source = ds.source if ds.source == ds.origin else f"{ds.source} (origin: {ds.origin})"
    return ArrayData(p.x_train, p.y_train, x_test, y_test, ds.name, source, "; ".join(notes))


def resolve_dataset(
    requested: str | None, preset: Preset
) -> tuple[str | None, str | None, str | None]:
    """Which dataset to use: ``(name, substitute_note, missing_reason)``.

    An explicit ``requested`` dataset is used as is. Otherwise the preset's dataset when it
    loads, else its substitute (with a note saying so), else ``missing_reason`` says why.
    """
    if requested:
        return requested, None, None
    try:
        data_lib.load(preset.dataset)
        return preset.dataset, None, None
    except data_lib.DatasetNotFoundError as err:
        if preset.substitute is None:
            return None, None, str(err)
        note = (
            f"SUBSTITUTE DATASET: {preset.dataset} is not available here, so this run uses "
            f"{preset.substitute} instead; its numbers are not comparable with the paper's "
            f"{preset.dataset} figures, only the direction of the differences is."
        )
        return preset.substitute, note, None


def build_model(name: str, cfg: DropoutConfig, num_classes: int = 10):
    """``convnet_quick`` (Caffe cifar10_quick), ``resnet20``, or the small smoke-test stand-ins
    ``resnet8`` (one block per stage, 4/8/8 channels) and ``mlp`` (one hidden layer of 32)."""
    if name == "convnet_quick":
        return ConvNetQuick(num_classes=num_classes, dropout=cfg)
    if name == "mlp":
        return MLP(hidden=(32,), num_classes=num_classes, dropout=cfg)
    if name == "resnet20":
        return ResNet(num_classes=num_classes, dropout=cfg)
    if name == "resnet8":
        return ResNet(
            num_classes=num_classes, dropout=cfg, stage_blocks=(1, 1, 1), widths=(4, 8, 8)
        )
    raise ValueError(f"unknown model {name!r}")


def _dropout(arm: str, rate: float) -> DropoutConfig:
    return DropoutConfig("none") if arm == "plain" else DropoutConfig(arm, rate)


# ------------------------------------------------------------------------------- statistics
def combine(verdicts: list[str]) -> str:
    """All cells reproduced -> reproduced; any not reproduced -> not reproduced; else
    inconclusive; no cells -> not tested."""
    if not verdicts:
        return "not tested"
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "inconclusive"


def _cell(base: list[float], other: list[float], sign: int, label: str) -> dict[str, Any]:
    diff = stats.paired_difference(base, other)
    return {"comparison": label, "difference": diff, "verdict": stats.verdict(diff, sign)}


def evaluate_claims(finals: dict[str, Any], rates: tuple[float, ...]) -> dict[str, Any]:
    """The per-claim cells and verdicts from per-arm final test accuracies.

    ``finals["plain"]`` is a list over replicas; ``finals[arm][rate_key]`` likewise.
    """
    large = [r for r in rates if r in LARGE_RATES]
    cells: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": []}
    for r in large:
        k = f"{r:g}"
        for arm in ("forward", "backward"):
            cell = _cell(finals[arm][k], finals["standard"][k], +1, f"standard - {arm} @ {k}")
            cells["a"].append(cell)
        cells["b"].append(
            _cell(finals["plain"], finals["forward"][k], -1, f"forward - plain @ {k}")
        )
    if SMALL_RATE in rates:
        k = f"{SMALL_RATE:g}"
        cells["c"].append(
            _cell(finals["plain"], finals["backward"][k], +1, f"backward - plain @ {k}")
        )
    return {
        key: {
            "claim": CLAIMS[key],
            "cells": cells[key],
            "verdict": combine([c["verdict"] for c in cells[key]]),
        }
        for key in CLAIMS
    }


def overall(claims: dict[str, Any]) -> str:
    """One word over the tested claims (as :func:`combine`, ignoring untested ones)."""
    return combine([c["verdict"] for c in claims.values() if c["verdict"] != "not tested"])


# ------------------------------------------------------------------------------- figures
def _ran(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, p) for k, p in results["parts"].items() if p.get("status") != "not run"]


def save_figure(fig: Any, path: Path) -> None:
    """Writes a matplotlib figure atomically and closes it (used by gao_tables45 too)."""
    save_figure_atomic(fig, path, dpi=100)


def _plot(results: dict[str, Any], path: Path) -> None:
    """Figures 1-2: train and test loss vs iteration, the four arms, per part and rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for key, part in _ran(results):
        rates = part["rates"]
        if len(rates) > len(FIGURE_RATES):  # the paper's panels: p = 0.2, 0.05, 0.005
            rates = [r for r in rates if r in FIGURE_RATES]
        panels += [(key, part, r) for r in rates]
    fig, axes = plt.subplots(
        2, len(panels), figsize=(max(5.0, 3.8 * len(panels)), 6.4), squeeze=False
    )
    for col, (_, part, rate) in enumerate(panels):
        k = f"{rate:g}"
        for row, metric in enumerate(("train_loss", "test_loss")):
            ax = axes[row][col]
            for arm in ARMS:
                run = part["runs"]["plain"] if arm == "plain" else part["runs"][arm][k]
                steps = [c["step"] for c in run["curves"]]
                values = np.array([c[metric] for c in run["curves"]]).mean(1)
                ax.plot(steps, values, marker=".", label=arm, ls="--" if arm == "plain" else "-")
            kind = "training" if metric == "train_loss" else "testing"
            ax.set_title(f"{part['model']} p={k}: {kind} loss", fontsize="small")
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    title = f"Figs 1-2 analogue, {results['data']['name']}"
    if results.get("substitute"):
        title += " (SUBSTITUTE for CIFAR-10)"
    fig.suptitle(f"{title}\nmean over {len(results['seeds'])} replicas", fontsize="medium")
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------- rendering
def fmt(summary: dict[str, float]) -> str:
    """``mean ± std``."""
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def fmt_diff(diff: dict[str, float]) -> str:
    """``+mean [low, high]`` (``[n/a]`` without an interval)."""
    if not np.isfinite(diff["ci_low"]):
        return f"{diff['mean']:+.4f} [n/a]"
    return f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"


def describe_train(t: dict[str, Any]) -> str:
    """The protocol in one phrase."""
    opt = "Nesterov" if t["nesterov"] else "SGD"
    steps = ", ".join(map(str, t["lr_boundaries"]))
    return (
        f"{t['iterations']} iterations, batch {t['batch_size']}, {opt} momentum "
        f"{t['momentum']:g}, lr {t['learning_rate']:g} ×{t['lr_decay']:g} at {steps}, "
        f"weight decay {t['weight_decay']:g}"
    )


def _render_not_run(results: dict[str, Any]) -> str:
    lines = [f"**{NAME}: not run.** {results['reason']}", ""]
    for table in PAPER.values():
        lines += [f"{table['title']} (paper; ours: not run)", "", *_paper_rows(table), ""]
    return "\n".join(lines)


def _paper_rows(table: dict[str, Any]) -> list[str]:
    keys = [f"{r:g}" for r in ALL_RATES]
    rows = ["| arm | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    rows.append(f"| plain | {table['plain']:.4f} |" + " |" * (len(keys) - 1))
    for arm in DROPOUT_ARMS:
        rows.append(f"| {arm} | " + " | ".join(f"{table[arm][k]:.4f}" for k in keys) + " |")
    return rows


def render(results: dict[str, Any]) -> str:
    """Markdown: per part, paper vs ours per (arm, rate); then the claims and verdicts."""
    if results.get("not_run"):
        return _render_not_run(results)
    lines = []
    if results.get("substitute"):
        lines += [f"**{results['substitute']}**", ""]
    for key, part in results["parts"].items():
        if part.get("status") == "not run":
            lines += [f"**{PAPER[key]['title']}**: not run — {part['reason']}", ""]
            continue
        paper = PAPER[part["table"]]
        ds = part["data"]
        lines += [
            f"**{paper['title']}** — ours: {part['model']} on **{ds['name']}** ({ds['source']}; "
            f"{ds['preprocessing']}); {describe_train(part['train'])}; "
            f"{len(results['seeds'])} paired replicas (seeds {results['seeds']}); "
            f"augmentation: {part['augmentation_applied']}. Test accuracy mean ± std.",
            "",
            "| rate | paper plain | ours plain | paper std | ours std | paper fwd | ours fwd "
            "| paper bwd | ours bwd |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        plain = fmt(part["summary"]["plain"])
        for rate in part["rates"]:
            k = f"{rate:g}"
            cells = [f"{paper['plain']:.4f}", plain]
            for arm in DROPOUT_ARMS:
                cells += [f"{paper[arm][k]:.4f}", fmt(part["summary"][arm][k])]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines += ["", "| claim | paired difference [95% CI] | cell verdict |", "|---|---|---|"]
        for key, claim in part["claims"].items():
            for cell in claim["cells"]:
                lines.append(
                    f"| ({key}) {cell['comparison']} | {fmt_diff(cell['difference'])} "
                    f"| {cell['verdict']} |"
                )
        lines.append("")
        for key, claim in part["claims"].items():
            lines.append(f"- ({key}) {claim['claim']}: **{claim['verdict']}**")
        lines.append("")
    lines.append(f"Overall: **{results['verdict']}** ({results['source']}).")
    for key, table in PAPER.items():
        ran = dict(_ran(results))
        if key not in ran or len(ran[key]["rates"]) < len(ALL_RATES):
            lines += ["", f"The paper's {table['title']}, all rates:", "", *_paper_rows(table)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- run
def not_run_result(reason: str, claim: str, source: str, paper: dict[str, Any]) -> dict:
    """The honest result of a run that could not happen here."""
    return {
        "not_run": True,
        "reason": reason,
        "claim": claim,
        "source": source,
        "paper": paper,
        "verdict": "not run",
    }


def cleanup_checkpoints(root: Path) -> None:
    """Removes a run's checkpoints (and the parent folder when it is empty)."""
    shutil.rmtree(root, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.parent.rmdir()


CLAIM_TEXT = (
    "(a) standard dropout beats forward-only and backward-only dropout at large rates "
    "(0.3, 0.2); (b) forward-only dropout degrades badly at large rates vs the plain "
    "network; (c) backward-only dropout beats the plain network at rate 0.005"
)


@register(
    NAME,
    "Plain vs standard vs forward-only vs backward-only dropout (Gao et al. Tables 1-2)",
    render=render,
)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains plain and every (arm, rate) with the same seeds; returns the claims' verdicts."""
    preset = PRESETS[ctx.preset]
    name, substitute, missing = resolve_dataset(ctx.dataset, preset)
    if name is None:
        reason = (
            f"the {ctx.preset} preset needs {preset.dataset}, which is not available here. "
            f"{missing}"
        )
        return not_run_result(reason, CLAIM_TEXT, SOURCE, PAPER)
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    ckpt_root = ctx.out_dir / "checkpoints" / ctx.preset
    parts: dict[str, Any] = {}
    for part in preset.parts:
        if part.needs_accelerator and jax.default_backend() == "cpu":
            parts[part.table] = {
                "status": "not run",
                "table": part.table,
                "model": part.model,
                "reason": f"{part.model} for {part.train.iterations} iterations x "
                f"{replicas} replicas x {1 + 3 * len(part.rates)} arms needs an accelerator; "
                "this machine has only a CPU backend. Run the preset on a GPU/TPU host.",
            }
            continue
        data = load_data(name, part.model, part.test_subset)
        runs: dict[str, Any] = {arm: {} for arm in DROPOUT_ARMS}
        jobs = [("plain", None)] + [(arm, r) for r in part.rates for arm in DROPOUT_ARMS]
        for arm, rate in jobs:
            label = "plain" if rate is None else f"{arm}_{rate:g}"
            result = train(
                build_model(part.model, _dropout(arm, rate or 0.0)),
                data,
                part.train,
                seeds,
                checkpoint_dir=ckpt_root / part.table / label,
                quiet=ctx.quiet or None,
                desc=f"{part.model} {label}",
            ).to_json()
            if rate is None:
                runs["plain"] = result
            else:
                runs[arm][f"{rate:g}"] = result
        finals: dict[str, Any] = {"plain": runs["plain"]["final"]["test_acc"]}
        summary: dict[str, Any] = {"plain": stats.mean_std(finals["plain"])}
        for arm in DROPOUT_ARMS:
            finals[arm] = {k: v["final"]["test_acc"] for k, v in runs[arm].items()}
            summary[arm] = {k: stats.mean_std(v) for k, v in finals[arm].items()}
        parts[part.table] = {
            "table": part.table,
            "model": part.model,
            "data": data.describe(),
            "rates": list(part.rates),
            "train": dataclasses.asdict(part.train),
            "augmentation_paper": part.augmentation or "none",
            "augmentation_applied": "none"
            + (
                f" (the paper uses {part.augmentation}; the harness has none)"
                if part.augmentation
                else ""
            ),
            "summary": summary,
            "claims": evaluate_claims(finals, part.rates),
            "runs": runs,
        }
    main = parts[preset.parts[0].table]  # Table 1 (never needs an accelerator)
    ran = {k: p for k, p in parts.items() if p.get("status") != "not run"}
    results = {
        "source": SOURCE,
        "claim": CLAIM_TEXT + (f". {substitute}" if substitute else f", on {name}"),
        "substitute": substitute,
        "config": {
            "arms": list(ARMS),
            "replicas": replicas,
            "parts": [dataclasses.asdict(p) for p in preset.parts],
            "dropout_placement": "ConvNet-Quick: inputs of both fully connected layers; "
            "ResNet: between the two convolutions of every block",
        },
        "data": main["data"],
        "seeds": seeds,
        "paper": PAPER,
        "parts": parts,
        "summary": {k: p["summary"] for k, p in ran.items()},
        "comparisons": {k: p["claims"] for k, p in ran.items()},
        "claims": {k: c["verdict"] for k, c in main["claims"].items()},
        "verdict": overall(main["claims"]),
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    if jax.process_index() == 0:
        _plot(results, figure)
        cleanup_checkpoints(ckpt_root)
    results["figure"] = figure.name
    return results
