r"""Verdicts of analytic claims: a 95 % interval against a stated tolerance.

A comparative claim ("arm beats baseline by about δ") is decided by
:func:`experiments.harness.stats.decide`. The explainer's analytic claims state an
*identity* ("input dropout is L2 with λ = p/(1-p)", "weight scaling is exact for a linear
net") or a *mismatch* ("for a non-linear net the two differ"). Each is decided on the
interval of a deviation over random instances (designs, networks, seeds) against a tolerance
τ that the claim's module states with its reason:

* a check is ``within`` when the interval lies inside :math:`[-τ, τ]`, ``outside`` when it
  does not meet it, else ``undecided``;
* an identity is *reproduced* when every check is within, *refuted* when any is outside;
* a mismatch is *reproduced* when every check is outside, *refuted* when any is within;
* anything else is *inconclusive*.

A quantity computed exactly (an enumeration, a closed form) has no sampling error: its
"interval" is the point itself (:func:`point`), and τ covers floating-point rounding.

Power, for the report. Identity: the chance that the interval falls inside :math:`±τ` when the
deviation is exactly 0, for the observed spread :math:`s` and :math:`n` instances (normal
approximation with :math:`s` as the true spread:
:math:`2\Phi(\sqrt n\,τ/s - t_{n-1}) - 1`, 1 for a spread of 0). Mismatch: the chance that
the interval clears τ when the deviation is :math:`2τ`, i.e.
:func:`experiments.harness.stats.power` for an effect τ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

from experiments.harness.stats._intervals import power
from experiments.harness.stats._rule import headline_of

TOLERANCE_CLAIMS = ("identity", "mismatch")


def point(values: Sequence[float]) -> dict[str, Any]:
    """The largest absolute value of exactly computed quantities as a zero-width interval.

    Examples:
      >>> from experiments.harness.stats import point
      >>> point([1e-15, -3e-15])["ci_high"]
      3e-15
    """
    v = float(np.max(np.abs(np.asarray(values, dtype=np.float64))))
    return {"mean": v, "std": 0.0, "n": len(values), "ci_low": v, "ci_high": v, "exact": True}


def tolerance_check(interval: dict[str, Any], tol: float) -> str:
    """``within`` (interval inside ``[-tol, tol]``), ``outside`` (disjoint) or ``undecided``.

    Examples:
      >>> from experiments.harness.stats import tolerance_check
      >>> tolerance_check({"ci_low": -0.01, "ci_high": 0.02}, 0.05)
      'within'
      >>> tolerance_check({"ci_low": 0.1, "ci_high": 0.2}, 0.05)
      'outside'
    """
    lo, hi = interval.get("ci_low"), interval.get("ci_high")
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "undecided"
    if -tol <= lo and hi <= tol:
        return "within"
    if lo > tol or hi < -tol:
        return "outside"
    return "undecided"


def tolerance_power(claim: str, tol: float, sd: float, n: int, level: float = 0.95) -> float:
    """The design's power for the claim (see the module docstring); NaN under two instances.

    Examples:
      >>> from experiments.harness.stats import tolerance_power
      >>> round(tolerance_power("identity", 0.1, 0.1, 10), 2)
      0.63
      >>> tolerance_power("identity", 0.1, 0.0, 5)
      1.0
    """
    if claim not in TOLERANCE_CLAIMS:
        raise ValueError(f"claim must be one of {TOLERANCE_CLAIMS}; got {claim!r}")
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 1.0
    if claim == "mismatch":
        return power(tol, sd, n, level)
    crit = scipy.stats.t.ppf(0.5 + level / 2, n - 1)
    return float(max(0.0, 2.0 * scipy.stats.norm.cdf(np.sqrt(n) * tol / sd - crit) - 1.0))


def tolerance_verdict(checks: Sequence[str], claim: str = "identity") -> str:
    """The verdict of a claim from its checks (see the module docstring): an identity is
    ``reproduced`` when every check is ``within``, ``refuted`` when one is ``outside``; a
    mismatch the other way round; else (no checks, or one undecided) ``inconclusive``.

    Examples:
      >>> from experiments.harness.stats import tolerance_verdict
      >>> tolerance_verdict(["within", "within"])
      'reproduced'
      >>> tolerance_verdict(["within", "undecided", "outside"])
      'refuted'
      >>> tolerance_verdict(["outside"], "mismatch"), tolerance_verdict([])
      ('reproduced', 'inconclusive')
    """
    good, bad = ("within", "outside") if claim == "identity" else ("outside", "within")
    if checks and all(c == good for c in checks):
        return "reproduced"
    if any(c == bad for c in checks):
        return "refuted"
    return "inconclusive"


def decide_tolerance(
    interval: dict[str, Any],
    tol: float,
    *,
    claim: str,
    coverage: float = 1.0,
    substitute: bool = False,
) -> dict[str, Any]:
    """One check of an identity or a mismatch, as a decision record.

    Returns:
      ``{"difference", "check", "verdict", "headline", "tolerance", "claim", "power",
      "coverage", "substitute"}``; ``difference`` is ``interval`` (so that
      :func:`experiments.harness.stats.evidence` reads its ``n``).

    Examples:
      >>> from experiments.harness.stats import decide_tolerance
      >>> ci = {"mean": 1.0, "std": 0.01, "n": 6, "ci_low": 0.99, "ci_high": 1.01}
      >>> decide_tolerance(ci, 0.05, claim="mismatch")["verdict"]
      'reproduced'
    """
    c = tolerance_check(interval, tol)
    v = tolerance_verdict([c], claim)
    return {
        "difference": interval,
        "check": c,
        "verdict": v,
        "headline": headline_of(v, coverage, substitute),
        "tolerance": tol,
        "claim": claim,
        "power": tolerance_power(
            claim, tol, float(interval.get("std", float("nan"))), int(interval["n"])
        ),
        "coverage": coverage,
        "substitute": substitute,
    }


def combine_tolerance(decisions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One verdict over several checks of the same claim (every check must hold).

    Returns the decision record of the least powered check (the evidence the verdict rests
    on) with ``verdict`` and ``headline`` over all checks and ``checks``, their count.

    Examples:
      >>> from experiments.harness.stats import combine_tolerance, decide_tolerance, point
      >>> d = [decide_tolerance(point([1e-14]), 1e-10, claim="identity")] * 2
      >>> combine_tolerance(d)["verdict"], combine_tolerance(d)["checks"]
      ('reproduced', 2)
    """
    if not decisions:
        return {"verdict": "not tested", "headline": "not tested", "power": None, "checks": 0}
    claim = decisions[0]["claim"]
    v = tolerance_verdict([d["check"] for d in decisions], claim)
    coverage = min(d["coverage"] for d in decisions)
    substitute = any(d["substitute"] for d in decisions)

    def key(d):
        return d["power"] if np.isfinite(d["power"]) else 2.0

    weakest = min(decisions, key=key)
    return {
        **weakest,
        "verdict": v,
        "headline": headline_of(v, coverage, substitute),
        "coverage": coverage,
        "checks": len(decisions),
    }


def fmt_power(value: float | None) -> str:
    """A power for a table: two decimals, ``n/a`` when undefined (None or NaN).

    Examples:
      >>> from experiments.harness.stats import fmt_power
      >>> fmt_power(0.8), fmt_power(float("nan"))
      ('0.80', 'n/a')
    """
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.2f}"
