"""The tables and figures of :mod:`experiments.claims.gao_ablation`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.claims.gao_ablation._cells import (
    _decision_rows,
    _ran,
)
from experiments.claims.gao_ablation._protocol import (
    ALL_RATES,
    ARMS,
    DROPOUT_ARMS,
    FIGURE_RATES,
    NAME,
    PAPER,
    TABLE_CELLS,
)
from experiments.harness import stats
from experiments.harness.protocols import describe_train
from experiments.harness.results import (
    save_figure_atomic,
)
from experiments.harness.stats import fmt, fmt_diff


def _plot(results: dict[str, Any], path: Path) -> None:
    """Figures 1-2: train and test loss vs iteration, the four arms, per part and rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for key, part in _ran(results):
        rates = [r for r in part["rates"] if _arms_at(part, f"{r:g}")]  # the rates trained
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
            for arm, run in _arms_at(part, k).items():
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


def _arms_at(part: dict[str, Any], rate: str) -> dict[str, dict]:
    """The runs at ``rate`` of the arms that trained there (plain counts when another arm
    did; a grid stopped by its failed control has trained only the control's arms)."""
    runs = part["runs"]
    found = {a: runs[a][rate] for a in ARMS if a != "plain" and rate in runs.get(a, {})}
    return {"plain": runs["plain"], **found} if found and "plain" in runs else found


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


def _render_decision(part: dict[str, Any]) -> list[str]:
    """The part's control, every stated contrast, the sub-claims, and the rule's history."""
    missing = part.get("missing_cells", [])
    lines = [
        f"Protocol coverage {part['coverage'] * part.get('coverage_cells', 1.0):.0%}: "
        f"{part['coverage']:.0%} of the paper's iterations x "
        f"{part.get('coverage_cells', 1.0):.0%} of Table 1's {TABLE_CELLS} cells "
        f"({part['cells_done']}/{part['cells_total']} cells of this grid done)"
        + (f"; not run: {', '.join(missing)}" if missing else "")
        + ". δ = the paper's difference for the same comparison. P(reproduce | δ): this "
        "design's chance to call the paper's effect reproduced if it is real; P(refute | 0) "
        "and P(refute | δ): its chance to call it refuted when the truth is no effect, and "
        "when the paper's effect is real (a false refutation). Holm: the interval adjusted "
        "for the family of cells of that claim.",
        "",
    ]
    control = part.get("control")
    if control is not None:
        state = part.get("control_passed")
        passed = {True: "**passed**", False: "**failed**"}.get(
            state, "**pending** (fewer pairs than planned)"
        )
        lines += [
            f"Positive control ({control['comparison']}, must be reproduced at the paper's "
            f"δ = {control['delta']:.4f}): {fmt_diff(control['difference'])}, "
            f"{stats.shown(control)}: {passed}."
            + (" Nothing is decided from this part." if state is False else ""),
            "",
        ]
    lines += _decision_rows(part["claims"], holm=True)
    lines.append("")
    for key, claim in part["claims"].items():
        lines.append(
            f"- ({key}) {claim['claim']} [{claim.get('combination', 'every')}]: verdict "
            f"**{claim['verdict']}**, headline **{claim['headline']}**"
        )
    spec = part.get("spec")
    if spec:
        lines += [
            "",
            f"Decision spec `{spec['hash']}` (rule `{spec['rule']}`); at the first cell: "
            f"`{spec['at_start']}`"
            + (
                ""
                if spec.get("at_start_recorded", True)
                else " (reconstructed from the code "
                "the first cells ran at; no hash was recorded then)"
            )
            + ".",
        ]
    if "at_start" in part:
        old = part["at_start"]
        lines += [
            "",
            f"**Rule changed after data.** Under the rule in force when these cells started "
            f"(`{old['rule']}`, sub-claims combined only when all cells agree) the verdicts "
            f"were:",
            "",
        ]
        lines += [f"- ({k}) {c['claim']}: **{c['verdict']}**" for k, c in old["claims"].items()]
        lines += ["", f"Overall under that rule: **{old['verdict']}**."]
    return lines


def _fmt_point(diff: dict | None) -> str:
    return "–" if diff is None else fmt_diff(diff)


def _render_drift(part: dict[str, Any]) -> list[str]:
    """Which arms drift at the end of the run, where it starts, and what it does to the
    contrasts that involve them (from the recorded curves)."""
    info = part.get("drift")
    if not info or not info["arms"]:
        return []
    arms, drop = info["arms"], info["drop"]
    drifting = {k: a for k, a in arms.items() if a["drifts"]}
    calm = {k: a for k, a in arms.items() if not a["drifts"]}
    worst = max(calm.items(), key=lambda kv: kv[1]["loss_rise"], default=None)
    head = (
        f"**End-of-run drift** (mean training loss ending more than {info['threshold']:.0%} "
        f"above its minimum; learning-rate drop at iteration {drop}): "
    )
    if not drifting:
        most = "" if worst is None else f" (the largest rise: `{worst[0]}`, "
        return [head + "no arm drifts" + (most and most + f"{worst[1]['loss_rise']:+.1%})"), ""]
    lines = [
        head + ", ".join(f"`{k}`" for k in drifting) + _calm(worst) + ".",
        "",
        "| arm | largest rise before the drop | train loss: min (iteration) → final "
        "| test acc: first eval after the drop / best (iteration) / final | replicas drifting |",
        "|---|---|---|---|---|",
    ]
    for k, a in drifting.items():
        after = "–" if a["acc_after_drop"] is None else f"{a['acc_after_drop']:.4f}"
        lines.append(
            f"| {k} | {a['rise_before_drop']:+.1%} | {a['loss_min']:.2f} ({a['loss_min_step']}) "
            f"→ {a['loss_final']:.2f} ({a['loss_rise']:+.0%}) | {after} (iteration "
            f"{a['after_drop_step']}) / {a['acc_best']:.4f} ({a['acc_best_step']}) / "
            f"{a['acc_final']:.4f} | {a['replicas_drifting']}/{a['replicas']} |"
        )
    if info["contrasts"]:
        lines += [
            "",
            "| claim | comparison | first eval after the drop | best iterate per seed "
            "(test-selected) | final (decided) | share of the final difference added after "
            "the first eval after the drop |",
            "|---|---|---|---|---|---|",
        ]
        for c in info["contrasts"]:
            cells = [_fmt_point(c[k]) for k in ("after_drop", "best", "final")]
            after, final = c["after_drop"], c["final"]
            share = (
                "–"
                if not (after and final and final["mean"])
                else (f"{1.0 - after['mean'] / final['mean']:.0%}")
            )
            row = f"| ({c['claim']}) | {c['comparison']} | " + " | ".join(cells)
            lines.append(f"{row} | {share} |")
    starts = all(a["loss_min_step"] > drop for a in drifting.values()) if drop else False
    lines += [
        "",
        (
            "The rise starts after the learning-rate drop: before it the training loss only "
            "falls (the largest rise over its running minimum is in the table), its minimum is "
            "at an evaluation after the drop, and it climbs from there to the end. "
            if starts
            else "The rise does not start after the learning-rate drop in every drifting arm. "
        )
        + "Whether the drop causes it cannot be told from these runs: none trains without it. "
        "The contrasts above show how much of each final difference the drift carries; "
        "the verdicts use the final iterate, as the paper does.",
        "",
    ]
    return lines


def _calm(worst) -> str:
    if worst is None:
        return ""
    return (
        f"; every other arm ends within {worst[1]['loss_rise']:+.1%} of its minimum "
        f"(the most: `{worst[0]}`)"
    )


def render(results: dict[str, Any]) -> str:
    """Markdown: per part, paper vs ours per (arm, rate); then the claims and verdicts."""
    if results.get("not_run"):
        return _render_not_run(results)
    lines = []
    if results.get("substitute"):
        lines += [f"**{results['substitute']}**", ""]
    for key, part in results["parts"].items():
        if part.get("status") == "not run":
            title = PAPER[part.get("table", key)]["title"]
            lines += [f"**{title}** ({key}): not run — {part['reason']}", ""]
            continue
        paper = PAPER[part["table"]]
        lines += [f"### Part `{part.get('key', key)}`", ""]
        ds = part["data"]
        seeds = part.get("seeds", results["seeds"])  # older results: the run's seeds
        lines += [
            f"**{paper['title']}** — ours: {part['model']} on **{ds['name']}** ({ds['source']}; "
            f"{ds['preprocessing']}); {describe_train(part['train'])}; "
            f"{len(seeds)} paired replicas (seeds {seeds}); "
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
        lines += ["", *_render_decision(part), "", *_render_drift(part)]
    lines.append(f"Overall: **{results['verdict']}** ({results['source']}).")
    for key, table in PAPER.items():
        ran = dict(_ran(results))
        if key not in ran or len(ran[key]["rates"]) < len(ALL_RATES):
            lines += ["", f"The paper's {table['title']}, all rates:", "", *_paper_rows(table)]
    return "\n".join(lines)
