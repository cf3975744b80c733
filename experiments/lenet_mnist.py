"""Gao et al. (2019), Table 3: LeNet on MNIST, standard vs augmented dropout.

Protocol (Section 6.2): Caffe's LeNet with dropout on the input of the last fully connected
layer, SGD with momentum 0.9, batch 100, weight decay 5e-4, learning rate 0.01 divided by 10
at 6,000 iterations, 12,000 iterations; forward rates 0.1 .. 0.5, backward rate 1e-4; the
mean of four runs. The claim: augmented dropout beats standard dropout at every rate.

Arms, each trained with the same seeds (so replica ``r`` of every arm shares initial
parameters, data order and forward dropout masks, and the arms are *paired*):

* ``standard``: :class:`dropjax.linen.Dropout` at the rate;
* ``augmented``: Gao et al.'s augmented dropout as Algorithm 1 defines it, layer-exact
  (:class:`dropjax.linen.DecoupledDense`, Eq. 9): the backward mask (nested in the forward
  one, extra rate 1e-4) masks both the error and the last layer's weight-gradient input;
* ``augmented_elementwise`` (secondary, labelled): the elementwise form, whose weight
  gradient still sees the forward-masked input.

**Cells.** The run is a grid of cells, one per (seed group of 4, rate, arm), each trained
and written into the results file as soon as it finishes (:mod:`experiments.cells`):
rerunning the command skips finished cells and resumes the unfinished one from its
checkpoint, and ``--time-budget`` stops cleanly. ``--replicas 8`` adds a second seed group
to a finished 4-replica run without retraining the first. The elementwise arm's cells come
last, after every primary cell, so a tight budget spends its time on the headline.

For each rate: per-arm mean ± std of the final test accuracy, and the paired difference
(arm − standard) with its 95% Student-t interval. The headline pools every (rate, seed) pair
and is decided by :func:`experiments.stats.decide` against the paper's effect size
``DELTA`` (the mean of Table 3's augmented − standard differences, +0.0003), with the power
of the design for it and the protocol coverage (fraction of the paper's 12,000 iterations).


Presets: ``smoke`` uses scikit-learn's 8x8 digits (no download), each image upsampled 3x by
pixel repetition to 24x24 and zero-padded by 2 pixels to MNIST's 28x28 layout, 20
iterations, batch 64, one rate, 2 replicas. ``quick`` uses real MNIST with a shortened
schedule (600 iterations, learning-rate step at 300) at rate 0.5 only, 4 replicas (a few
minutes on a 2-core CPU): 5 % of the protocol, so its verdict is only indicative.
``paper`` is the protocol above. Inputs are scaled by 1/256 as in Caffe's LeNet.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments import plots, recipes, stats
from experiments.cells import Cell, finished_cells, merge_seed_groups, run_grid
from experiments.models import DropoutConfig, LeNet
from experiments.registry import RunContext, register, save_figure_atomic
from experiments.train import ArrayData, TrainConfig, step_sgd, train_cell

NAME = "lenet_mnist"
BACKWARD_RATE = 1e-4
ARMS = ("standard", "augmented", "augmented_elementwise")
PRIMARY = ("standard", "augmented")
GROUP = 4  # seeds per cell
PAPER_ITERATIONS = 12000
DELTA = 0.0003  # mean of Table 3's augmented - standard over the five rates
PAPER_TABLE3 = {
    "standard": {0.1: 0.9916, 0.2: 0.9922, 0.3: 0.9918, 0.4: 0.9917, 0.5: 0.9922},
    "augmented": {0.1: 0.9918, 0.2: 0.9923, 0.3: 0.9925, 0.4: 0.9920, 0.5: 0.9925},
}
SOURCE = "Gao, Pei & Huang, Demystifying Dropout, ICML 2019, Table 3"
CONTROL_RATE = 0.5
CONTROLS = {
    # arm: (dropout kind, extra backward rate, dropout salt)
    "standard_fresh": ("standard", 0.0, 1),  # null control: the same arm, fresh masks
    "augmented_b0.01": ("augmented", 0.01, 0),  # positive controls: backward dynamics that
    "augmented_b0.1": ("augmented", 0.1, 0),  # must differ from standard dropout's
}
"""The controls at forward rate 0.5, 4 seeds each, after every other cell: the noise floor
of the pairing (a second standard arm with fresh dropout masks) and two backward rates far
above the paper's 1e-4, where the training dynamics must differ from standard dropout's."""


def _delta(rate: float) -> float:
    """Table 3's own augmented - standard difference at ``rate`` (the per-cell δ)."""
    return round(PAPER_TABLE3["augmented"][rate] - PAPER_TABLE3["standard"][rate], 6)


SPEC = stats.DecisionSpec(
    claims={
        "pooled": ("augmented beats standard, pooled over rates 0.1-0.5 (headline)", "all"),
        "per-rate": ("augmented beats standard at every rate (Table 3's words)", "every"),
        "null": ("null control: standard with fresh masks - standard is below δ", "all"),
    },
    contrasts=(
        stats.Contrast("pooled", "augmented", "standard", "pooled", +1, DELTA, "Table 3 mean"),
        *(
            stats.Contrast("per-rate", "augmented", "standard", f"{r:g}", +1, _delta(r), "Table 3")
            for r in (0.1, 0.2, 0.3, 0.4, 0.5)
        ),
        stats.Contrast("null", "standard_fresh", "standard", "0.5", +1, DELTA, "null control"),
    ),
    pairs=20,
    pooling="all (rate, seed) pairs of rates 0.1-0.5, δ = the mean of Table 3's differences",
    control=stats.Contrast("control", "augmented_b0.1", "standard", "0.5", +1, DELTA, "control"),
    control_needs=("reproduced", "reproduced-smaller", "contradicted"),
    headline=("pooled",),
)
"""Claim 1's decision (fixed 2026-12-07, after its 15 cells: their first decision was under
:data:`SPEC_AT_290B182`, rendered beside it). The positive control passes when the design
separates backward rate 0.1 from standard dropout in either direction."""

SPEC_AT_290B182 = dataclasses.replace(
    SPEC,
    claims={
        "pooled": SPEC.claims["pooled"],
        "per-rate": ("augmented beats standard at each rate", "all"),
    },
    contrasts=(
        SPEC.contrasts[0],
        *(dataclasses.replace(c, delta=DELTA) for c in SPEC.contrasts[1:6]),
    ),
    control=None,
    rule="gap-2026-11",
)
"""The rule the 15 cells were decided under when they ran (code at 290b182, reconstructed:
no hash was recorded then): the gap rule, the pooled δ for every rate, no controls."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: the data, the rates, the replica count and the optimisation protocol."""

    dataset: str
    rates: tuple[float, ...]
    replicas: int
    train: TrainConfig
    arms: tuple[str, ...] = ARMS
    controls: tuple[str, ...] = ()


_protocol = functools.partial(step_sgd, learning_rate=0.01)


PRESETS = {
    "smoke": Preset(
        "digits", (0.5,), 2, _protocol(20, 10, batch_size=64, eval_every=10, eval_batch_size=360)
    ),
    "quick": Preset("mnist", (0.5,), 4, _protocol(600, 300, batch_size=100, eval_every=300)),
    "paper": Preset(
        "mnist",
        (0.5, 0.1, 0.2, 0.3, 0.4),  # 0.5 first: the pilot that measures the paired SD
        4,
        _protocol(12000, 6000, batch_size=100, eval_every=500),
        controls=tuple(CONTROLS),
    ),
}


load_data = recipes.lenet_images


def _dropout(arm: str, rate: float) -> DropoutConfig:
    if arm in CONTROLS:
        kind, backward, _ = CONTROLS[arm]
        return DropoutConfig(kind, rate, backward)
    backward = 0.0 if arm == "standard" else BACKWARD_RATE
    return DropoutConfig(arm, rate, backward)


def cells(preset: Preset, seeds: list[int]) -> list[Cell]:
    """The grid: (seed group, rate, arm), primary arms first, the elementwise arm last."""
    groups = [seeds[i : i + GROUP] for i in range(0, len(seeds), GROUP)]
    out = []
    for arms in (
        tuple(a for a in preset.arms if a in PRIMARY),
        tuple(a for a in preset.arms if a not in PRIMARY),
    ):
        for group in groups:
            for rate in preset.rates:
                for arm in arms:
                    cell_id = f"rate={rate:g}/arm={arm}/seeds={group[0]}-{group[-1]}"
                    out.append(Cell(cell_id, {"rate": rate, "arm": arm, "seeds": group}))
    for group in groups:  # the controls last: the headline's cells come first
        for arm in preset.controls:
            cell_id = f"rate={CONTROL_RATE:g}/arm={arm}/seeds={group[0]}-{group[-1]}"
            out.append(Cell(cell_id, {"rate": CONTROL_RATE, "arm": arm, "seeds": group}))
    return out


def measure(preset: Preset, data: ArrayData, quiet: bool):
    """``measure(cell, checkpoint_dir, budget)``: trains one cell's replicas."""

    def run_cell(cell: Cell, checkpoint_dir: Path, budget) -> dict[str, Any]:
        p = cell.params
        model = LeNet(num_classes=10, dropout=_dropout(p["arm"], p["rate"]))
        label = f"{p['arm']} {p['rate']:g}"
        salt = CONTROLS[p["arm"]][2] if p["arm"] in CONTROLS else 0
        result = train_cell(
            model,
            data,
            preset.train,
            cell,
            checkpoint_dir,
            budget,
            quiet=quiet,
            label=label,
            dropout_salt=salt,
        )
        return {**result.to_json(), "data": data.describe()}

    return run_cell


def summarise(done: dict[str, dict[str, Any]], preset: Preset) -> dict[str, Any]:
    """Per arm and rate: the seeds present, mean ± std; only seeds every arm has are paired."""
    by = collections.defaultdict(list)
    for record in done.values():
        p = record["params"]
        by[(p["arm"], f"{p['rate']:g}")].append({**record["result"], "seeds": p["seeds"]})
    arms = {arm: {} for arm in (*preset.arms, *preset.controls)}
    summary = {arm: {} for arm in (*preset.arms, *preset.controls)}
    for (arm, rate), records in by.items():
        if arm in arms:
            arms[arm][rate] = merge_seed_groups(records)
            summary[arm][rate] = stats.mean_std(arms[arm][rate]["final"]["test_acc"])
    return {"arms": arms, "summary": summary}


def _paired(arms, arm: str, rate: str) -> tuple[list[float], list[float]]:
    """Final test accuracies of standard and ``arm`` at ``rate`` on their common seeds."""
    base, other = arms["standard"].get(rate), arms[arm].get(rate)
    if base is None or other is None:
        return [], []
    b = dict(zip(base["seeds"], base["final"]["test_acc"], strict=True))
    o = dict(zip(other["seeds"], other["final"]["test_acc"], strict=True))
    common = sorted(set(b) & set(o))
    return [b[s] for s in common], [o[s] for s in common]


def _spec_paired(arms: dict[str, Any], rates: tuple[float, ...]):
    """``paired(arm, cell)`` for :func:`stats.decide_contrasts`; cell ``"pooled"`` joins the
    rates, each (rate, seed) pair keyed ``(rate, seed)``."""

    def get(arm: str, cell: str) -> tuple[list[float], list]:
        keys = [f"{r:g}" for r in rates] if cell == "pooled" else [cell]
        values, seeds = [], []
        for k in keys:
            entry = arms.get(arm, {}).get(k)
            if entry is None or arms.get("standard", {}).get(k) is None:
                continue  # pooled: only rates both sides have
            for seed, v in zip(entry["seeds"], entry["final"]["test_acc"], strict=True):
                values.append(v)
                seeds.append(f"{k}/{seed}")
        return values, seeds

    return get


def decide(
    summary: dict[str, Any],
    preset: Preset,
    data_name: str,
    specs_at_start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-rate and pooled paired differences, decided by :data:`SPEC` (per-rate δ from
    Table 3, pooled δ = their mean); the controls; the verdict under the spec in force when
    the cells ran, when it differs."""
    coverage = min(1.0, preset.train.iterations / PAPER_ITERATIONS)
    substitute = data_name != "mnist"
    comparisons, pooled = {}, {}
    for arm in preset.arms[1:]:
        comparisons[arm] = {}
        base_all, arm_all = [], []
        for rate in preset.rates:
            key = f"{rate:g}"
            base, other = _paired(summary["arms"], arm, key)
            if len(base) < 2:
                continue
            diff = stats.paired_difference(base, other)
            delta = _delta(rate) if rate in PAPER_TABLE3["standard"] else DELTA
            comparisons[arm][key] = {
                "difference": diff,
                **stats.decide(diff, +1, delta, coverage=coverage, substitute=substitute),
            }
            base_all += base
            arm_all += other
        if len(base_all) >= 2:
            diff = stats.paired_difference(base_all, arm_all)
            pooled[arm] = {
                "difference": diff,
                **stats.decide(diff, +1, DELTA, coverage=coverage, substitute=substitute),
            }
    paired = _spec_paired(summary["arms"], preset.rates)
    spec = stats.decide_contrasts(
        SPEC, paired, coverage=coverage, substitute=substitute, control_pairs=GROUP
    )
    # The spec recorded when the grid's first cell trained; a file from before specs were
    # recorded ran under SPEC_AT_290B182 (reconstructed).
    recorded = (specs_at_start or {}).get(NAME)
    start = stats.DecisionSpec.from_json(recorded["spec"]) if recorded else SPEC_AT_290B182
    changed = stats.spec_hash(start) != stats.spec_hash(SPEC)
    before = stats.decide_contrasts(start, paired, coverage=coverage, substitute=substitute)
    controls = {
        "null": spec["claims"]["null"]["cells"][0] if spec["claims"]["null"]["cells"] else None,
        "positive": [  # only each arm's control is decided (no claims, no contrasts)
            stats.decide_contrasts(
                dataclasses.replace(
                    SPEC,
                    claims={},
                    contrasts=(),
                    control=dataclasses.replace(SPEC.control, other=arm),
                ),
                paired,
                coverage=coverage,
                substitute=substitute,
            )["control"]
            for arm in ("augmented_b0.01", "augmented_b0.1")
        ],
        "passed": spec["control_passed"],
    }
    head = pooled.get("augmented")
    verdict = head["headline"] if head else "not run"
    old = before["claims"]["pooled"]
    if head and changed:  # the spec changed after these cells ran: both verdicts, always
        same = old["headline"] == head["headline"]
        verdict += " (rule changed after data; " + (
            "the same under the rule at the start)"
            if same
            else f"under the rule at the start: {old['headline']})"
        )
    return {
        "comparisons": comparisons,
        "pooled": pooled,
        "coverage": coverage,
        "controls": controls,
        "spec": {
            "hash": stats.spec_hash(SPEC),
            "at_start": stats.spec_hash(start),
            "at_start_recorded": recorded is not None,
            "rule": SPEC.rule,
        },
        "at_start": {"rule": start.rule, "claims": before["claims"]},
        "verdict": verdict,
        "evidence": stats.evidence(head, coverage=coverage, substitute=substitute, delta=DELTA),
    }


def _plot(results: dict[str, Any], path: Path) -> None:
    """Per rate: test accuracy (top) and, in the style of Gao et al.'s Fig. 3 (which shows
    ConvNet-Quick, not LeNet), training and test loss of
    standard vs augmented dropout (bottom); mean ± std over replicas; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted(r for r in results["config"]["rates"] if f"{r:g}" in results["arms"]["standard"])
    if not rates:
        return
    width = max(5.0, 4.0 * len(rates))
    fig, axes = plt.subplots(2, len(rates), figsize=(width, 6.4), squeeze=False)
    colors = {arm: f"C{i}" for i, arm in enumerate(results["config"]["arms"])}
    markers = {"standard": "o", "augmented": "x"}
    for col, rate in enumerate(rates):
        for arm in results["config"]["arms"]:
            entry = results["arms"][arm].get(f"{rate:g}")
            if entry is None:
                continue
            curves = entry["curves"]
            steps = [c["step"] for c in curves]
            for row, metric, style in (
                (0, "test_acc", "-"),
                (1, "train_loss", "--"),
                (1, "test_loss", "-"),
            ):
                if row == 1 and arm not in ("standard", "augmented"):
                    continue
                values = np.array([c[metric] for c in curves])
                mean, std = values.mean(1), values.std(1)
                label = arm if metric != "train_loss" else f"{arm} (train)"
                ax, color = axes[row][col], colors[arm]
                ax.plot(
                    steps,
                    mean,
                    style,
                    label=label,
                    color=color,
                    markersize=3,
                    marker=markers.get(arm, "."),
                )
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.15)
        axes[0][col].set_title(f"forward rate {rate:g}: test accuracy")
        axes[1][col].set_title(
            f"LeNet, rate {rate:g}: training / test loss\n(in the style of Gao et al. Fig. 3, "
            "which is ConvNet-Quick)",
            fontsize="small",
        )
        axes[1][col].set_yscale("log")
        for ax in axes[:, col]:
            ax.set_xlabel("iteration (thousands)")
            ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    axes[1][0].legend(fontsize="small")
    fig.suptitle(f"LeNet on {results['data']['name']}: mean ± std over replicas", fontsize="medium")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def _fmt(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "–"
    return f"{summary['mean']:.4f} ± {summary['std']:.4f} (n={summary['n']})"


def _fmt_diff(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    diff = entry["difference"]
    if not np.isfinite(diff["ci_low"]):
        return f"{diff['mean']:+.4f} [n/a]"
    return f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"


def render(results: dict[str, Any]) -> str:
    """The markdown table: the paper's Table 3 next to our means and paired differences."""
    cfg = results["config"]
    arms = cfg["arms"]
    extra = [a for a in arms if a not in ("standard", "augmented")]
    header = (
        "| rate | paper std | paper aug | ours std | ours aug | Δ aug − std [95% CI] | verdict "
    )
    header += "".join(f"| ours {a} | Δ {a} − std | verdict " for a in extra) + "|"
    rows = [header, "|---" * (7 + 3 * len(extra)) + "|"]
    s, comp = results["summary"], results["comparisons"]
    for rate in sorted(cfg["rates"]):
        key = f"{rate:g}"
        paper = [PAPER_TABLE3[arm].get(rate) for arm in ("standard", "augmented")]
        paper_txt = [f"{p:.4f}" if p is not None else "–" for p in paper]
        aug = comp.get("augmented", {}).get(key)
        row = (
            f"| {key} | {paper_txt[0]} | {paper_txt[1]} | {_fmt(s['standard'].get(key))} "
            f"| {_fmt(s['augmented'].get(key))} | {_fmt_diff(aug)} "
            f"| {aug['verdict'] if aug else '–'} "
        )
        for a in extra:
            e = comp.get(a, {}).get(key)
            row += f"| {_fmt(s[a].get(key))} | {_fmt_diff(e)} | {e['verdict'] if e else '–'} "
        rows.append(row + "|")
    t = cfg["train"]
    lines = [
        f"**LeNet on {results['data']['name']}** ({results['data']['source']}): "
        f"{t['iterations']} iterations, batch {t['batch_size']}, lr {t['learning_rate']:g} "
        f"÷10 at {', '.join(map(str, t['lr_boundaries']))}, momentum {t['momentum']:g}, "
        f"weight decay {t['weight_decay']:g}; backward rate {cfg['backward_rate']:g}; "
        f"protocol coverage {results['coverage']:.0%} of the paper's {PAPER_ITERATIONS} "
        f"iterations; {results['cells_done']}/{results['cells_total']} cells. Test accuracy "
        "mean ± std over replicas; Δ = paired difference with its 95% t-interval.",
        "",
        *rows,
        "",
    ]
    for arm, entry in results["pooled"].items():
        lines.append(
            f"Pooled over rates, {arm} − standard: {_fmt_diff(entry)} (n={entry['difference']['n']}"
            f" pairs, paired SD {entry['difference']['std']:.5f}) → verdict **{entry['verdict']}**"
            f", headline **{entry['headline']}**; power for the paper's δ = {DELTA:+.4f}: "
            f"{entry['power']:.2f}; pairs for 80 % power: {entry['pairs_for_80pct']}."
        )
    lines += _render_controls(results)
    lines.append(f"\nOverall: **{results['verdict']}** ({results['source']}).")
    return "\n".join(lines)


def _render_controls(results: dict[str, Any]) -> list[str]:
    """The controls beside the headline, and the verdicts under the rule at the start."""
    controls = results.get("controls")
    if controls is None:
        return []
    lines = ["", "Per-rate δ: Table 3's own difference at that rate; pooled δ: their mean."]
    null, positive = controls["null"], [c for c in controls["positive"] if c]
    if null is None and not positive:
        lines.append(
            "\nControls (null: a second standard arm with fresh masks; positive: backward "
            "rates 0.01 and 0.1 at forward rate 0.5): **not run yet**; "
            f"`python -m experiments {NAME} --preset paper --out experiments/results` "
            "trains them (3 cells of 4 seeds)."
        )
    if null is not None:
        lines.append(
            f"\nNull control, {null['comparison']}: {_fmt_diff(null)} (paired SD "
            f"{null['difference']['std']:.5f}, n={null['difference']['n']}): the noise floor of "
            f"the pairing; verdict against δ = {DELTA}: **{null['verdict']}**."
        )
    for c in positive:
        lines.append(
            f"\nPositive control, {c['comparison']}: {_fmt_diff(c)}, verdict **{c['verdict']}**."
        )
    if controls.get("passed") is not None:
        word = "passed" if controls["passed"] else "failed"
        lines.append(
            f"\nPositive control (backward 0.1 separated from standard, either direction): "
            f"**{word}**."
        )
    spec, old = results.get("spec"), results.get("at_start")
    if spec and old and spec["hash"] != spec["at_start"]:
        lines.append(
            f"\nDecision spec `{spec['hash']}` (rule `{spec['rule']}`); the cells ran under "
            f"`{spec['at_start']}` (rule `{old['rule']}`, pooled δ at every rate; "
            "reconstructed from the code they ran at, no hash was recorded then). **Rule "
            "changed after data**; under that rule: "
            + "; ".join(f"{k}: **{c['verdict']}**" for k, c in old["claims"].items())
            + "."
        )
    return lines


@register(
    NAME,
    "LeNet on MNIST: standard vs augmented dropout (Gao et al. Table 3)",
)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains every cell (seed group × rate × arm) with paired seeds; decides the claim."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    seeds = ctx.seeds(preset.replicas)
    config = {
        "train": dataclasses.asdict(preset.train),
        "data": [data.name, data.fingerprint()],
        "backward_rate": BACKWARD_RATE,
        "model": "LeNet",
    }
    grid_cells = cells(preset, seeds)

    def summarise_and_draw(records) -> dict[str, Any]:
        specs = ctx.grids[-1].specs_at_start if ctx.grids else {}
        results = _results(preset, data.describe(), records, seeds, len(grid_cells), specs)
        results["figure"] = plots.publish(_plot, results, ctx.out_dir, ctx.preset, "accuracy_loss")
        return results

    # A stopped run still draws the figure of its finished cells: the loss panels need only the
    # primary arms, which come first in the grid.
    run_cell = measure(preset, data, ctx.quiet)
    return summarise_and_draw(
        run_grid(ctx, config, grid_cells, run_cell, on_stop=summarise_and_draw, specs=_specs(ctx))
    )


def _specs(ctx: RunContext) -> dict[str, Any] | None:
    """The spec to record before the first cell, for a new grid only: a results file whose
    cells ran before specs were recorded keeps no record (they ran under
    :data:`SPEC_AT_290B182`)."""
    path = ctx.results_file
    if path.exists() and json.loads(path.read_text()).get("grid", {}).get("cells"):
        return None
    return {NAME: SPEC.to_json()}


def _results(
    preset, data: dict, records, seeds, total: int, specs_at_start: dict | None = None
) -> dict[str, Any]:
    summary = summarise(records, preset)
    results = {
        "source": SOURCE,
        "claim": "augmented dropout (forward rate p, backward rate 1e-4) has higher test "
        "accuracy than standard dropout at rate p, for p = 0.1 .. 0.5",
        "config": {
            "model": "LeNet (Caffe MNIST), dropout on the input of the last dense layer",
            "rates": list(preset.rates),
            "backward_rate": BACKWARD_RATE,
            "arms": list(preset.arms),
            "replicas": len(seeds),
            "train": dataclasses.asdict(preset.train),
        },
        "data": data,
        "seeds": seeds,
        "cells_done": len(records),
        "cells_total": total,
        "paper": {arm: {f"{r:g}": v for r, v in t.items()} for arm, t in PAPER_TABLE3.items()},
        **summary,
        **decide(summary, preset, data["name"], specs_at_start),
    }
    return results


def partial(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The results of an unfinished run, from the cells in its results file (the report)."""
    if (finished := finished_cells(payload, PRESETS)) is None:
        return None
    preset, records, seeds = finished
    total = payload.get("cells_total", len(records))
    first = next(iter(records.values()))
    data = first["result"].get("data") or {"name": preset.dataset, "source": "see cells"}
    specs = payload["grid"].get("specs_at_start", {})
    results = _results(preset, data, records, seeds, total, specs)
    # The headline rests on the paired primary arms only: once all their planned cells are
    # in, the verdict is final, whatever the secondary (elementwise) arm's cells.
    planned = cells(preset, [seeds[0] + r for r in range(preset.replicas)])
    results["interim"] = any(c.id not in records for c in planned if c.params["arm"] in PRIMARY)
    # The figure a stopped run drew from its finished cells, if it sits next to the file.
    figure = plots.figure_name(payload["preset"], "accuracy_loss")
    if "_path" in payload and (Path(payload["_path"]).parent / figure).exists():
        results["figure"] = figure
    return results
