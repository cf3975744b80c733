"""Figure helpers shared by the claims: one way to open a figure, name it, draw the panels that
recur (a mean with its 95 % interval, a Monte Carlo z-score check) and write it atomically.

Figures are :class:`matplotlib.figure.Figure` objects made without pyplot (no global state),
named ``<preset>_<what>.png`` so that a quick run never overwrites a paper figure, and written
by :func:`experiments.harness.results.save_figure_atomic` (temp file, then ``os.replace``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.harness.results import save_figure_atomic

__all__ = ["ci_errorbar", "figure", "figure_name", "paired_arms", "publish", "save", "z_panel"]


def figure(nrows: int, ncols: int, size: tuple[float, float]):
    """A constrained-layout figure and its ``[nrows, ncols]`` array of axes.

    Examples:
      >>> from experiments.harness.plots import figure
      >>> fig, axes = figure(1, 2, (6, 3))
      >>> axes.shape
      (1, 2)
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def figure_name(preset: str, what: str) -> str:
    """``<preset>_<what>.png``: a figure's file name carries the preset.

    Examples:
      >>> from experiments.harness.plots import figure_name
      >>> figure_name("quick", "linear_l2")
      'quick_linear_l2.png'
    """
    return f"{preset}_{what}.png"


def save(fig, path: Path, *, dpi: int = 110) -> None:
    """Writes ``fig`` to ``path`` atomically and releases it."""
    save_figure_atomic(fig, path, dpi=dpi)


def publish(
    plot: Callable[[dict, Path], None], results: dict, out_dir: Path, preset: str, what: str
) -> str:
    """Draws ``plot(results, out_dir / name)`` on the first process only and returns the
    name, ``<preset>_<what>.png``."""
    import jax

    name = figure_name(preset, what)
    if jax.process_index() == 0:
        plot(results, Path(out_dir) / name)
    return name


def _bounds(row: dict[str, Any]) -> tuple[float, float, float]:
    mean = float(row["mean"])
    lo, hi = row.get("ci_low"), row.get("ci_high")
    ok = lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi)
    return (mean, float(lo), float(hi)) if ok else (mean, mean, mean)


def ci_errorbar(ax, x: Sequence[float], rows: Sequence[dict[str, Any]], fmt: str, **kw) -> None:
    """Plots ``row["mean"]`` at ``x`` with its ``[ci_low, ci_high]`` as error bars (none where
    the interval is missing, e.g. a single seed)."""
    m, lo, hi = (np.array(v) for v in zip(*(_bounds(r) for r in rows), strict=True))
    ax.errorbar(np.asarray(x), m, yerr=[m - lo, hi - m], fmt=fmt, capsize=3, **kw)


def paired_arms(ax, arms: Sequence[str], values: np.ndarray, **kw: Any) -> None:
    """Paired replicas across arms: one grey line per replica (``values[:, r]``, one row per
    arm) and each arm's mean ± std (sample std; none for a single replica), the arms as
    x ticks. ``kw`` goes to the mean's ``errorbar`` (e.g. ``ms``)."""
    values = np.asarray(values)
    xs = np.arange(len(arms))
    ax.plot(xs, values, color="0.7", marker=".", lw=0.8)
    ax.errorbar(
        xs,
        values.mean(1),
        yerr=values.std(1, ddof=1) if values.shape[1] > 1 else None,
        fmt="o",
        color="C3",
        capsize=4,
        label="mean ± std",
        **kw,
    )
    ax.set_xticks(xs, arms)


def z_panel(ax, rates: Sequence[float], z: Sequence[float], limit: float, title: str) -> None:
    """Bars of the largest ``|z|`` of a Monte Carlo estimate against its exact value, per
    dropout rate, with the limit that the check uses."""
    rates = np.asarray(rates, dtype=float)
    width = 0.7 * float(np.min(np.diff(rates))) if rates.size > 1 else 0.05
    ax.bar(rates, z, width=width)
    ax.axhline(limit, color="r", ls="--", label=f"|z| = {limit:g}")
    ax.set(xlabel="dropout rate p", ylabel="max |z| (Monte Carlo - exact)", title=title)
    ax.legend(fontsize=8)
