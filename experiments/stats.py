"""Summary statistics shared by the experiments: mean ± std, paired-difference CIs, verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

__all__ = [
    "VERDICTS",
    "combine",
    "combine_decisions",
    "fmt",
    "fmt_diff",
    "decide",
    "evidence",
    "headline_of",
    "mean_ci",
    "mean_std",
    "paired_difference",
    "pairs_needed",
    "power",
    "shown",
    "verdict",
]


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


VERDICTS = ("reproduced", "refuted", "contradicted", "inconclusive")
"""The four outcomes of a comparative claim (see :func:`decide`)."""


def power(delta: float, sd: float, n: int, level: float = 0.95) -> float:
    """Power of the paired design to declare an effect of size ``delta`` *reproduced*.

    "Reproduced" means the two-sided ``level`` Student-t interval of the mean paired
    difference lies above 0, i.e. a one-sided test at ``(1 - level) / 2``. With ``n`` pairs
    of standard deviation ``sd`` the statistic has a noncentral t law with ``n - 1`` degrees
    of freedom and noncentrality ``delta * sqrt(n) / sd``.

    Examples:
      >>> from experiments.stats import power
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
      >>> from experiments.stats import pairs_needed
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


def headline_of(verdict_: str, coverage: float, substitute: bool) -> str:
    """What a verdict may claim: *indicative* below full coverage (an inconclusive interval
    stays inconclusive), labelled SUBSTITUTE at full coverage on substitute data."""
    if verdict_ == "inconclusive":
        return verdict_
    if coverage < 1.0 - 1e-9:
        return "indicative"
    return f"{verdict_} (SUBSTITUTE data)" if substitute else verdict_


def decide(
    diff: dict,
    claimed_sign: int,
    delta: float,
    *,
    coverage: float,
    substitute: bool = False,
) -> dict:
    """The verdict of a comparative claim, with the evidence it rests on.

    With the paired interval ``[lo, hi]`` of ``arm - baseline``, the claim "the difference
    has sign ``claimed_sign`` and size about ``delta``" (``delta > 0``, the paper's effect) is:

    * **reproduced**: the interval lies on the claimed side of 0;
    * **refuted**: the interval lies inside ``(-delta, +delta)``: no effect as large as
      claimed;
    * **contradicted**: the interval lies on the other side of 0 and reaches past
      ``-delta`` (in the claimed direction's terms);
    * **inconclusive**: anything else (too wide to tell).

    ``coverage`` is the fraction of the paper's protocol (iterations or epochs) the run
    covered. Below 1 the headline is ``indicative``: the verdict is reported, but the run
    cannot reproduce or refute the paper's number. At full coverage on a substitute dataset
    the headline carries the label, e.g. ``"refuted (SUBSTITUTE data)"``.

    Returns:
      ``{"verdict", "headline", "delta", "power", "pairs_for_80pct", "coverage",
      "substitute"}``, where ``power`` is that of this design (its ``n`` and observed
      ``std``) for an effect of ``delta``.

    Examples:
      >>> from experiments.stats import decide
      >>> diff = {"mean": 0.01, "std": 0.002, "n": 4, "ci_low": 0.007, "ci_high": 0.013}
      >>> d = decide(diff, +1, 0.01, coverage=1.0)
      >>> d["verdict"], d["headline"]
      ('reproduced', 'reproduced')
      >>> decide(diff, +1, 0.01, coverage=0.05)["headline"]
      'indicative'
    """
    if delta <= 0:
        raise ValueError(f"delta (the paper's effect size) must be positive; got {delta}")
    if claimed_sign not in (-1, 1):
        raise ValueError("claimed_sign must be +1 or -1")
    lo, hi = diff["ci_low"], diff["ci_high"]
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        verdict_ = "inconclusive"
    else:
        lo, hi = (lo, hi) if claimed_sign > 0 else (-hi, -lo)  # claimed direction = up
        if lo > 0:
            verdict_ = "reproduced"
        elif lo > -delta and hi < delta:
            verdict_ = "refuted"
        elif hi < 0:
            verdict_ = "contradicted"
        else:
            verdict_ = "inconclusive"
    n, sd = int(diff.get("n", 0)), float(diff.get("std", float("nan")))
    headline = headline_of(verdict_, coverage, substitute)
    return {
        "verdict": verdict_,
        "headline": headline,
        "delta": delta,
        "power": power(delta, sd, n),
        "pairs_for_80pct": pairs_needed(delta, sd),
        "coverage": coverage,
        "substitute": substitute,
    }


def combine_decisions(decisions: list[dict], *, every: bool = False) -> dict:
    """One verdict over several cells of a claim (each from :func:`decide`).

    Every cell reproduced: reproduced; any contradicted: contradicted; every cell refuted:
    refuted; otherwise inconclusive. With ``every=True`` the claim asserts each of its cells
    ("A beats B *and* C", "at every large rate"), so one refuted cell refutes it too. The
    headline follows the weakest evidence (the lowest coverage, a substitute dataset) as in
    :func:`decide`; no cells: ``not tested``.

    Examples:
      >>> from experiments.stats import combine_decisions
      >>> rep = {"verdict": "reproduced", "coverage": 1.0, "substitute": False}
      >>> combine_decisions([rep, rep])["headline"]
      'reproduced'
      >>> ref = {**rep, "verdict": "refuted"}
      >>> [combine_decisions([rep, ref], every=e)["verdict"] for e in (False, True)]
      ['inconclusive', 'refuted']
    """
    if not decisions:
        return {"verdict": "not tested", "headline": "not tested"}
    verdicts = [d["verdict"] for d in decisions]
    if all(v == "reproduced" for v in verdicts):
        verdict_ = "reproduced"
    elif any(v == "contradicted" for v in verdicts):
        verdict_ = "contradicted"
    elif all(v == "refuted" for v in verdicts) or (every and "refuted" in verdicts):
        verdict_ = "refuted"
    else:
        verdict_ = "inconclusive"
    coverage = min(d["coverage"] for d in decisions)
    substitute = any(d["substitute"] for d in decisions)
    headline = headline_of(verdict_, coverage, substitute)
    return {"verdict": verdict_, "headline": headline, "coverage": coverage}


def combine(verdicts: list[str]) -> str:
    """All cells reproduced -> reproduced; any not reproduced -> not reproduced; else
    inconclusive; no cells -> not tested."""
    if not verdicts:
        return "not tested"
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "inconclusive"


def fmt(summary: dict[str, float]) -> str:
    """``mean ± std``."""
    return f"{summary['mean']:.4f} ± {summary['std']:.4f}"


def shown(decision: dict[str, Any]) -> str:
    """A decision as a table cell: its headline, with what the interval says when the
    headline differs (below full coverage, on substitute data).

    Examples:
      >>> from experiments.stats import shown
      >>> shown({"verdict": "reproduced", "headline": "indicative"})
      'indicative (interval: reproduced)'
      >>> shown({"verdict": "refuted", "headline": "refuted"})
      'refuted'
    """
    verdict_, head = decision["verdict"], decision.get("headline", decision["verdict"])
    return verdict_ if head == verdict_ else f"{head} (interval: {verdict_})"


def fmt_diff(diff: dict[str, float]) -> str:
    """``+mean [low, high]`` (``[n/a]`` without an interval)."""
    if not np.isfinite(diff["ci_low"]):
        return f"{diff['mean']:+.4f} [n/a]"
    return f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"


def evidence(head: dict | None, *, coverage: float, substitute: bool, delta: float | None) -> dict:
    """The ``evidence`` record REPORT.md's summary reads, from a claim's headline decision.

    ``head`` is the :func:`decide` result (with its ``difference``) that the headline rests
    on, or None when nothing was decided yet.

    Examples:
      >>> from experiments.stats import evidence
      >>> evidence(None, coverage=0.5, substitute=False, delta=0.01)["pairs"]
      0
    """
    return {
        "coverage": coverage,
        "data": "SUBSTITUTE" if substitute else "real",
        "power": head["power"] if head else None,
        "delta": delta,
        "pairs": head["difference"]["n"] if head else 0,
    }
