"""Summary statistics shared by the experiments: mean ± std, paired-difference CIs, verdicts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.integrate
import scipy.stats

__all__ = [
    "RULES",
    "VERDICTS",
    "Contrast",
    "DecisionSpec",
    "combine_by",
    "decide_contrasts",
    "spec_hash",
    "error_rates",
    "holm",
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
    "verdict_of_sign",
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
      >>> from experiments.stats import verdict
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


VERDICTS = ("reproduced", "reproduced-smaller", "refuted", "contradicted", "inconclusive")
"""The outcomes of a comparative claim (see :func:`verdict`)."""


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


def headline_of(verdict_: str, coverage: float | None, substitute: bool) -> str:
    """What a verdict may claim: *indicative* below full coverage (an inconclusive interval
    stays inconclusive), labelled SUBSTITUTE at full coverage on substitute data. Coverage
    None: the source states no protocol to cover (the design is ours), so the verdict stands.
    """
    if verdict_ == "inconclusive":
        return verdict_
    if coverage is not None and coverage < 1.0 - 1e-9:
        return "indicative"
    return f"{verdict_} (SUBSTITUTE data)" if substitute else verdict_


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
      >>> from experiments.stats import error_rates
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
    chi = scipy.stats.chi(df, scale=sd / np.sqrt(df))  # the law of the sample SD

    def p_refute(mu: float) -> float:
        def density(s: float) -> float:
            upper, lower = min(c * s, delta - c * s), -c * s  # upper > lower for every s > 0
            cdf = scipy.stats.norm.cdf
            return (cdf((upper - mu) / se) - cdf((lower - mu) / se)) * chi.pdf(s)

        lo_s, hi_s = chi.ppf(1e-12), chi.isf(1e-12)  # the law of s, where it has mass
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
      >>> from experiments.stats import holm
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


def decide(
    diff: dict,
    claimed_sign: int,
    delta: float,
    *,
    coverage: float,
    substitute: bool = False,
    rule: str = CURRENT_RULE,
) -> dict:
    """The verdict of a comparative claim, with the evidence it rests on.

    With the paired interval ``[lo, hi]`` of ``arm - baseline``, the claim "the difference
    has sign ``claimed_sign`` and size about ``delta``" (``delta > 0``, the paper's effect) is
    decided by :func:`verdict` on the interval in the claimed direction (or by the older
    rule named ``rule``, see :data:`RULES`).

    ``coverage`` is the fraction of the paper's protocol (iterations or epochs) the run
    covered. Below 1 the headline is ``indicative``: the verdict is reported, but the run
    cannot reproduce or refute the paper's number. At full coverage on a substitute dataset
    the headline carries the label, e.g. ``"refuted (SUBSTITUTE data)"``.

    Returns:
      ``{"verdict", "headline", "delta", "power", "pairs_for_80pct", "coverage",
      "substitute", "rule", "p_reproduce_delta", "p_refute_zero", "p_refute_delta"}``,
      where ``power`` (= ``p_reproduce_delta``) and the two refutation rates are those of
      this design (its ``n`` and observed ``std``, :func:`error_rates`).

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
        verdict_ = RULES[rule](lo, hi, delta)
    n, sd = int(diff.get("n", 0)), float(diff.get("std", float("nan")))
    headline = headline_of(verdict_, coverage, substitute)
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
      >>> from experiments.stats import evidence
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


# ------------------------------------------------------------------------------- specs
@dataclasses.dataclass(frozen=True)
class Contrast:
    """One stated comparison: ``other - base`` in the cell ``cell`` (a rate, say), claimed to
    have sign ``sign`` and the paper's size ``delta`` (its own difference for that cell).

    ``claim`` names the sub-claim it belongs to; ``source`` says where the paper states it.
    """

    claim: str
    other: str
    base: str
    cell: str
    sign: int
    delta: float
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.other} - {self.base} @ {self.cell}"


@dataclasses.dataclass(frozen=True)
class DecisionSpec:
    """A claim's decision, fixed before its data: what is compared, against what, and how
    the cells combine.

    Attributes:
      claims: ``{key: (statement, combination)}``; the combination is one of
        :data:`COMBINATIONS` (how that sub-claim's cells make its verdict).
      contrasts: every stated comparison, each decided by :func:`verdict` against its own δ.
      pairs: the planned number of paired seeds.
      pooling: how the headline pools cells (words; "none": the sub-claims are the headline).
      control: the positive control (a contrast the design must reproduce before anything is
        decided from it), or None.
      control_needs: the verdict the control must reach.
      rule: the verdict rule (:data:`RULES`).
      headline: the sub-claims the headline combines (all when empty).
    """

    claims: dict[str, tuple[str, str]]
    contrasts: tuple[Contrast, ...]
    pairs: int
    pooling: str = "none"
    control: Contrast | None = None
    control_needs: tuple[str, ...] = ("reproduced",)
    rule: str = CURRENT_RULE
    headline: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecisionSpec:
        """The spec :meth:`to_json` wrote (as recorded in a results file)."""
        control = data.get("control")
        return cls(
            claims={k: tuple(v) for k, v in data["claims"].items()},
            contrasts=tuple(Contrast(**c) for c in data["contrasts"]),
            pairs=data["pairs"],
            pooling=data.get("pooling", "none"),
            control=None if control is None else Contrast(**control),
            control_needs=tuple(data.get("control_needs", ("reproduced",))),
            rule=data.get("rule", CURRENT_RULE),
            headline=tuple(data.get("headline", ())),
        )


def spec_hash(spec: dict[str, Any] | DecisionSpec) -> str:
    """A short hash of a decision spec's canonical JSON (what the results file records).

    Examples:
      >>> from experiments.stats import spec_hash
      >>> spec_hash({"b": 1, "a": [0.5]}) == spec_hash({"a": [0.5], "b": 1})
      True
    """
    if isinstance(spec, DecisionSpec):
        spec = spec.to_json()
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _almost_all(decisions: list[dict]) -> dict:
    """ "In almost all cases": reproduced when every cell but at most one is reproduced (in
    either wording) and none is contradicted; else as :func:`combine_decisions`."""
    verdicts = [d["verdict"] for d in decisions]
    ok = [v in ("reproduced", "reproduced-smaller") for v in verdicts]
    if len(decisions) >= 3 and sum(ok) >= len(ok) - 1 and "contradicted" not in verdicts:
        out = combine_decisions([d for d, good in zip(decisions, ok, strict=True) if good])
        return out
    return combine_decisions(decisions)


COMBINATIONS: dict[str, Callable[[list[dict]], dict]] = {
    "every": lambda ds: combine_decisions(ds, every=True),
    "all": combine_decisions,
    "almost-all": _almost_all,
}
"""How a sub-claim's cells combine: ``every`` (the claim asserts each cell: one refuted cell
refutes it), ``all`` (every cell reproduced / refuted; else inconclusive), ``almost-all``
(all but one cell reproduced, none contradicted, with three or more cells)."""


def combine_by(combination: str, decisions: list[dict]) -> dict:
    """The sub-claim's verdict from its cells' decisions under ``combination``."""
    return COMBINATIONS[combination](decisions)


def decide_contrasts(
    spec: DecisionSpec,
    paired: Callable[[str, str], tuple[list[float], list[float]]],
    *,
    coverage: float,
    substitute: bool = False,
    control_pairs: int | None = None,
) -> dict[str, Any]:
    """Decides every contrast of ``spec`` whose data exist, and combines each sub-claim.

    The positive control is decided once it has ``control_pairs`` pairs (default: the spec's
    planned ``pairs``); before that it is pending.

    ``paired(arm, cell)`` returns the arm's per-seed values in that cell, and the seeds, as
    ``(values, seeds)``; a contrast is decided on the seeds both sides have (at least two).

    Returns:
      ``{"claims": {key: {"claim", "combination", "cells", verdict fields}}, "control":
      decision or None, "control_passed": bool, or None while the control has fewer than
      the spec's planned pairs (or none), "rule"}``.
    """

    def one(c: Contrast) -> dict | None:
        (bv, bs), (ov, os_) = paired(c.base, c.cell), paired(c.other, c.cell)
        b, o = dict(zip(bs, bv, strict=True)), dict(zip(os_, ov, strict=True))
        common = sorted(set(b) & set(o))
        if len(common) < 2:
            return None
        diff = paired_difference([b[x] for x in common], [o[x] for x in common])
        decision = decide(
            diff, c.sign, c.delta, coverage=coverage, substitute=substitute, rule=spec.rule
        )
        return {"comparison": c.label, "source": c.source, "difference": diff, **decision}

    claims = {}
    for key, (text, combination) in spec.claims.items():
        cells = [d for c in spec.contrasts if c.claim == key if (d := one(c)) is not None]
        claims[key] = {
            "claim": text,
            "combination": combination,
            "cells": cells,
            **combine_by(combination, cells),
        }
    control = one(spec.control) if spec.control is not None else None
    # Decided only at the planned number of pairs: before that the control is pending (None).
    needed = spec.pairs if control_pairs is None else control_pairs
    pending = control is None or control["difference"]["n"] < needed
    passed = None if pending else control["verdict"] in spec.control_needs
    return {"claims": claims, "control": control, "control_passed": passed, "rule": spec.rule}
