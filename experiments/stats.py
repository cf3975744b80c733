"""Summary statistics shared by the experiments: mean ± std, paired-difference CIs, verdicts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats

__all__ = ["mean_ci", "mean_std", "paired_difference", "verdict"]


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


def verdict(diff: dict, claimed_sign: int) -> str:
    """``reproduced`` when the CI excludes 0 on the claimed side, ``not reproduced`` when it
    excludes 0 on the other side, else ``inconclusive``."""
    lo, hi = diff["ci_low"], diff["ci_high"]
    if not np.isfinite(lo) or not np.isfinite(hi):
        return "inconclusive"
    if claimed_sign > 0:
        return "reproduced" if lo > 0 else ("not reproduced" if hi < 0 else "inconclusive")
    return "reproduced" if hi < 0 else ("not reproduced" if lo > 0 else "inconclusive")
