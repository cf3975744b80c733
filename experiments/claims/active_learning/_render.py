"""The tables and figures of :mod:`experiments.claims.active_learning`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.claims.active_learning._protocol import (
    ARMS,
    BALD_TYPE,
    PAPER_MAX_LABELS,
    THRESHOLDS,
)
from experiments.harness.results import save_figure_atomic


def _fmt_ci(s: dict[str, Any], digits: int = 0) -> str:
    if s["ci_low"] is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]"


def _fmt_diff(comp: dict[str, Any]) -> str:
    d = comp["difference"]
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.3f} [n/a] ({comp['verdict']})"
    return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] ({comp['verdict']})"


def render(results: dict[str, Any]) -> str:
    """Markdown: accuracy at a few label counts, labels to 90/95 %, savings and verdicts."""
    cfg, labels = results["config"], results["labels"]
    p = cfg["preset"]
    cols = sorted({0, len(labels) // 2, len(labels) - 1})
    head = " | ".join(f"acc @ {labels[c]}" for c in cols)
    rows = [
        f"| arm | {head} | labels to 90% | saving vs random (90%) | verdict (90%) "
        "| labels to 95% | verdict (95%) |",
        "|---" * (6 + len(cols)) + "|",
    ]
    for arm in ARMS:
        curve = results["curves"][arm]["summary"]
        accs = " | ".join(_fmt_ci(curve[c], 3) for c in cols)
        cells = []
        for target in THRESHOLDS:
            key = f"{target:g}"
            r = results["labels_to"][arm][key]
            if r["reached"] == 0:
                reached = f"> {p['max_labels']} (not reached)"
            else:
                reached = f"{_fmt_ci(r['summary'])} ({r['reached']}/{len(r['per_seed'])} reached)"
            comp = results["comparisons"].get(arm, {}).get(key)
            if comp is None:
                cells.append((reached, "–", "–"))
            elif "saving" not in comp:
                cells.append((reached, "–", comp["headline"]))
            else:
                s = comp["saving"]
                saving = f"{100 * s['mean']:.0f}%" + (
                    f" [{100 * s['ci_low']:.0f}, {100 * s['ci_high']:.0f}]"
                    if s["ci_low"] is not None
                    else ""
                )
                cells.append((reached, saving, comp["headline"]))
        rows.append(
            f"| {arm} | {accs} | {cells[0][0]} | {cells[0][1]} | {cells[0][2]} "
            f"| {cells[1][0]} | {cells[1][2]} |"
        )
    lines = [
        f"**Active learning on {results['data']['name']}** ({results['data']['source']}; "
        f"{results['scope']}): {p['initial']} balanced initial labels, {p['acquire']} acquired "
        f"per round up to {p['max_labels']}, T = {p['num_samples']} MC dropout samples "
        f"(consistent masks) over {p['pool_subset']} random pool points per round, the net "
        "retrained from scratch each round; "
        f"{len(results['seeds'])} seeds (seeds {results['seeds']}). Test accuracy of the "
        "deterministic net, mean [95% t-interval] over seeds; labels to X% is the first label "
        "count at or above X% (censored seeds count as "
        f"{results['labels_to']['random']['0.9']['censored_at']}); saving = paired "
        "(random − arm) / random.",
        "",
        *rows,
        "",
        "Mean accuracy over the rounds (area under the learning curve), arm − random, paired "
        "[95% CI]: "
        + "; ".join(
            f"{arm} {_fmt_diff(results['comparisons'][arm]['mean_accuracy'])}" for arm in BALD_TYPE
        )
        + ".",
        "",
        f"Claim ({results['source']}): {results['claim']}. Verdict at 90% over the BALD-type "
        f"arms: **{results['headline']}** (raw verdict {results['verdict']}; coverage "
        f"{results['coverage']:.2f} of the paper's {PAPER_MAX_LABELS} labels).",
    ]
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = results["labels"]
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for arm in ARMS:
        s = results["curves"][arm]["summary"]
        mean = np.array([x["mean"] for x in s])
        (line,) = ax.plot(labels, mean, label=arm, marker="o", markersize=2.5)
        if s[0]["ci_low"] is not None:
            lo = np.clip([x["ci_low"] for x in s], 0.0, 1.0)
            hi = np.clip([x["ci_high"] for x in s], 0.0, 1.0)
            ax.fill_between(labels, lo, hi, color=line.get_color(), alpha=0.12, linewidth=0)
    for target in THRESHOLDS:
        ax.axhline(target, color="gray", linestyle=":", linewidth=0.8)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(max(0.0, min(ax.get_ylim()[0], 0.5)), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title(
        f"Active learning on {results['data']['name']}: mean and 95% CI over "
        f"{len(results['seeds'])} seeds",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
