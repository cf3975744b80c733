"""The experiments' statistics, in one module: summaries, paired intervals, the decision
rule, its error rates, decision specs fixed before the data, and tolerance verdicts.

* Summaries and intervals: :func:`mean_std`, :func:`mean_ci`, :func:`paired_difference`,
  :func:`holm`; the design's :func:`power`, :func:`error_rates` and :func:`pairs_needed`.
* A comparative claim ("arm beats baseline by about δ") is decided on a paired interval by
  :func:`verdict` (the rule, :data:`RULES`), through :func:`decide`, and a claim's cells
  combine by :func:`combine_decisions`; :func:`headline_of` and :func:`evidence` say how far
  the run's protocol carries the verdict.
* A claim's :class:`DecisionSpec` (its :class:`Contrast` s, δ per cell, how sub-claims
  combine, its positive control) is fixed before the data, recorded by :func:`spec_hash`
  (and by :func:`spec_record` at summarise time), and decided by :func:`decide_contrasts`.
* An analytic claim ("input dropout is L2", "weight scaling is exact") is decided against a
  tolerance: :func:`point`, :func:`tolerance_check`, :func:`tolerance_verdict`,
  :func:`decide_tolerance`, :func:`combine_tolerance`, :func:`tolerance_power`.

Examples:
  >>> from experiments.harness.stats import paired_difference, verdict
  >>> d = paired_difference([0.90, 0.91, 0.92, 0.93], [0.91, 0.921, 0.928, 0.941])
  >>> verdict(d["ci_low"], d["ci_high"], delta=0.0068)
  'reproduced'
"""

from experiments.harness.stats._intervals import (
    error_rates,
    holm,
    mean_ci,
    mean_std,
    paired_difference,
    pairs_needed,
    power,
)
from experiments.harness.stats._rule import (
    CURRENT_RULE,
    RULES,
    VERDICTS,
    combine,
    combine_decisions,
    decide,
    evidence,
    fmt,
    fmt_diff,
    headline_of,
    shown,
    verdict,
    verdict_now,
    verdict_of_sign,
)
from experiments.harness.stats._spec import (
    COMBINATIONS,
    Contrast,
    DecisionSpec,
    combine_by,
    decide_contrasts,
    spec_hash,
    spec_record,
)
from experiments.harness.stats._tolerance import (
    TOLERANCE_CLAIMS,
    combine_tolerance,
    decide_tolerance,
    fmt_power,
    point,
    tolerance_check,
    tolerance_power,
    tolerance_verdict,
)

__all__ = [
    "COMBINATIONS",
    "CURRENT_RULE",
    "RULES",
    "TOLERANCE_CLAIMS",
    "VERDICTS",
    "Contrast",
    "DecisionSpec",
    "combine",
    "combine_by",
    "combine_decisions",
    "combine_tolerance",
    "decide",
    "decide_contrasts",
    "decide_tolerance",
    "error_rates",
    "evidence",
    "fmt",
    "fmt_diff",
    "fmt_power",
    "headline_of",
    "holm",
    "mean_ci",
    "mean_std",
    "paired_difference",
    "pairs_needed",
    "point",
    "power",
    "shown",
    "spec_hash",
    "spec_record",
    "tolerance_check",
    "tolerance_power",
    "tolerance_verdict",
    "verdict",
    "verdict_now",
    "verdict_of_sign",
]
