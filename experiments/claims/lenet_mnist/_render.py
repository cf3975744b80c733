"""The tables and figures of :mod:`experiments.claims.lenet_mnist`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.claims.lenet_mnist._protocol import (
    DELTA,
    NAME,
    PAPER_ITERATIONS,
    PAPER_TABLE3,
)
from experiments.harness.results import save_figure_atomic


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
