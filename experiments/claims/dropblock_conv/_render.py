"""Claim 12's figure and markdown table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.claims.dropblock_conv._protocol import (
    ARMS,
    CLAIM_TEXT,
    DELTA,
    QUOTE,
    REFERENCE_ITERATIONS,
)
from experiments.harness import plots, stats
from experiments.harness.results import save_figure_atomic


def _plot(results: dict[str, Any], path: Path) -> None:
    """Per rate: test accuracy and train-test gap per arm (one grey line per replica), and
    the mean test-accuracy curves; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r for r in results["config"]["rates"] if f"{r:g}" in results["per_replica"]["none"]]
    if not rates:
        return
    fig, axes = plt.subplots(3, len(rates), figsize=(max(5.0, 4.5 * len(rates)), 10), squeeze=False)
    for j, rate in enumerate(rates):
        key = f"{rate:g}"
        arms = [a for a in ARMS if key in results["per_replica"][a]]
        for row, (metric, ylabel) in enumerate(
            (("test_acc", "final test accuracy"), ("gap", "clean-train − test accuracy"))
        ):
            ax = axes[row, j]
            vals = np.array([results["per_replica"][a][key][metric] for a in arms])
            plots.paired_arms(ax, arms, vals, ms=7)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"target rate {key}, block {results['config']['block_size']}")
                ax.legend(fontsize="small")
        ax = axes[2, j]
        for i, arm in enumerate(arms):
            curves = results["per_replica"][arm][key]["curves"]
            steps = [c["step"] for c in curves]
            for metric, style in (("test_acc", "-"), ("train_acc", ":")):
                acc = np.array([c[metric] for c in curves]).mean(1)
                label = f"{arm} {'test' if metric == 'test_acc' else 'train (noisy)'}"
                ax.plot(steps, acc, style, color=f"C{i}", marker=".", label=label)
        ax.axvline(results["config"]["ramp_steps"], color="0.5", lw=0.8, ls="--")
        ax.set_xlabel("iteration (dashed: end of the rate ramp)")
        ax.set_ylabel("accuracy, mean over replicas")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    d = results["data"]
    title = (
        f"{d['name']}, {d['num_train']} training images: conv-map noise\n"
        f"{len(results['seeds'])} paired replicas (grey lines: one replica across arms)"
    )
    save_figure_atomic(fig, path, dpi=110, title=title)


def _fmt(s: dict[str, float] | None) -> str:
    return "–" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}"


def _fmt_diff(d: dict[str, float] | None) -> str:
    if d is None:
        return "–"
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.4f} [n/a]"
    return f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


def render(results: dict[str, Any]) -> str:
    """Markdown: per rate, test accuracy and gap per arm, the paired differences, verdicts."""
    cfg, t, d = results["config"], results["config"]["train"], results["data"]
    s = results["summary"]
    rows = [
        "| rate | test none | test standard | test dropblock | gap none / std / db "
        "| Δ db − std [95% CI] | verdict | Δ db − none [95% CI] | Δ std − none [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in cfg["rates"]:
        k = f"{rate:g}"
        c = results["comparisons"].get(k, {})
        cell = lambda arm, m, k=k: s[arm].get(k, {}).get(m)
        gaps = " / ".join(f"{cell(a, 'gap')['mean']:.3f}" if cell(a, "gap") else "–" for a in ARMS)
        diff = lambda name, c=c: (c.get(name) or {}).get("difference")
        rows.append(
            f"| {k} | {_fmt(cell('none', 'test_acc'))} | {_fmt(cell('standard', 'test_acc'))} "
            f"| {_fmt(cell('dropblock', 'test_acc'))} | {gaps} "
            f"| {_fmt_diff(diff('dropblock_vs_standard'))} "
            f"| {_now(c.get('dropblock_vs_standard'))} "
            f"| {_fmt_diff(diff('dropblock_vs_none'))} | {_fmt_diff(diff('standard_vs_none'))} |"
        )
    lines = [
        f"**DropBlock vs standard dropout on conv feature maps, {d['name']}** ({d['source']}): "
        f"{d['num_train']} training images ({cfg['train_subset']}), full test set "
        f"({d['num_test']}); conv {cfg['widths'][0]}/{cfg['widths'][1]} 3x3, hidden "
        f"{cfg['hidden']}; noise on the 14x14 and 7x7 maps, DropBlock block {cfg['block_size']} "
        "calibrated to the same expected drop fraction; both noisy arms ramp the rate linearly "
        f"from 0 over the first {cfg['ramp_steps']} iterations; {t['iterations']} iterations "
        f"of batch {t['batch_size']}, lr {t['learning_rate']:g} ÷10 at "
        f"{', '.join(map(str, t['lr_boundaries']))}, momentum {t['momentum']:g}, weight decay "
        f"{t['weight_decay']:g}; {len(results['seeds'])} paired replicas; "
        f"{results['cells_done']}/{results['cells_total']} cells. Test accuracy mean ± std; "
        "gap = clean accuracy on the training subset − test accuracy.",
        "",
        *rows,
        "",
    ]
    for name, entry in results["pooled"].items():
        lines.append(
            f"Pooled over rates, {name.replace('_vs_', ' − ')}: {_fmt_diff(entry['difference'])} "
            f"(n={entry['difference']['n']}, paired SD {entry['difference']['std']:.4f}) → "
            f"verdict **{_now(entry)}** (headline {entry['headline']}); power for "
            f"δ = {DELTA:g}: {entry['power']:.2f}; pairs for 80 % power: "
            f"{entry['pairs_for_80pct']}; gap difference "
            f"{_fmt_diff(entry['gap_difference'])}."
        )
    lines.append(
        f'\nClaim ("{QUOTE}"), tested as: {CLAIM_TEXT}. Headline: **{results["verdict"]}** '
        f"(the seed has no protocol: coverage {results['coverage']:.0%} of our reference "
        f"{REFERENCE_ITERATIONS} iterations; the pooled verdict stands at 100 %, indicative "
        "below)."
    )
    if before := results.get("headline_at_start"):
        lines.append(
            f"\n**Headline rule changed after data.** This run's first cell recorded spec "
            f"`{before['hash']}`, under which {before['rule']}: headline "
            f"**{before['verdict']}**. Under the spec now: **{results['verdict']}**. The rule "
            "was changed after 5 of the 9 paper cells, so that a claim without a source "
            "protocol is decided at the full protocol of its own design, as claim 11 is."
        )
    return "\n".join(lines)


def _now(decision: dict[str, Any] | None) -> str:
    """A stored cell's verdict under the current rule (and the older one it was decided
    under, where they differ)."""
    return "–" if not decision else stats.verdict_now({"delta": DELTA, **decision})
