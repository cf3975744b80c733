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
  640k iterations, weight decay 1e-3, pad-4 random crop + horizontal flip augmentation,
  applied per example on device by the harness (:class:`experiments.augment.PadCropFlip`,
  drawn from the replica's data key and the step, so resumed runs augment identically).

The claims tested, each with paired 95% Student-t intervals over replicas that share seeds
(replica ``r`` of every arm has the same initial parameters, data order and dropout keys):

(a) standard dropout beats forward-only and backward-only dropout at the large rates
    (0.3 and 0.2): both differences ``standard - forward`` and ``standard - backward`` > 0;
(b) forward-only dropout degrades badly at large rates compared with the plain network:
    ``forward - plain`` < 0 at 0.3 and 0.2;
(c) backward-only dropout beats the plain network at a small rate (0.005):
    ``backward - plain`` > 0.

Each (rate, comparison) cell is decided by :func:`experiments.stats.decide` against the
paper's difference for it (δ, Tables 1-2), and a claim's cells are combined by
:func:`experiments.stats.combine_decisions` with ``every=True``: each claim asserts all of its
cells (both comparisons of (a), every large rate), so one refuted cell refutes the claim;
below the paper's 9,000 iterations, or on the
substitute dataset, the headline says so. Claims about rates a preset does not train are
*not tested*.

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
* ``paper``: Table 1's protocol exactly (all six rates, 4 replicas in cells of 2 seeds, full
  test set) and Table 2's ResNet-20 protocol (with the pad-4/crop/flip augmentation; on a
  CPU-only machine this part is reported as not run). Without CIFAR-10 it trains Table 1 on
  the Fashion-MNIST substitute at the sub-claims' rates 0.3 and 0.005, then 0.05, labelled
  SUBSTITUTE.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments import data as data_lib
from experiments import plots, recipes, stats
from experiments.augment import PadCropFlip
from experiments.cells import Cell, finished_cells, grid_for, merge_seed_groups
from experiments.models import DropoutConfig, build_model
from experiments.protocols import RESNET_PAPER, describe_train, quick_protocol
from experiments.registry import (
    RunContext,
    not_run_result,
    register,
    save_figure_atomic,
)
from experiments.stats import fmt, fmt_diff
from experiments.train import ArrayData, TrainConfig, train_cell

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
      augmentation: the paper's augmentation for this table ("" for none); a non-empty value
        trains with :class:`experiments.augment.PadCropFlip` (pad 4, crop, flip).
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
    """A preset: the dataset (and its substitute when missing), replicas, the parts.

    ``substitute_rates``: the rates trained on the substitute dataset (the three the
    sub-claims name, 0.05 last) instead of the part's rates; None keeps the part's.
    """

    dataset: str
    substitute: str | None
    replicas: int
    parts: tuple[Part, ...]
    substitute_rates: tuple[float, ...] | None = (0.3, 0.005, 0.05)


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
        "fashion_mnist",
        4,
        (
            Part("table1", "convnet_quick", ALL_RATES, quick_protocol(9000, 4000, eval_every=500)),
            Part(
                "table2",
                "resnet20",
                ALL_RATES,
                RESNET_PAPER,
                augmentation=PAD_CROP_FLIP,
                needs_accelerator=True,
            ),
        ),
    ),
}


# ------------------------------------------------------------------------------- data
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


def _dropout(arm: str, rate: float) -> DropoutConfig:
    return DropoutConfig("none") if arm == "plain" else DropoutConfig(arm, rate)


# ------------------------------------------------------------------------------- statistics
def _delta(table: str, base: str, other: str, rate: str) -> float:
    """The paper's size of ``other - base`` at ``rate`` (Tables 1-2), as a positive δ."""
    paper = PAPER[table]
    value = lambda arm: paper["plain"] if arm == "plain" else paper[arm][rate]
    return max(abs(value(other) - value(base)), 1e-4)


def _paired(finals: dict[str, Any], arm: str, rate: str | None) -> dict[int, float]:
    entry = finals["plain"] if arm == "plain" else finals[arm].get(rate)
    return dict(entry) if entry else {}


def evaluate_claims(
    finals: dict[str, Any],
    rates: tuple[float, ...],
    *,
    table: str = "table1",
    coverage: float = 1.0,
    substitute: bool = False,
) -> dict[str, Any]:
    """The per-claim cells, each decided against the paper's effect (:func:`stats.decide`).

    ``finals["plain"]`` maps seed -> final test accuracy; ``finals[arm][rate_key]`` likewise.
    Only seeds both sides of a comparison have are paired; a comparison with fewer than two
    pairs is left out (not tested yet).
    """
    large = [r for r in rates if r in LARGE_RATES]
    specs: dict[str, list[tuple[str, str, str, int]]] = {"a": [], "b": [], "c": []}
    for r in large:
        k = f"{r:g}"
        for arm in ("forward", "backward"):
            specs["a"].append((arm, "standard", k, +1))
        specs["b"].append(("plain", "forward", k, -1))
    if SMALL_RATE in rates:
        specs["c"].append(("plain", "backward", f"{SMALL_RATE:g}", +1))
    out = {}
    for key, items in specs.items():
        cells = []
        for base, other, k, sign in items:
            b, o = _paired(finals, base, k), _paired(finals, other, k)
            common = sorted(set(b) & set(o))
            if len(common) < 2:
                continue
            diff = stats.paired_difference([b[x] for x in common], [o[x] for x in common])
            delta = _delta(table, base, other, k)
            decision = stats.decide(diff, sign, delta, coverage=coverage, substitute=substitute)
            cells.append({"comparison": f"{other} - {base} @ {k}", "difference": diff, **decision})
        combined = stats.combine_decisions(cells, every=True)  # each claim asserts all its cells
        out[key] = {"claim": CLAIMS[key], "cells": cells, **combined}
    return out


def overall(claims: dict[str, Any]) -> str:
    """One headline over the tested claims (as :func:`stats.combine_decisions`)."""
    tested = [c for c in claims.values() if c["verdict"] != "not tested"]
    if not tested:
        return "not tested"
    cells = [
        {"verdict": c["verdict"], "coverage": c["coverage"], "substitute": c["substitute"]}
        for claim in tested
        for c in claim["cells"]
    ]
    verdicts = [c["verdict"] for c in tested]
    if len(set(verdicts)) > 1:  # sub-claims disagree: say so rather than average them
        heads = ", ".join(f"({k}) {c['headline']}" for k, c in claims.items())
        return f"mixed: {heads}"
    return stats.combine_decisions(cells)["headline"]


# ------------------------------------------------------------------------------- figures
def _ran(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, p) for k, p in results["parts"].items() if p.get("status") != "not run"]


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
    save_figure_atomic(fig, path, dpi=100)


# ------------------------------------------------------------------------------- rendering
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
        plain = fmt(part["summary"]["plain"]) if part["summary"]["plain"] else "–"
        for rate in sorted(part["rates"], reverse=True):  # as the paper's columns
            k = f"{rate:g}"
            cells = [f"{paper['plain']:.4f}", plain]
            for arm in DROPOUT_ARMS:
                ours = part["summary"][arm].get(k)
                cells += [f"{paper[arm][k]:.4f}", fmt(ours) if ours else "–"]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Protocol coverage {part['coverage']:.0%} ({part['cells_done']}/"
            f"{part['cells_total']} cells). δ = the paper's difference for the same "
            "comparison; power = this design's chance to call δ reproduced.",
            "",
            "| claim | paired difference [95% CI] | n | δ (paper) | power | cell verdict |",
            "|---|---|---|---|---|---|",
        ]
        for key, claim in part["claims"].items():
            for cell in claim["cells"]:
                lines.append(
                    f"| ({key}) {cell['comparison']} | {fmt_diff(cell['difference'])} "
                    f"| {cell['difference']['n']} | {cell['delta']:.4f} | {cell['power']:.2f} "
                    f"| {stats.shown(cell)} |"
                )
        lines.append("")
        for key, claim in part["claims"].items():
            lines.append(
                f"- ({key}) {claim['claim']}: verdict **{claim['verdict']}**, headline "
                f"**{claim['headline']}**"
            )
        lines.append("")
    lines.append(f"Overall: **{results['verdict']}** ({results['source']}).")
    for key, table in PAPER.items():
        ran = dict(_ran(results))
        if key not in ran or len(ran[key]["rates"]) < len(ALL_RATES):
            lines += ["", f"The paper's {table['title']}, all rates:", "", *_paper_rows(table)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- run
CLAIM_TEXT = (
    "(a) standard dropout beats forward-only and backward-only dropout at large rates "
    "(0.3, 0.2); (b) forward-only dropout degrades badly at large rates vs the plain "
    "network; (c) backward-only dropout beats the plain network at rate 0.005"
)


PAPER_ITERATIONS = {"table1": 9000, "table2": 640_000}
GROUP = 2  # seeds per cell


def plan(preset: Preset, name: str, substitute: bool) -> list[Part]:
    """The parts to train: on a substitute dataset, the sub-claims' rates."""
    parts = []
    for part in preset.parts:
        if substitute and preset.substitute_rates is not None:
            part = dataclasses.replace(part, rates=preset.substitute_rates)
        parts.append(part)
    return parts


def cells(part: Part, seeds: list[int]) -> list[Cell]:
    """(seed group, arm, rate), in the order they run: for every seed group, plain and the
    first two rates' three dropout arms (the rates the sub-claims name), then the other
    rates. Cells of two seeds finish in well under an hour on one CPU core."""
    groups = [seeds[i : i + GROUP] for i in range(0, len(seeds), GROUP)]
    first = [("plain", None)] + [(a, r) for r in part.rates[:2] for a in DROPOUT_ARMS]
    later = [(a, r) for r in part.rates[2:] for a in DROPOUT_ARMS]
    out = []
    for stage in (first, later):
        for group in groups:
            tag = f"seeds={group[0]}-{group[-1]}"
            for arm, rate in stage:
                name = "plain" if rate is None else f"{arm}@{rate:g}"
                out.append(
                    Cell(f"{part.table}/{name}/{tag}", {"arm": arm, "rate": rate, "seeds": group})
                )
    return out


def measure(part: Part, data: ArrayData, quiet: bool):
    """``measure(cell, checkpoint_dir, budget)``: trains one cell's replicas."""

    def run_cell(cell: Cell, checkpoint_dir: Path, budget) -> dict[str, Any]:
        p = cell.params
        arm = "plain" if p["rate"] is None else f"{p['arm']} {p['rate']:g}"
        model = build_model(part.model, _dropout(p["arm"], p["rate"] or 0.0))
        augment = PadCropFlip() if part.augmentation else None
        label = f"{part.model} {arm}"
        args = (model, data, part.train, cell, checkpoint_dir, budget)
        result = train_cell(*args, quiet=quiet, label=label, augment=augment)
        return result.to_json() | {"data": data.describe()}

    return run_cell


def summarise(part: Part, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Runs, per-arm mean ± std and per-seed finals of one part, from its finished cells."""
    groups: dict[tuple[str, str | None], list] = {}
    for record in records.values():
        p = record["params"]
        rate = None if p["rate"] is None else f"{p['rate']:g}"
        groups.setdefault((p["arm"], rate), []).append({**record["result"], "seeds": p["seeds"]})
    runs: dict[str, Any] = {arm: {} for arm in DROPOUT_ARMS}
    for (arm, rate), recs in groups.items():
        if arm == "plain":
            runs["plain"] = merge_seed_groups(recs)
        else:
            runs[arm][rate] = merge_seed_groups(recs)
    finals: dict[str, Any] = {arm: {} for arm in DROPOUT_ARMS}
    summary: dict[str, Any] = {arm: {} for arm in DROPOUT_ARMS}
    by_seed = lambda run: dict(zip(run["seeds"], run["final"]["test_acc"], strict=True))
    finals["plain"] = by_seed(runs["plain"]) if "plain" in runs else {}
    summary["plain"] = stats.mean_std(list(finals["plain"].values())) if finals["plain"] else None
    for arm in DROPOUT_ARMS:
        for k, run in runs[arm].items():
            finals[arm][k] = by_seed(run)
            summary[arm][k] = stats.mean_std(run["final"]["test_acc"])
    return {"runs": runs, "finals": finals, "summary": summary}


def _part_results(part: Part, data: dict, records, substitute: bool, total: int) -> dict:
    coverage = min(1.0, part.train.iterations / PAPER_ITERATIONS[part.table])
    measured = summarise(part, records)
    claims = evaluate_claims(
        measured["finals"], part.rates, table=part.table, coverage=coverage, substitute=substitute
    )
    return {
        "table": part.table,
        "model": part.model,
        "data": data,
        "rates": list(part.rates),
        "train": dataclasses.asdict(part.train),
        "coverage": coverage,
        "cells_done": len(records),
        "cells_total": total,
        "augmentation_paper": part.augmentation or "none",
        "augmentation_applied": part.augmentation or "none",
        "summary": measured["summary"],
        "claims": claims,
        "runs": measured["runs"],
    }


def _results(parts: dict[str, Any], seeds, substitute_note, name, preset_parts) -> dict:
    main = parts[preset_parts[0].table]  # Table 1 (never needs an accelerator)
    ran = {k: p for k, p in parts.items() if p.get("status") != "not run"}
    power = [c["power"] for claim in main["claims"].values() for c in claim["cells"]]
    finite = [p for p in power if p == p]
    return {
        "source": SOURCE,
        "claim": CLAIM_TEXT + (f". {substitute_note}" if substitute_note else f", on {name}"),
        "substitute": substitute_note,
        "config": {
            "arms": list(ARMS),
            "replicas": len(seeds),
            "parts": [dataclasses.asdict(p) for p in preset_parts],
            "dropout_placement": "ConvNet-Quick: inputs of both fully connected layers "
            "(layer-exact forward/backward forms); ResNet: between the two convolutions of "
            "every block",
        },
        "data": main["data"],
        "seeds": seeds,
        "paper": PAPER,
        "parts": parts,
        "summary": {k: p["summary"] for k, p in ran.items()},
        "comparisons": {k: p["claims"] for k, p in ran.items()},
        "claims": {k: c["headline"] for k, c in main["claims"].items()},
        "verdict": overall(main["claims"]),
        "evidence": {
            "coverage": main["coverage"],
            "data": "SUBSTITUTE" if substitute_note else "real",
            "power": min(finite) if finite else None,  # the weakest cell's
            "delta": None,
            "pairs": min(
                (c["difference"]["n"] for cl in main["claims"].values() for c in cl["cells"]),
                default=0,
            ),
        },
    }


@register(
    NAME,
    "Plain vs standard vs forward-only vs backward-only dropout (Gao et al. Tables 1-2)",
)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains plain and every (arm, rate) cell with the same seeds; decides the claims."""
    preset = PRESETS[ctx.preset]
    name, substitute, missing = resolve_dataset(ctx.dataset, preset)
    if name is None:
        reason = (
            f"the {ctx.preset} preset needs {preset.dataset}, which is not available here. "
            f"{missing}"
        )
        return not_run_result(reason, CLAIM_TEXT, SOURCE, PAPER)
    seeds = ctx.seeds(preset.replicas)
    parts: dict[str, Any] = {}
    preset_parts = plan(preset, name, substitute is not None)
    runnable = []
    for part in preset_parts:
        if part.needs_accelerator and jax.default_backend() == "cpu":
            parts[part.table] = {
                "status": "not run",
                "table": part.table,
                "model": part.model,
                "reason": f"{part.model} for {part.train.iterations} iterations x "
                f"{len(seeds)} replicas x {1 + 3 * len(part.rates)} arms needs an "
                "accelerator; this machine has only a CPU backend. Run the preset on a "
                "GPU/TPU host.",
            }
        else:
            runnable.append(part)
    datasets = {p.table: recipes.convnet_images(name, p.model, p.test_subset) for p in runnable}
    config = {
        "parts": [dataclasses.asdict(p) for p in runnable],
        "data": {t: [d.name, d.fingerprint()] for t, d in datasets.items()},
    }
    grid = grid_for(ctx, config)
    all_cells = {p.table: cells(p, seeds) for p in runnable}
    for part in runnable:  # one grid, parts in order
        grid.run(all_cells[part.table], measure(part, datasets[part.table], ctx.quiet))
    for part in runnable:
        records = {c.id: grid.done[c.id] for c in all_cells[part.table]}
        parts[part.table] = _part_results(
            part,
            datasets[part.table].describe(),
            records,
            substitute is not None,
            len(all_cells[part.table]),
        )
    results = _results(parts, seeds, substitute, name, preset_parts)
    results["figure"] = plots.publish(_plot, results, ctx.out_dir, ctx.preset, "ablation")
    return results


def partial(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Results from the finished cells of an unfinished run (the report's view)."""
    if (finished := finished_cells(payload, PRESETS)) is None:
        return None
    preset, done, seeds = finished
    first = next(iter(done.values()))["result"]
    data = first.get("data", {"name": preset.dataset, "source": "?", "preprocessing": "?"})
    substitute = data["name"] != preset.dataset
    preset_parts = plan(preset, preset.substitute or preset.dataset, substitute)
    parts = {}
    for part in preset_parts:
        records = {i: r for i, r in done.items() if i.startswith(f"{part.table}/")}
        if not records:
            parts[part.table] = {
                "status": "not run",
                "table": part.table,
                "model": part.model,
                "reason": "no finished cell yet",
            }
            continue
        total = len(cells(part, seeds))
        parts[part.table] = _part_results(part, data, records, substitute, total)
    note = (
        f"SUBSTITUTE DATASET: {preset.substitute} stands in for {preset.dataset}"
        if substitute
        else None
    )
    if parts[preset_parts[0].table].get("status") == "not run":
        return None
    return _results(parts, seeds, note, preset.dataset, preset_parts)
