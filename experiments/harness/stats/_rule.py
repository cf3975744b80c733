"""The decision rule: a paired interval against the paper's effect size."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.harness.stats._intervals import error_rates, pairs_needed


def verdict_of_sign(diff: dict, claimed_sign: int) -> str:
    """``reproduced`` when the CI excludes 0 on the claimed side, ``not reproduced`` when it
    excludes 0 on the other side, else ``inconclusive`` (a sign-only reading, no δ)."""
    lo, hi = diff["ci_low"], diff["ci_high"]
    if not np.isfinite(lo) or not np.isfinite(hi):
        return "inconclusive"
    if claimed_sign > 0:
        return "reproduced" if lo > 0 else ("not reproduced" if hi < 0 else "inconclusive")
    return "reproduced" if hi < 0 else ("not reproduced" if lo > 0 else "inconclusive")


def verdict(lo: float, hi: float, delta: float) -> str:
    """The verdict of a paired interval ``[lo, hi]`` of the difference in the claimed direction.

    The claim is "the difference is positive, about ``delta``" (``delta > 0``, the paper's
    effect). The rule is complete (every interval gets exactly one verdict) and monotone (an
    interval inside another never gets a weaker verdict):

    * ``"contradicted"``: ``hi < 0``, the effect runs the other way;
    * ``"reproduced"``: ``lo > 0`` and ``hi >= delta``;
    * ``"reproduced-smaller"``: ``lo > 0`` and ``hi < delta``: an effect in the claimed
      direction, smaller than claimed;
    * ``"refuted"``: ``lo <= 0`` and ``hi < delta`` (and ``hi >= 0``): no effect as large as
      claimed;
    * ``"inconclusive"``: anything else (``lo <= 0 <= ... `` and ``hi >= delta``: too wide),
      or a non-finite bound.

    Examples:
      >>> from experiments.harness.stats import verdict
      >>> [verdict(lo, hi, 0.01) for lo, hi in [(0.002, 0.02), (0.001, 0.005), (-0.01, 0.005),
      ...                                       (-0.03, -0.001), (-0.01, 0.03)]]
      ['reproduced', 'reproduced-smaller', 'refuted', 'contradicted', 'inconclusive']
    """
    if not delta > 0:
        raise ValueError(f"delta (the paper's effect size) must be positive; got {delta}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if lo > hi:
        raise ValueError(f"an interval needs lo <= hi; got [{lo}, {hi}]")
    if hi < 0:
        return "contradicted"
    if lo > 0:
        return "reproduced" if hi >= delta else "reproduced-smaller"
    if hi < delta:
        return "refuted"
    return "inconclusive"


def _verdict_gap(lo: float, hi: float, delta: float) -> str:
    """The rule in force until 2026-12-07 (kept to render results decided under it).

    reproduced if ``lo > 0``; refuted if ``(lo, hi)`` inside ``(-delta, delta)``;
    contradicted if ``hi < 0`` and ``lo <= -delta``; else inconclusive. It has a gap (an
    interval below 0 but inside ``-delta`` reads "refuted") and is not monotone.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if lo > 0:
        return "reproduced"
    if lo > -delta and hi < delta:
        return "refuted"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


RULES = {"monotone-2026-12": verdict, "gap-2026-11": _verdict_gap}
"""Every verdict rule a committed result was decided under, by name; the first is current."""
CURRENT_RULE = next(iter(RULES))


def verdict_now(decision: dict[str, Any], claimed_sign: int = 1) -> str:
    """A stored decision's verdict under the current rule, with what it was when decided
    under an older one: the stored verdict when it records the current rule, else the
    current rule applied to its stored interval and δ, followed by ``(decided X under the
    rule R when it ran)`` where the two differ. A decision that records no rule was made
    under ``gap-2026-11``, the rule in force before rules were named.

    Examples:
      >>> from experiments.harness.stats import verdict_now
      >>> old = {"verdict": "refuted", "delta": 0.01,
      ...        "difference": {"ci_low": -0.0091, "ci_high": -0.0035}}
      >>> verdict_now(old)
      'contradicted (decided refuted under the rule gap-2026-11 when it ran)'
      >>> verdict_now({**old, "rule": CURRENT_RULE})
      'refuted'
    """
    rule = decision.get("rule", "gap-2026-11")
    if rule == CURRENT_RULE or "difference" not in decision or not decision.get("delta"):
        return decision["verdict"]
    lo, hi = decision["difference"]["ci_low"], decision["difference"]["ci_high"]
    lo, hi = (lo, hi) if claimed_sign > 0 else (-hi, -lo)
    now = verdict(lo, hi, decision["delta"])
    if now == decision["verdict"]:
        return now
    return f"{now} (decided {decision['verdict']} under the rule {rule} when it ran)"


VERDICTS = ("reproduced", "reproduced-smaller", "refuted", "contradicted", "inconclusive")
"""The outcomes of a comparative claim (see :func:`verdict`)."""


def headline_of(
    verdict_: str, coverage: float | None, substitute: bool, scaled: bool = False
) -> str:
    """What a verdict may claim: *indicative* below full coverage (an inconclusive interval
    stays inconclusive), labelled SUBSTITUTE at full coverage on substitute data. Coverage
    None: the source states no protocol to cover (the design is ours), so the verdict stands.
    ``scaled``: a run at a declared scaled protocol (the ``scaled`` preset: trained to
    convergence, spec fixed before its data) is decided at that protocol and says so, its
    coverage of the paper's protocol reported beside it.

    Examples:
      >>> from experiments.harness.stats import headline_of
      >>> headline_of("refuted", 0.03, False), headline_of("refuted", 0.03, False, scaled=True)
      ('indicative', 'refuted (decided at a scaled protocol)')
    """
    if verdict_ == "inconclusive":
        return verdict_
    if scaled:
        return f"{verdict_} (decided at a scaled protocol" + (
            ", SUBSTITUTE data)" if substitute else ")"
        )
    if coverage is not None and coverage < 1.0 - 1e-9:
        return "indicative"
    return f"{verdict_} (SUBSTITUTE data)" if substitute else verdict_


def decide(
    diff: dict,
    claimed_sign: int,
    delta: float,
    *,
    coverage: float,
    substitute: bool = False,
    rule: str = CURRENT_RULE,
    scaled: bool = False,
) -> dict:
    """The verdict of a comparative claim, with the evidence it rests on.

    With the paired interval ``[lo, hi]`` of ``arm - baseline``, the claim "the difference
    has sign ``claimed_sign`` and size about ``delta``" (``delta > 0``, the paper's effect) is
    decided by :func:`verdict` on the interval in the claimed direction (or by the older
    rule named ``rule``, see :data:`RULES`).

    ``coverage`` is the fraction of the paper's protocol (iterations or epochs) the run
    covered. Below 1 the headline is ``indicative``: the verdict is reported, but the run
    cannot reproduce or refute the paper's number. At full coverage on a substitute dataset
    the headline carries the label, e.g. ``"refuted (SUBSTITUTE data)"``. ``scaled``: the
    run is a declared scaled protocol, decided at it (:func:`headline_of`).

    Returns:
      ``{"verdict", "headline", "delta", "power", "pairs_for_80pct", "coverage",
      "substitute", "rule", "p_reproduce_delta", "p_refute_zero", "p_refute_delta"}``,
      where ``power`` (= ``p_reproduce_delta``) and the two refutation rates are those of
      this design (its ``n`` and observed ``std``, :func:`error_rates`).

    Examples:
      >>> from experiments.harness.stats import decide
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
        verdict_ = RULES[rule](lo, hi, delta)
    n, sd = int(diff.get("n", 0)), float(diff.get("std", float("nan")))
    headline = headline_of(verdict_, coverage, substitute, scaled)
    rates = error_rates(delta, sd, n)
    return {
        "verdict": verdict_,
        "headline": headline,
        "delta": delta,
        "power": rates["p_reproduce_delta"],
        "pairs_for_80pct": pairs_needed(delta, sd),
        "coverage": coverage,
        "substitute": substitute,
        "rule": rule,
        **({"scaled": True} if scaled else {}),
        **rates,
    }


def combine_decisions(decisions: list[dict], *, every: bool = False) -> dict:
    """One verdict over several cells of a claim (each from :func:`decide`).

    Every cell reproduced: reproduced (``reproduced-smaller`` when some are only that); any
    contradicted: contradicted; every cell refuted:
    refuted; otherwise inconclusive. With ``every=True`` the claim asserts each of its cells
    ("A beats B *and* C", "at every large rate"), so one refuted cell refutes it too. The
    headline follows the weakest evidence (the lowest coverage, a substitute dataset) as in
    :func:`decide`; no cells: ``not tested``.

    Examples:
      >>> from experiments.harness.stats import combine_decisions
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
    elif all(v in ("reproduced", "reproduced-smaller") for v in verdicts):
        verdict_ = "reproduced-smaller"
    elif any(v == "contradicted" for v in verdicts):
        verdict_ = "contradicted"
    elif all(v == "refuted" for v in verdicts) or (every and "refuted" in verdicts):
        verdict_ = "refuted"
    else:
        verdict_ = "inconclusive"
    known = [d["coverage"] for d in decisions if d["coverage"] is not None]
    coverage = min(known) if known else None
    substitute = any(d["substitute"] for d in decisions)
    scaled = any(d.get("scaled", False) for d in decisions)
    headline = headline_of(verdict_, coverage, substitute, scaled)
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
      >>> from experiments.harness.stats import shown
      >>> shown({"verdict": "reproduced", "headline": "indicative"})
      'indicative (interval: reproduced)'
      >>> shown({"verdict": "refuted", "headline": "refuted"})
      'refuted'
    """
    verdict_, head = decision["verdict"], decision.get("headline", decision["verdict"])
    return head if head.startswith(verdict_) else f"{head} (interval: {verdict_})"


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
      >>> from experiments.harness.stats import evidence
      >>> evidence(None, coverage=0.5, substitute=False, delta=0.01)["pairs"]
      0
    """
    return {
        "coverage": coverage,
        "data": "SUBSTITUTE" if substitute else "real",
        "power": head["power"] if head else None,
        "p_reproduce_delta": head.get("p_reproduce_delta", head["power"]) if head else None,
        "p_refute_zero": head.get("p_refute_zero") if head else None,
        "delta": delta,
        "pairs": head["difference"]["n"] if head else 0,
    }
