"""Intervals, power and error rates of paired designs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.integrate
import scipy.stats

_SQRT2 = math.sqrt(2.0)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) and the count."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "n": int(v.size),
    }


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
    """Mean, std and count with the Student-t confidence interval of the mean.

    Returns:
      ``{"mean", "std", "n", "ci_low", "ci_high"}``; the bounds are None with fewer than two
      values.
    """
    out = mean_std(values)
    if out["n"] < 2:
        out.update(ci_low=None, ci_high=None)
        return out
    half = scipy.stats.t.ppf(0.5 + level / 2, out["n"] - 1) * out["std"] / np.sqrt(out["n"])
    out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Mean of ``b - a`` over paired replicas with its Student-t confidence interval.

    Replica r of ``a`` and of ``b`` share a seed, so the difference removes the
    seed-to-seed variation they have in common.

    Returns:
      ``{"mean", "std", "n", "ci_low", "ci_high", "level"}``; the interval is NaN with
      fewer than two pairs.
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.shape != np.shape(a) or d.ndim != 1:
        raise ValueError("paired_difference needs two 1-D sequences of the same length")
    out = mean_ci(d, level)
    nan = float("nan")
    lo = nan if out["ci_low"] is None else float(out["ci_low"])
    hi = nan if out["ci_high"] is None else float(out["ci_high"])
    out.update(ci_low=lo, ci_high=hi, level=level)
    return out


def power(delta: float, sd: float, n: int, level: float = 0.95) -> float:
    """Power of the paired design to declare an effect of size ``delta`` *reproduced*.

    "Reproduced" means the two-sided ``level`` Student-t interval of the mean paired
    difference lies above 0, i.e. a one-sided test at ``(1 - level) / 2``. With ``n`` pairs
    of standard deviation ``sd`` the statistic has a noncentral t law with ``n - 1`` degrees
    of freedom and noncentrality ``delta * sqrt(n) / sd``.

    Examples:
      >>> from experiments.harness.stats import power
      >>> round(power(1.0, 1.0, 10), 2)
      0.8
    """
    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return float("nan")
    df = n - 1
    crit = scipy.stats.t.ppf(0.5 + level / 2, df)
    return float(scipy.stats.nct.sf(crit, df, abs(delta) * np.sqrt(n) / sd))


def pairs_needed(
    delta: float, sd: float, target: float = 0.8, level: float = 0.95, cap: int = 100_000
) -> int | None:
    """The smallest number of pairs whose :func:`power` reaches ``target`` (None past cap).

    Examples:
      >>> from experiments.harness.stats import pairs_needed
      >>> pairs_needed(1.0, 1.0)
      10
    """
    if not np.isfinite(sd) or sd <= 0:
        return None
    lo, hi = 2, 2
    while power(delta, sd, hi, level) < target:
        if hi >= cap:
            return None
        lo, hi = hi, min(2 * hi, cap)
    while lo < hi:
        mid = (lo + hi) // 2
        if power(delta, sd, mid, level) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi


def error_rates(delta: float, sd: float, n: int, level: float = 0.95) -> dict[str, float]:
    """What this design (``n`` pairs, paired SD ``sd``) calls, when the truth is 0 or δ.

    The interval is ``mean ± t* s / sqrt(n)`` with ``t*`` the Student-t quantile; the mean is
    normal around the true effect ``mu`` with SD ``sd / sqrt(n)`` and the sample SD ``s`` has
    ``sd * sqrt(chi2(n-1) / (n-1))``'s law, independently. :func:`verdict` then calls

    * *reproduced* (``lo > 0``, either wording) when ``mean > c s``, ``c = t* / sqrt(n)``:
      probability ``P(reproduce | mu)``, the noncentral t tail (:func:`power` at ``mu = δ``);
    * *refuted* (``lo <= 0`` and ``0 <= hi < δ``) when ``-c s <= mean < min(c s, δ - c s)``:
      probability ``P(refute | mu)``, integrated over the law of ``s``.

    Returns:
      ``{"p_reproduce_delta", "p_refute_zero", "p_refute_delta"}``: the chance to call the
      paper's effect reproduced when it is real, and to call it refuted when the truth is 0
      (right) or δ (a false refutation). NaN without a finite positive SD or with n < 2.

    Examples:
      >>> from experiments.harness.stats import error_rates
      >>> r = error_rates(1.0, 1.0, 10)
      >>> round(r["p_reproduce_delta"], 2), round(r["p_refute_zero"], 2)
      (0.8, 0.77)
    """
    nan = float("nan")
    if n < 2 or not np.isfinite(sd) or sd <= 0:
        return {"p_reproduce_delta": nan, "p_refute_zero": nan, "p_refute_delta": nan}
    df = n - 1
    c = scipy.stats.t.ppf(0.5 + level / 2, df) / np.sqrt(n)
    se = sd / np.sqrt(n)
    scale = sd / np.sqrt(df)
    chi = scipy.stats.chi(df, scale=scale)  # the law of the sample SD
    lo_s, hi_s = chi.ppf(1e-12), chi.isf(1e-12)  # where it has mass
    # The integrand in plain floats (math.erfc, math.lgamma): scipy.stats' per-call checks
    # made each integral take a tenth of a second.
    log_norm = (df / 2 - 1) * math.log(2) + math.lgamma(df / 2) + math.log(scale)

    def p_refute(mu: float) -> float:
        def density(s: float) -> float:
            upper, lower = min(c * s, delta - c * s), -c * s  # upper > lower for every s > 0
            mass = 0.5 * (
                math.erfc((lower - mu) / (se * _SQRT2)) - math.erfc((upper - mu) / (se * _SQRT2))
            )
            x = s / scale
            return mass * math.exp((df - 1) * math.log(x) - x * x / 2 - log_norm)

        value = scipy.integrate.quad(density, lo_s, hi_s, points=[sd], limit=200)[0]
        return float(min(max(value, 0.0), 1.0))

    return {
        "p_reproduce_delta": power(delta, sd, n, level),
        "p_refute_zero": p_refute(0.0),
        "p_refute_delta": p_refute(delta),
    }


def holm(diffs: Sequence[dict], level: float = 0.95) -> list[tuple[float, float]]:
    """Holm-adjusted simultaneous intervals for a family of paired differences.

    Each difference ``{"mean", "std", "n"}`` gets its two-sided t p-value for 0; sorted by
    p-value, the ``i``-th (0-based) of ``m`` is tested at ``alpha / (m - i)``, and its interval
    is the two-sided interval at that level (Holm's step-down; past the first non-rejection,
    every remaining difference keeps the level of that step). The intervals carry Holm's
    familywise error for the tests against 0; they are not simultaneous confidence intervals.

    Examples:
      >>> from experiments.harness.stats import holm
      >>> d = {"mean": 1.0, "std": 1.0, "n": 10}
      >>> [round(lo, 2) for lo, hi in holm([d, d])]  # tested at 0.025, then at 0.05
      [0.15, 0.28]
    """
    alpha = 1.0 - level
    m = len(diffs)
    pvals = []
    for d in diffs:
        se = d["std"] / np.sqrt(d["n"]) if d["n"] > 1 else float("nan")
        t = d["mean"] / se if se > 0 else float("inf")
        pvals.append(float(2 * scipy.stats.t.sf(abs(t), d["n"] - 1)) if se == se else 1.0)
    order = np.argsort(pvals, kind="stable")
    levels = [0.0] * m
    step_alpha = alpha / m
    for rank, i in enumerate(order):
        step_alpha = alpha / (m - rank)
        levels[i] = step_alpha
        if pvals[i] > step_alpha:  # the first non-rejection: the rest keep this level
            for j in order[rank + 1 :]:
                levels[j] = step_alpha
            break
    out = []
    for d, a in zip(diffs, levels, strict=True):
        if d["n"] < 2:
            out.append((float("nan"), float("nan")))
            continue
        half = scipy.stats.t.ppf(1 - a / 2, d["n"] - 1) * d["std"] / np.sqrt(d["n"])
        out.append((float(d["mean"] - half), float(d["mean"] + half)))
    return out
