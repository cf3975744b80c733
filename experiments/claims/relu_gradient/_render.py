"""The tables and figures of :mod:`experiments.claims.relu_gradient`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.claims.relu_gradient._protocol import (
    ARMS,
    CASES,
    NETWORK_CASES,
    UNIT_CASE,
    WRT,
)
from experiments.harness import plots, stats


# ---------------------------------------------------------------------------- render, plot
def _fmt_dev(d: dict[str, Any]) -> str:
    lo, hi = d["rel_dev_ci"]
    if lo is None:
        return f"{d['rel_dev']:.4f} [n/a]"
    return f"{d['rel_dev']:.4f} [{lo:.4f}, {hi:.4f}]"


def _fmt_gain(g: dict[str, Any]) -> str:
    if g["ci_low"] is None:
        return f"{g['mean']:.4f}"
    return f"{g['mean']:.4f} [{g['ci_low']:.4f}, {g['ci_high']:.4f}]"


def render(results: dict[str, Any]) -> str:
    """Markdown: the three verdicts, the per-case rows, and the network-stability cells."""
    rates = results["config"]["rates"]
    s, v, tol = results["summary"], results["verdicts"], results["config"]["tolerance"]
    lines = [
        "| statement | arm | cases | E g compared with | verdict |",
        "|---|---|---|---|---|",
        f"| unit level: E[grad] independent of p | inverted | {UNIT_CASE} | g0 | **{v['unit']}** |",
        f"| no inverted scaling: E[grad] shrinks by (1 - p) | non-inverted | {UNIT_CASE} | "
        f"(1 - p) g0 | **{v['non_inverted_unit']}** |",
        f"| network level: E[grad] independent of p | inverted | {', '.join(NETWORK_CASES)} | "
        f"g0 | **{v['network']}** |",
        f"| inverted more stable than non-inverted (deep nets, dL/dW1; δ = p) | both | "
        f"{', '.join(NETWORK_CASES)} | g0 | **{v['network_stability']['headline']}** |",
        "",
        f"Relative deviation |E g - g_ref| / |g_ref| (bias-corrected, 95% CI over "
        f"{len(results['per_seed'])} networks); a statement holds at a rate when the upper "
        f"bound is below {tol:g} for dL/dx and dL/dW1, fails when a lower bound is above it. "
        "Gain = <E g, g0>/|g0|^2 of dL/dW1 (1: unchanged; 1 - p: shrunk by 1 - p).",
        "",
        "| case | p | gain inverted | gain non-inverted | rel. dev. from g0, inverted: "
        "dL/dx | dL/dW1 | check (inverted vs g0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        for r in rates:
            inv, non = s["inverted"][case][str(r)], s["non_inverted"][case][str(r)]
            check = v["checks"]["per_case"][case][str(r)]
            lines.append(
                f"| {case} | {r:g} | {_fmt_gain(inv['W1']['gain'])} | "
                f"{_fmt_gain(non['W1']['gain'])} | {_fmt_dev(inv['x']['g0'])} | "
                f"{_fmt_dev(inv['W1']['g0'])} | {check} |"
            )
    lines += [
        "",
        "Per case (inverted vs g0): " + "; ".join(f"{c}: {v['per_case'][c]}" for c in CASES) + ".",
        "",
        "| deep net | p | rel. dev. non-inverted − inverted (dL/dW1) [95% CI] | verdict | "
        "power (δ = p) |",
        "|---|---|---|---|---|",
    ]
    for case in NETWORK_CASES:
        for r in rates:
            d = v["network_stability"]["cells"][case][str(r)]
            power = d["power"]
            power_txt = "—" if power is None or power != power else f"{power:.2f}"
            lines.append(
                f"| {case} | {r:g} | {stats.fmt_diff(d['difference'])} | {d['verdict']} | "
                f"{power_txt} |"
            )
    lines.append(f"\nHeadline: **{results['verdict']}** ({results['source']}).")
    return "\n".join(lines)


def _gain_panel(ax, results: dict[str, Any]) -> None:
    """The unit-level gain of both arms against 1 and 1 - p, with the ±TOL bands."""
    rates, tol, s = results["config"]["rates"], results["config"]["tolerance"], results["summary"]
    grid = np.linspace(0.0, max(rates), 50)
    ax.plot(grid, np.ones_like(grid), "k-", lw=0.8, label="claim: 1 (inverted)")
    ax.plot(grid, 1.0 - grid, "k--", lw=0.8, label="1 - p (no rescaling)")
    ax.fill_between(grid, 1 - tol, 1 + tol, color="C0", alpha=0.12, lw=0)
    ax.fill_between(grid, (1 - grid) * (1 - tol), (1 - grid) * (1 + tol), color="C1", alpha=0.12)
    for arm, color in zip(ARMS, ("C0", "C1"), strict=True):
        for wrt, mk in zip(WRT, ("o", "s"), strict=True):
            gains = [s[arm][UNIT_CASE][str(r)][wrt]["gain"] for r in rates]
            plots.ci_errorbar(ax, rates, gains, mk, color=color, label=f"{arm}, dL/d{wrt}")
    ax.set(
        xlabel="dropout rate p",
        ylabel=r"gain $\langle E[g], g_0\rangle / \|g_0\|^2$",
        title=f"(a) {UNIT_CASE}: gain, 95% CI, ±{tol:g} bands",
    )
    ax.legend(fontsize=7)


def _deviation_panel(ax, results: dict[str, Any]) -> None:
    """The relative deviation from g0 of dL/dW1 for every case, inverted (solid) and
    non-inverted deep nets (dashed)."""
    rates, tol, s = results["config"]["rates"], results["config"]["tolerance"], results["summary"]
    for case, mk in zip(CASES, ("o", "s", "^", "v", "D"), strict=True):
        for arm in ARMS if case in NETWORK_CASES else ("inverted",):
            rows = [s[arm][case][str(r)]["W1"]["g0"] for r in rates]
            devs = [{"mean": d["rel_dev"], "ci_low": d["rel_dev_ci"][0],
                     "ci_high": d["rel_dev_ci"][1]} for d in rows]  # fmt: skip
            line = "-" if arm == "inverted" else "--"
            label = case + (" (non-inverted)" if arm == "non_inverted" else "")
            plots.ci_errorbar(ax, rates, devs, mk + line, label=label)
    ax.axhline(tol, color="k", lw=0.8, ls=":", label=f"tolerance {tol:g}")
    ax.set_yscale("symlog", linthresh=tol / 5)
    ax.set_ylim(bottom=0.0)
    ax.set(
        xlabel="dropout rate p",
        ylabel=r"$\|E[g] - g_0\| / \|g_0\|$, dL/dW1 (symlog)",
        title="(b) deviation from the no-dropout gradient, 95% CI",
    )
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], path: Path) -> None:
    """(a) unit-level gain of both arms against 1 and 1 - p; (b) relative deviation from g0
    of dL/dW1 for every case."""
    fig, axes = plots.figure(1, 2, (11, 4))
    _gain_panel(axes[0, 0], results)
    _deviation_panel(axes[0, 1], results)
    plots.save(fig, path, dpi=120)
