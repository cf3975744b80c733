"""The tables and figures of :mod:`experiments.claims.backprojection`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.claims.backprojection._cells import (
    no_drop_verdict,
)
from experiments.claims.backprojection._protocol import (
    ARMS,
    DELTA,
    PAPER_QUOTES,
)
from experiments.harness import plots
from experiments.harness.protocols import converged_lines


def _plot_samples(x: np.ndarray, samples: dict, kind: str, path: Path, title: str) -> None:
    side = int(round(np.sqrt(x.shape[-1])))
    names = [k for k in samples if k.startswith(f"{kind}/")]
    reps = samples[names[0]].shape[1]
    rows = len(x) * len(names)
    fig, axes = plots.figure(rows, reps + 1, (0.9 * (reps + 1) + 1.2, 0.9 * rows + 0.8))
    for i in range(len(x)):
        for j, name in enumerate(names):
            r = i * len(names) + j
            axes[r, 0].imshow(x[i].reshape(side, side), cmap="gray", vmin=0, vmax=1)
            for s in range(reps):
                img = np.clip(samples[name][i, s].reshape(side, side), 0.0, 1.0)
                axes[r, s + 1].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[r, 0].set_ylabel(f"x({j + 1})*", fontsize=8, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("x", fontsize=8)
    for s in range(reps):
        axes[0, s + 1].set_title(f"mask {s + 1}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    plots.save(fig, path, dpi=100)


def _plot_errors(results: dict[str, Any], path: Path) -> None:
    fig, axes = plots.figure(1, 2, (9, 3.6))
    axes = axes[0]
    for arm in ARMS:
        curves = results["arms"][arm]["curves"]
        steps = [c["step"] for c in curves]
        err = 100 * (1 - np.array([c["test_acc"] for c in curves]))
        axes[0].plot(steps, err.mean(1), marker="o", label=arm)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("test error (%), mean over replicas")
    axes[0].legend(fontsize="small")
    axes[0].grid(alpha=0.3)
    errors = np.array([results["errors"][a] for a in ARMS])
    plots.paired_arms(axes[1], ARMS, errors)
    axes[1].set_ylabel("final test error (%)")
    axes[1].legend(fontsize="small")
    axes[1].grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"Figure 4 test on {results['data']['name']} ({results['data']['num_train']} training "
        f"images): {len(results['seeds'])} paired replicas (grey: one replica across arms)",
        fontsize="medium",
    )
    plots.save(fig, path, dpi=100)


def render_figures(results: dict[str, Any], x_viz, samples, out_dir: Path, preset: str) -> list:
    """Figures 2 and 5 (samples under dropout and random dropout) and the test errors,
    named ``<preset>_<what>.png`` and written atomically (first process only)."""
    cfg = results["config"]
    n = len(cfg["hidden"])
    noise = {
        "standard": ("fig2_dropout_samples", f"dropout p={cfg['rate']:g}"),
        "random_rate": (
            "fig5_random_dropout_samples",
            f"random dropout ρ~U(0, {cfg['random_max']:g})",
        ),
    }
    names = []
    for kind, (what, label) in noise.items():
        e = [results["matching"][f"{kind}/layer {i + 1}"]["error"][i] for i in range(n)]
        title = (
            f"x(i)* under {label}, one mask per column; matching error e_i "
            f"{', '.join(f'{v:.2f}' for v in e)}\n(shown clipped to [0, 1])"
        )
        plot = lambda _, path, kind=kind, title=title: _plot_samples(
            x_viz, samples, kind, path, title
        )
        names.append(plots.publish(plot, results, out_dir, preset, what))
    names.append(plots.publish(_plot_errors, results, out_dir, preset, "test_error"))
    return names


def _fmt_diff(d: dict[str, float]) -> str:
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.2f} [n/a]"
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def _matching_table(results: dict[str, Any], n: int) -> list[str]:
    """The matching errors of every x* (bold: the layer it was fitted to)."""
    head = " | ".join(f"error layer {i + 1}" for i in range(n))
    rows = [f"| x* | {head} | ‖x* − x‖ / ‖x‖ | pixels outside [0, 1] |", "|---" * (n + 3) + "|"]
    labels = {}
    for kind, label in (("standard", "dropout"), ("random_rate", "random dropout")):
        for i in range(n):
            labels[f"{kind}/layer {i + 1}"] = f"x({i + 1})*, {label}"
    for i in range(n):
        labels[f"box/layer {i + 1}"] = f"x({i + 1})* in the box [0, 1], dropout"
    labels["joint"] = "one x* for all layers (Eq. 8 with λ_i = 1 / noise energy), dropout"
    for key, label in labels.items():
        r = results["matching"].get(key)
        if r is None:
            continue
        errs = " | ".join(
            f"**{v:.3f}**" if key.endswith(f"layer {i + 1}") else f"{v:.3f}"
            for i, v in enumerate(r["error"])
        )
        rows.append(f"| {label} | {errs} | {r['displacement']:.2f} | {r['outside_unit_box']:.0%} |")
    return rows


def _comparisons_table(comparisons: dict[str, Any]) -> list[str]:
    comp = [
        "| comparison | Δ test error, pp [95% CI] | verdict (δ = "
        f"{DELTA:g}): what the interval says | power for δ | pairs for 80 % |",
        "|---|---|---|---|---|",
    ]
    for label, c in comparisons.items():
        verdict = (
            c["verdict"] if c["verdict"] == "inconclusive" else f"{c['verdict']}: {c['reading']}"
        )
        if label == "backproject − dropout":  # decided as the paper states it: no drop
            shows = "" if c["verdict"] == "inconclusive" else f" (the interval: {c['reading']})"
            verdict = f"the paper's *no significant drop*: **{no_drop_verdict(c)}**{shows}"
        pairs = c["pairs_for_80pct"]
        comp.append(
            f"| {label} | {_fmt_diff(c['difference'])} | {verdict} "
            f"| {c['power']:.2f} | {pairs if pairs is not None else '–'} |"
        )
    return comp


def render(results: dict[str, Any]) -> str:
    """Markdown: matching errors, per-arm test error, paired differences, verdict."""
    cfg, d = results["config"], results["data"]
    rows = _matching_table(results, len(cfg["hidden"]))
    arms = ["| arm | test error % (mean ± std) |", "|---|---|"]
    for arm in ARMS:
        s = results["summary"][arm]
        arms.append(f"| {arm} | {s['mean']:.2f} ± {s['std']:.2f} |")
    comp = _comparisons_table(results["comparisons"])
    t = cfg["train"]
    lines = [
        f"**Back-projection, MLP {'-'.join(map(str, cfg['hidden']))} on {d['name']}** "
        f"({d['source']}; {d['num_train']} training images, {d['num_test']} test): "
        f"{cfg['epochs']} epochs = {t['iterations']} iterations of batch {t['batch_size']}, "
        f"SGD lr {t['learning_rate']:g}, momentum {t['momentum']:g}; hidden dropout "
        f"{cfg['rate']:g}; {len(results['seeds'])} paired replicas; coverage "
        f"{results['coverage']:.2%} of the paper's training examples.",
        "",
        f"Matching error e_i = ‖f(i)(x*) − f̃(i)(x)‖ / ‖f̃(i)(x) − f(i)(x)‖ (pooled over "
        f"{cfg['viz_inputs']} test digits × {cfg['viz_samples']} masks; bold: the layer the "
        f"x* was fitted to) on the trained dropout network; damped Gauss-Newton, "
        f"{cfg['viz_gn']} steps × {cfg['viz_cg']} CG iterations, damping "
        f"{cfg.get('viz_damping', cfg.get('damping', 1e-2)):g}, no box unless stated:",
        "",
        *rows,
        "",
        "x(i)* as the backproject arm makes them in training (Gauss-Newton steps per layer "
        f"{tuple(cfg['train_gn'])} × {cfg['train_cg']} CG iterations), on its final network: "
        + ", ".join(f"e_{i + 1} = {v:.3f}" for i, v in enumerate(results["training_matching"]))
        + ".",
        "",
        *arms,
        "",
        *comp,
        "",
        f"Verdict: **{results['verdict']}** ("
        + (
            "a declared scaled protocol, decided at it"
            if "scaled" in results
            else "each cell's headline is indicative below 100 % coverage"
        )
        + "). Paper: "
        f'"{PAPER_QUOTES[0]}" ({PAPER_QUOTES[1]} δ is our choice.)',
    ]
    if "scaled" in results:
        lines += converged_lines(
            results["scaled"], "the last 2 evaluations within δ of the 2 before"
        )
    return "\n".join(lines)
