"""The tables and figures of :mod:`experiments.claims.gao_tables45`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.claims.gao_tables45._protocol import (
    ARMS,
    ITERATIONS_NOTE,
    NAME,
    PAPER,
    PAPER_ITERATIONS,
    RATES,
)
from experiments.harness import stats
from experiments.harness.protocols import describe_train
from experiments.harness.results import save_figure_atomic
from experiments.harness.stats import fmt, fmt_diff


# ------------------------------------------------------------------------------- render
def _plot(results: dict[str, Any], path: Path) -> None:
    """Per run part: final test accuracy vs rate (top) and, at the part's first rate, the
    training and test loss of standard vs augmented dropout (bottom, Gao et al. Fig. 3's
    panels); mean over replicas; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in results["cells"].values() if p["status"] == "run"]
    if not parts:
        return
    fig, axes = plt.subplots(
        2, len(parts), figsize=(max(5.0, 4.2 * len(parts)), 6.8), squeeze=False
    )
    for col, part in enumerate(parts):
        keys = [k for k in (f"{r:g}" for r in part["rates"]) if k in part["summary"]["standard"]]
        rates = [float(k) for k in keys]
        paper = PAPER[part["table"]].get(part["dataset"])
        ax = axes[0][col]
        for i, arm in enumerate(ARMS):
            s = [part["summary"][arm].get(k) for k in keys]
            if any(x is None for x in s):
                continue
            ax.errorbar(
                rates,
                [x["mean"] for x in s],
                [x["std"] for x in s],
                marker="o",
                capsize=3,
                label=f"ours {arm}",
                color=f"C{i}",
            )
            if paper is not None and not part["substitute"]:
                ax.plot(rates, [paper[arm][k] for k in keys], "s--", mfc="none", color=f"C{i}")
        used = part["data_used"] + (" (SUBSTITUTE)" if part["substitute"] else "")
        ax.set_title(f"{part['table']}: {part['model']} on {used}", fontsize="small")
        ax.set_xlabel("forward dropout rate p")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax = axes[1][col]
        if keys:
            for i, arm in enumerate(ARMS):
                run = part["runs"][arm].get(keys[0])
                if run is None:
                    continue
                steps = [c["step"] for c in run["curves"]]
                for metric, style in (("train_loss", "--"), ("test_loss", "-")):
                    values = np.array([c[metric] for c in run["curves"]]).mean(1)
                    ax.plot(steps, values, style, color=f"C{i}", label=f"{arm} {metric[:-5]}")
            ax.set_title(f"p = {keys[0]}: training (--) and test (-) loss", fontsize="small")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="x-small")
    axes[1][0].legend(fontsize="x-small")
    title = (
        f"Gao et al. Tables 4-5 and Fig. 3: standard vs augmented, mean over "
        f"{len(results['seeds'])} paired replicas"
    )
    save_figure_atomic(fig, path, dpi=100, title=title)


def _paper_rows(table: str, dataset: str, part: dict[str, Any] | None) -> list[str]:
    entry = PAPER[table].get(dataset)
    ran = part is not None and part.get("status") == "run"
    if entry is None and not ran:
        return []
    rates = sorted({*(part["rates"] if ran else []), *(RATES if entry else [])})
    q = part["backward_rate"] if ran else entry["backward_rate"]
    label = dataset
    if ran and part["substitute"]:
        used = part["data_used"]
        label += f" → {used} (SUBSTITUTE)" if used != dataset else " (stand-in)"
    rows = []
    for rate in rates:
        k = f"{rate:g}"
        paper = [f"{entry[a][k]:.4f}" if entry else "–" for a in ARMS]
        comp = part["comparisons"].get(k) if ran else None
        if comp is not None:
            ours = [
                fmt(part["summary"]["standard"][k]),
                fmt(part["summary"]["augmented"][k]),
                fmt_diff(comp["difference"]),
                f"{comp['delta']:.4f}",
                f"{comp['power']:.2f}",
                stats.shown(comp),
            ]
        else:
            ours = ["not run" if not ran else "– (not trained)"] + ["–"] * 5
        rows.append(f"| {label} | {k}/{q:g} | {' | '.join(paper)} | " + " | ".join(ours) + " |")
    return rows


def render(results: dict[str, Any]) -> str:
    """Markdown: the paper's Tables 4-5 with our numbers (or "not run") side by side."""
    parts = results.get("cells", {})
    lines = []
    if results.get("not_run"):
        lines += [f"**{NAME}: not run** — the reasons are below.", ""]
    if results.get("substitute"):
        lines += [f"**{results['substitute']}**", ""]
    header = [
        "| dataset | p/q | paper std | paper aug | ours std | ours aug | Δ aug − std [95% CI] "
        "| δ (paper) | power | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for table, paper in PAPER.items():
        lines += [f"**{paper['title']}**", "", *header]
        datasets = [d for d in paper if d != "title"]
        datasets += [p["dataset"] for p in parts.values() if p["table"] == table]
        for ds in dict.fromkeys(datasets):
            lines += _paper_rows(table, ds, parts.get(f"{table}_{ds}"))
        lines.append("")
    for part in parts.values():
        if part["status"] != "run":
            lines.append(
                f"- {part['table']} {part['dataset']}: **not run** — "
                f"{part['reason'].splitlines()[0]}"
            )
            continue
        d = part["data"]
        pooled = part["pooled"]
        verdict = (
            f"pooled over rates {fmt_diff(pooled['difference'])} (n={pooled['difference']['n']}),"
            f" δ = {pooled['delta']:.4f}, power {pooled['power']:.2f} → verdict "
            f"**{pooled['verdict']}**, headline **{pooled['headline']}**"
            if pooled
            else "not tested (fewer than two pairs)"
        )
        lines.append(
            f"- {part['table']} {part['dataset']}: {part['model']} on **{d['name']}**"
            f"{' (SUBSTITUTE)' if part['substitute'] else ''} ({d['source']}; "
            f"{d['preprocessing']}); {describe_train(part['train'])}; augmentation "
            f"{part['augmentation_applied']}; coverage {part['coverage']:.1%} of the paper's "
            f"{PAPER_ITERATIONS[part['table']]:,} iterations; {part['cells_done']}/"
            f"{part['cells_total']} cells; {verdict}"
        )
    reasons = dict.fromkeys(p["reason"] for p in parts.values() if p["status"] != "run")
    if reasons:
        lines += ["", "Why parts were not run, and how to provide the data:", "", "```"]
        lines += [*reasons, "```"]
    lines += [
        "",
        f"Note: {ITERATIONS_NOTE}",
        "",
        f"Overall: **{results['verdict']}** ({results['source']}).",
    ]
    return "\n".join(lines)
