"""Figure 1 of Bouthillier et al. (2015), Sec. 4.1, for
:mod:`experiments.claims.random_dropout_mlp`: the distribution of the proportion of units
dropped by standard and by random dropout, sampled from dropjax's masks and against the
analytic laws (see the claim's module docstring). Nothing here trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

import dropjax
from experiments.harness import plots

FIG1_RATE = 0.5  # Figure 1's p
FIG1_UNITS = 100  # Figure 1's layer width, inferred from its peak (module docstring)
FIG1_DRAWS = 20_000  # layer calls sampled per scheme and width
SCHEMES = ("standard", "random_rate")


@jax.jit(static_argnames=("units", "chunk"))
def _dropped_counts(
    keys: jax.Array, units: int, rate: jax.Array, chunk: int = 2_000
) -> tuple[jax.Array, jax.Array]:
    """Units dropped by one call per key on a layer of ``units`` ones, for each scheme of
    ``SCHEMES``: ``keys`` is ``[2, draws]`` (one row per scheme); int32 ``[draws]`` each."""
    ones = jnp.ones((units,), jnp.float32)

    def standard(key):
        return jnp.sum(dropjax.dropout(key, ones, rate) == 0)

    def random_rate(key):
        return jnp.sum(dropjax.random_rate_dropout(key, ones, rate) == 0)

    return (
        jax.lax.map(standard, keys[0], batch_size=chunk),
        jax.lax.map(random_rate, keys[1], batch_size=chunk),
    )


def sample_dropped(key: jax.Array, units: int, rate: float, draws: int) -> dict[str, np.ndarray]:
    """Units dropped per layer call, ``draws`` calls of each scheme (``SCHEMES``): standard
    dropout at ``rate`` and random dropout with maximum rate ``rate``."""
    keys = jnp.stack([jax.random.split(jax.random.fold_in(key, i), draws) for i in (0, 1)])
    counts = _dropped_counts(keys, units, jnp.float32(rate))
    return {scheme: np.asarray(c) for scheme, c in zip(SCHEMES, counts, strict=True)}


def dropped_pmf(units: int, rate: float) -> dict[str, np.ndarray]:
    """``P(K = k)``, ``k = 0..units``: binomial (standard) and the uniform mixture of
    binomials over ``rho ~ U(0, rate)`` (random), ``I_rate(k + 1, units - k + 1) /
    ((units + 1) rate)``."""
    k = np.arange(units + 1)
    return {
        "standard": scipy.stats.binom.pmf(k, units, rate),
        "random_rate": scipy.stats.beta.cdf(rate, k + 1, units - k + 1) / ((units + 1) * rate),
    }


def dropped_moments(units: int, rate: float) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of the dropped proportion ``K / units`` for each scheme:
    ``p`` and ``p (1 - p) / N`` (binomial); ``p / 2`` and ``E[rho (1 - rho)] / N + Var(rho)
    = (p / 2 - p^2 / 3) / N + p^2 / 12`` (mixture)."""
    p, n = rate, units
    return {
        "standard": {"mean": p, "std": float(np.sqrt(p * (1 - p) / n))},
        "random_rate": {
            "mean": p / 2,
            "std": float(np.sqrt((p / 2 - p * p / 3) / n + p * p / 12)),
        },
    }


def dropped_layers(preset: Any, num_inputs: int) -> dict[str, int]:
    """Figure 1's width and the width of every layer the preset's model drops (a preset of
    :mod:`experiments.claims.random_dropout_mlp`: its ``hidden`` widths)."""
    layers = {"Figure 1": FIG1_UNITS, "input": num_inputs}
    layers.update({f"hidden {i + 1}": int(h) for i, h in enumerate(preset.hidden)})
    return layers


def dropped_proportion(
    key: jax.Array, layers: dict[str, int], rate: float = FIG1_RATE, draws: int = FIG1_DRAWS
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Samples both schemes per layer; returns the JSON summary (sampled and analytic mean and
    std of ``K / N``, Kolmogorov-Smirnov distance between the sampled and analytic laws of
    ``K``) and the counts for the figure."""
    summary: dict[str, Any] = {
        "rate": rate,
        "draws": draws,
        # Kolmogorov's 1 % critical value, conservative for a discrete law.
        "ks_critical_1pct": float(1.628 / np.sqrt(draws)),
        "layers": {},
    }
    samples = {}
    for i, (name, units) in enumerate(layers.items()):
        counts = sample_dropped(jax.random.fold_in(key, i), units, rate, draws)
        pmf, moments = dropped_pmf(units, rate), dropped_moments(units, rate)
        row: dict[str, Any] = {"units": units}
        for scheme in SCHEMES:
            frac = counts[scheme] / units
            hist = np.bincount(counts[scheme], minlength=units + 1) / draws
            row[scheme] = {
                "mean": float(frac.mean()),
                "std": float(frac.std(ddof=1)),
                "analytic_mean": moments[scheme]["mean"],
                "analytic_std": moments[scheme]["std"],
                "ks_to_analytic": float(np.max(np.abs(np.cumsum(hist - pmf[scheme])))),
            }
        summary["layers"][name] = row
        samples[name] = counts
    return summary, samples


def plot_dropped(summary: dict[str, Any], samples: dict[str, Any], path: Path) -> None:
    """Figure 1: density of the dropped proportion, sampled (steps) and analytic (lines)."""
    rate = summary["rate"]
    names = list(summary["layers"])
    fig, axes = plots.figure(1, len(names), (3.6 * len(names), 3.4))
    labels = {
        "standard": (f"dropout p = {rate:g}", "binomial"),
        "random_rate": (f"random dropout, rho ~ U(0, {rate:g})", "uniform mixture of binomials"),
    }
    for ax, name in zip(axes[0], names, strict=True):
        units = summary["layers"][name]["units"]
        pmf = dropped_pmf(units, rate)
        edges = (np.arange(units + 2) - 0.5) / units
        k = np.arange(units + 1) / units
        for scheme, color in zip(SCHEMES, ("C0", "C1"), strict=True):
            hist = np.bincount(samples[name][scheme], minlength=units + 1) / summary["draws"]
            sampled, analytic = labels[scheme]
            ax.stairs(hist * units, edges, color=color, alpha=0.5, fill=True, label=sampled)
            ax.plot(k, pmf[scheme] * units, color=color, lw=1.2, label=analytic)
        ax.set_xlim(0.0, min(1.0, 1.6 * rate))
        ax.set(title=f"{name}: N = {units}", xlabel="proportion of units dropped, k / N")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("density (N P(K = k))")
    axes[0][0].legend(fontsize="x-small")
    fig.suptitle(
        f"Dropped proportion per layer call, {summary['draws']} calls per scheme "
        "(Bouthillier et al. Fig. 1)",
        fontsize="medium",
    )
    plots.save(fig, path, dpi=110)
