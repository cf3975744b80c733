"""Gao et al. (2019), Tables 4-5: standard vs augmented dropout, ConvNet-Quick and ResNet-20.

Augmented dropout keeps standard dropout's forward mask (rate ``p``) and drops a little more
in the backward pass (a nested backward mask with the extra rate ``q``; the paper writes
``p/q``). The claim: augmented dropout has higher test accuracy than standard dropout at the
same forward rate, for every dataset and rate of the two tables.

* **Table 4, ConvNet-Quick** (Caffe ``cifar10_quick``, dropout on the inputs of both fully
  connected layers) on SVHN and CIFAR-10, ``q = 2e-4``; no augmentation, mean subtraction
  only; batch 100, SGD momentum 0.9, lr 0.001 divided by 10 at 4,000 iterations, 9,000
  iterations (Section 4's setting). Weight decay 0.004 (Caffe's ``cifar10_quick_solver``;
  the paper does not state one). Inputs: raw pixels minus the per-channel training mean.
* **Table 5, ResNet-20** (dropout between the two convolutions of every block) on SVHN
  (``q = 2e-4``, no augmentation), CIFAR-10 and CIFAR-100 (``q = 1e-4``, pad-4 crop + flip
  augmentation in the paper); batch 128, Nesterov momentum 0.9, lr 0.1 times 0.1 at 320k and
  480k iterations, 640k iterations, weight decay 1e-3. Inputs: pixels / 255 minus the
  per-channel training mean. **The harness has no data augmentation**, so the CIFAR cells
  run without it, and the results say so.

Every (dataset, rate) cell trains both arms with the same seeds (paired replicas); the
difference ``augmented - standard`` gets a 95% Student-t interval per rate and pooled over
the rates of a dataset. A cell's verdict is ``reproduced`` when its pooled interval lies
above 0, ``not reproduced`` when below, else ``inconclusive``; the overall verdict combines
the cells that ran (all reproduced -> reproduced, any not reproduced -> not reproduced).

Nothing is faked. A cell whose dataset is missing (SVHN, CIFAR-10 and CIFAR-100 have no
offline source here; :mod:`experiments.data` says how to provide them), or a ResNet-20 cell
of the ``quick``/``paper`` presets on a CPU-only machine, is reported as *not run* with the
reason; when no cell can run, :func:`run` returns ``{"not_run": True, "reason": ...}`` and
the rendered table shows the paper's numbers with "not run" in our columns.

Presets:

* ``smoke``: tiny synthetic images (10 classes, class templates plus noise, 8x8x1),
  one Table-4 stand-in cell at rate 0.3 with ``q = 2e-4``, a small MLP as the network (XLA:CPU
  compiles it in seconds), 16 iterations at lr 0.05, 2 replicas: the same code path in seconds (CI),
  no data needed.
* ``quick``: the real datasets, rates 0.1, 0.2 and 0.3, 4 replicas, shortened schedules
  (ConvNet-Quick 2,000 iterations with the lr step at 900; ResNet-20 8,000 iterations with
  steps at 4,000 and 6,000); ResNet-20 cells need an accelerator.
* ``paper``: the protocols above, 4 replicas.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments import data as data_lib
from experiments import stats
from experiments.models import DropoutConfig, build_model
from experiments.protocols import RESNET_PAPER, describe_train, quick_protocol
from experiments.recipes import convnet_images as load_data
from experiments.registry import (
    RunContext,
    cleanup_checkpoints,
    not_run_result,
    register,
    save_figure_atomic,
)
from experiments.stats import combine, fmt, fmt_diff
from experiments.train import ArrayData, TrainConfig, train

NAME = "gao_tables45"
SOURCE = "Gao, Pei & Huang, Demystifying Dropout, ICML 2019, Section 6.2, Tables 4-5"
RATES = (0.1, 0.2, 0.3)
ARMS = ("standard", "augmented")
CLAIM = (
    "augmented dropout (forward rate p, extra backward rate q = 2e-4 or 1e-4) has higher "
    "test accuracy than standard dropout at rate p, for ConvNet-Quick on SVHN and CIFAR-10 "
    "(Table 4) and ResNet-20 on SVHN, CIFAR-10 and CIFAR-100 (Table 5), p = 0.1, 0.2, 0.3"
)


def _entry(q: float, std: tuple[float, ...], aug: tuple[float, ...]) -> dict[str, Any]:
    keys = [f"{r:g}" for r in RATES]
    return {
        "backward_rate": q,
        "standard": dict(zip(keys, std, strict=True)),
        "augmented": dict(zip(keys, aug, strict=True)),
    }


PAPER = {
    "table4": {
        "title": "Table 4: ConvNet-Quick",
        "svhn": _entry(2e-4, (0.9240, 0.9231, 0.9249), (0.9248, 0.9258, 0.9250)),
        "cifar10": _entry(2e-4, (0.7657, 0.7617, 0.7523), (0.7674, 0.7655, 0.7606)),
    },
    "table5": {
        "title": "Table 5: ResNet-20",
        "svhn": _entry(2e-4, (0.9618, 0.9626, 0.9655), (0.9627, 0.9648, 0.9667)),
        "cifar10": _entry(1e-4, (0.9193, 0.9176, 0.9163), (0.9196, 0.9195, 0.9177)),
        "cifar100": _entry(1e-4, (0.6762, 0.6748, 0.6686), (0.6786, 0.6770, 0.6688)),
    },
}
PAD_CROP_FLIP = "pad 4 + random 32x32 crop + horizontal flip"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One dataset of one table: the network, data, rates, backward rate and protocol.

    Attributes:
      table: ``table4`` or ``table5``.
      dataset: a loader name, or ``synthetic`` (smoke runs).
      model: ``convnet_quick``, ``resnet20`` or a smoke stand-in (see
        :func:`experiments.models.build_model`).
      rates: forward dropout rates.
      backward_rate: augmented dropout's extra backward rate ``q``.
      train: the optimisation protocol.
      augmentation: the paper's augmentation ("" for none); the harness applies none.
      needs_accelerator: refuse to run on a CPU-only machine.
    """

    table: str
    dataset: str
    model: str
    rates: tuple[float, ...]
    backward_rate: float
    train: TrainConfig
    augmentation: str = ""
    needs_accelerator: bool = False

    @property
    def key(self) -> str:
        return f"{self.table}_{self.dataset}"


@dataclasses.dataclass(frozen=True)
class Preset:
    """The cells and the replica count."""

    replicas: int
    cells: tuple[Cell, ...]


def _cells(convnet: TrainConfig, resnet: TrainConfig, rates=RATES) -> tuple[Cell, ...]:
    return (
        Cell("table4", "svhn", "convnet_quick", rates, 2e-4, convnet),
        Cell("table4", "cifar10", "convnet_quick", rates, 2e-4, convnet),
        Cell("table5", "svhn", "resnet20", rates, 2e-4, resnet, "", True),
        Cell("table5", "cifar10", "resnet20", rates, 1e-4, resnet, PAD_CROP_FLIP, True),
        Cell("table5", "cifar100", "resnet20", rates, 1e-4, resnet, PAD_CROP_FLIP, True),
    )


_SMOKE_TRAIN = quick_protocol(
    16, 8, batch_size=32, eval_every=16, eval_batch_size=360, learning_rate=0.05
)
_QUICK_RESNET = dataclasses.replace(
    RESNET_PAPER, iterations=8000, lr_boundaries=(4000, 6000), eval_every=1000
)
PRESETS = {
    "smoke": Preset(
        2,
        (Cell("table4", "synthetic", "mlp", (0.3,), 2e-4, _SMOKE_TRAIN),),
    ),
    "quick": Preset(4, _cells(quick_protocol(2000, 900, eval_every=500), _QUICK_RESNET)),
    "paper": Preset(4, _cells(quick_protocol(9000, 4000, eval_every=500), RESNET_PAPER)),
}


def synthetic_data(seed: int = 0, train_size: int = 1440, test_size: int = 360) -> ArrayData:
    """Tiny images: 10 class templates (uniform pixels) plus Gaussian noise, 8x8x1.

    Scaled by 1/255 and mean-subtracted like the ResNet inputs. The shapes match
    :mod:`experiments.gao_ablation`'s smoke data (8x8 digits, 360 test images), so a test
    session that runs both smoke presets compiles the shared initialisation and evaluation
    programs once.
    """
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, size=(10, 8, 8, 1))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (np.arange(n) % 10).astype(np.int32)
        x = np.clip(templates[y] + rng.normal(0, 80, size=(n, 8, 8, 1)), 0, 255)
        return (x / 255).astype(np.float32), y

    x_train, y_train = draw(train_size)
    x_test, y_test = draw(test_size)
    mean = x_train.mean(axis=(0, 1, 2)).astype(np.float32)
    return ArrayData(
        x_train - mean,
        y_train,
        x_test - mean,
        y_test,
        "synthetic",
        "generated (numpy, seed 0)",
        "10 class templates + N(0, 80) pixel noise, clipped, / 255, minus the channel mean",
    )


def _missing(cell: Cell, available: dict[str, str | None]) -> str | None:
    """Why ``cell`` cannot run here (None when it can); ``available`` caches data checks."""
    if cell.dataset != "synthetic":
        if cell.dataset not in available:
            try:
                data_lib.load(cell.dataset)
                available[cell.dataset] = None
            except data_lib.DatasetNotFoundError as err:
                available[cell.dataset] = f"{cell.dataset}: {err}"
        if available[cell.dataset] is not None:
            return available[cell.dataset]
    if cell.needs_accelerator and jax.default_backend() == "cpu":
        return (
            f"{cell.key}: ResNet-20 for {cell.train.iterations} iterations x 4 replicas x "
            f"{2 * len(cell.rates)} arms needs an accelerator; this machine has only a CPU "
            "backend. Run this preset on a GPU/TPU host."
        )
    return None


def _num_classes(dataset: str) -> int:
    return 100 if dataset == "cifar100" else 10


def _run_cell(cell: Cell, seeds: list[int], ctx: RunContext, ckpt_root: Path) -> dict[str, Any]:
    data = synthetic_data() if cell.dataset == "synthetic" else load_data(cell.dataset, cell.model)
    runs: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    summary: dict[str, dict[str, Any]] = {arm: {} for arm in ARMS}
    comparisons: dict[str, Any] = {}
    base_all: list[float] = []
    aug_all: list[float] = []
    for rate in cell.rates:
        k = f"{rate:g}"
        for arm in ARMS:
            q = cell.backward_rate if arm == "augmented" else 0.0
            model = build_model(cell.model, DropoutConfig(arm, rate, q), _num_classes(cell.dataset))
            result = train(
                model,
                data,
                cell.train,
                seeds,
                checkpoint_dir=ckpt_root / cell.key / f"{arm}_{k}",
                quiet=ctx.quiet or None,
                desc=f"{cell.key} {arm} {k}",
            ).to_json()
            runs[arm][k] = result
            summary[arm][k] = stats.mean_std(result["final"]["test_acc"])
        base = runs["standard"][k]["final"]["test_acc"]
        aug = runs["augmented"][k]["final"]["test_acc"]
        diff = stats.paired_difference(base, aug)
        comparisons[k] = {"difference": diff, "verdict": stats.verdict(diff, +1)}
        base_all += base
        aug_all += aug
    pooled = stats.paired_difference(base_all, aug_all)
    return {
        "status": "run",
        "table": cell.table,
        "dataset": cell.dataset,
        "model": cell.model,
        "rates": list(cell.rates),
        "backward_rate": cell.backward_rate,
        "train": dataclasses.asdict(cell.train),
        "augmentation_applied": "none"
        + (
            f" (the paper uses {cell.augmentation}; the harness has none)"
            if cell.augmentation
            else ""
        ),
        "data": data.describe(),
        "summary": summary,
        "comparisons": comparisons,
        "pooled": {"difference": pooled, "verdict": stats.verdict(pooled, +1)},
        "verdict": stats.verdict(pooled, +1),
        "runs": runs,
    }


def _plot(results: dict[str, Any], path: Path) -> None:
    """Per run cell: final test accuracy vs rate, standard vs augmented (mean ± std), with the
    paper's numbers as open markers where the dataset is the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in results["cells"].values() if c["status"] == "run"]
    fig, axes = plt.subplots(
        1, len(cells), figsize=(max(5.0, 4.0 * len(cells)), 3.6), squeeze=False
    )
    for ax, cell in zip(axes[0], cells, strict=True):
        keys = [f"{r:g}" for r in cell["rates"]]
        paper = PAPER[cell["table"]].get(cell["dataset"])
        for i, arm in enumerate(ARMS):
            mean = [cell["summary"][arm][k]["mean"] for k in keys]
            std = [cell["summary"][arm][k]["std"] for k in keys]
            ax.errorbar(
                cell["rates"], mean, std, marker="o", capsize=3, label=f"ours {arm}", color=f"C{i}"
            )
            if paper is not None:
                ax.plot(
                    cell["rates"],
                    [paper[arm][k] for k in keys],
                    "s--",
                    mfc="none",
                    color=f"C{i}",
                    label=f"paper {arm}",
                )
        ax.set_title(f"{cell['model']} on {cell['dataset']} ({cell['table']})", fontsize="small")
        ax.set_xlabel("forward dropout rate p")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="x-small")
    fig.suptitle(
        f"Gao et al. Tables 4-5: standard vs augmented, mean ± std over {len(results['seeds'])} "
        "replicas",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


def render(results: dict[str, Any]) -> str:
    """Markdown: the paper's Tables 4-5 with our numbers (or "not run") side by side."""
    cells = results.get("cells", {})
    lines = []
    if results.get("not_run"):
        lines += [
            f"**{NAME}: not run** — {results['reason'].split('. ')[0]}; the reasons, and how "
            "to provide the data, are below.",
            "",
        ]
    header = [
        "| dataset | p/q | paper std | paper aug | ours std | ours aug | Δ aug − std [95% CI] "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for table, paper in PAPER.items():
        lines += [f"**{paper['title']}**", "", *header]
        datasets = [d for d in paper if d != "title"]
        datasets += [
            c["dataset"]
            for c in cells.values()
            if c["table"] == table and c["dataset"] not in paper
        ]
        for ds in datasets:
            entry = paper.get(ds)
            cell = cells.get(f"{table}_{ds}", {"status": "not run"})
            ran = cell["status"] == "run"
            rates = cell["rates"] if ran else [float(k) for k in entry["standard"]]
            q = cell["backward_rate"] if ran else entry["backward_rate"]
            for rate in rates:
                k = f"{rate:g}"
                p_std = f"{entry['standard'][k]:.4f}" if entry else "–"
                p_aug = f"{entry['augmented'][k]:.4f}" if entry else "–"
                if ran:
                    comp = cell["comparisons"][k]
                    ours = [
                        fmt(cell["summary"]["standard"][k]),
                        fmt(cell["summary"]["augmented"][k]),
                        fmt_diff(comp["difference"]),
                        comp["verdict"],
                    ]
                else:
                    ours = ["not run"] * 4
                lines.append(f"| {ds} | {k}/{q:g} | {p_std} | {p_aug} | " + " | ".join(ours) + " |")
        lines.append("")
    for cell in cells.values():
        if cell["status"] == "run":
            d = cell["data"]
            lines.append(
                f"- {cell['table']} {cell['dataset']}: {cell['model']} ({d['source']}; "
                f"{d['preprocessing']}); {describe_train(cell['train'])}; augmentation "
                f"{cell['augmentation_applied']}; pooled over rates "
                f"{fmt_diff(cell['pooled']['difference'])} → **{cell['verdict']}**"
            )
        else:
            lines.append(
                f"- {cell['table']} {cell['dataset']}: **not run** — "
                f"{cell['reason'].splitlines()[0]}"
            )
    reasons = dict.fromkeys(c["reason"] for c in cells.values() if c["status"] != "run")
    if reasons:
        lines += ["", "Why cells were not run, and how to provide the data:", "", "```"]
        lines += [*reasons, "```"]
    lines += ["", f"Overall: **{results['verdict']}** ({results['source']})."]
    return "\n".join(lines)


@register(
    NAME,
    "Standard vs augmented dropout, ConvNet-Quick and ResNet-20 (Gao et al. Tables 4-5)",
    render=render,
)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains every cell whose data and hardware are here; the rest are reported not run."""
    preset = PRESETS[ctx.preset]
    if ctx.dataset:
        cells = tuple(c for c in preset.cells if c.dataset == ctx.dataset)
        if not cells:
            raise ValueError(
                f"{NAME} has no {ctx.preset} cell for dataset {ctx.dataset!r}; choose one of "
                f"{sorted({c.dataset for c in preset.cells})}"
            )
    else:
        cells = preset.cells
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    config = {
        "arms": list(ARMS),
        "replicas": replicas,
        "cells": [dataclasses.asdict(c) for c in cells],
    }
    available: dict[str, str | None] = {}
    reasons = {c.key: _missing(c, available) for c in cells}
    runnable = [c for c in cells if reasons[c.key] is None]
    if not runnable:
        reason = f"no cell of the {ctx.preset} preset can run here. " + " | ".join(
            dict.fromkeys(r for r in reasons.values() if r)
        )
        result = not_run_result(reason, CLAIM, SOURCE, PAPER)
        result["config"] = config
        result["cells"] = {
            c.key: {
                "status": "not run",
                "table": c.table,
                "dataset": c.dataset,
                "reason": reasons[c.key],
            }
            for c in cells
        }
        return result
    ckpt_root = ctx.out_dir / "checkpoints" / ctx.preset
    out: dict[str, Any] = {}
    for c in cells:
        if reasons[c.key] is None:
            out[c.key] = _run_cell(c, seeds, ctx, ckpt_root)
        else:
            out[c.key] = {
                "status": "not run",
                "table": c.table,
                "dataset": c.dataset,
                "reason": reasons[c.key],
            }
    verdict = combine([c["verdict"] for c in out.values() if c["status"] == "run"])
    results = {
        "source": SOURCE,
        "claim": CLAIM,
        "config": config,
        "seeds": seeds,
        "paper": PAPER,
        "cells": out,
        "verdict": verdict,
        "not_run_cells": [k for k, c in out.items() if c["status"] != "run"],
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    if jax.process_index() == 0:
        _plot(results, figure)
        cleanup_checkpoints(ckpt_root)
    results["figure"] = figure.name
    return results
