r"""``relu_gradient``: is the expected backpropagated gradient independent of the dropout rate?

What the seed claims (seed 000, "A Symphony of Components"): "When we analyze a ReLU neuron
under the influence of inverted dropout, we find that the expected value of the
backpropagated gradient is magically independent of the dropout probability p. [...] as we
crank up the dropout rate [...] the average 'learning signal' passing backward through the
network remains stable. This is a wonderful, emergent property of the inverted scaling
factor, providing a more stable training dynamic than the original dropout formulation."
That is three statements, and the experiment decides each one separately:

1. **Unit level** (the statement as written): one ReLU unit :math:`h = \mathrm{relu}(z)`
   followed by inverted dropout :math:`y = h\,m/q`, :math:`m \sim \mathcal{B}(q)`,
   :math:`q = 1 - p`. With the cotangent :math:`c = \partial L/\partial y` that arrives at the
   unit held fixed (a linear read-out and a loss linear in it: case ``unit_linear_loss``),
   :math:`\partial L/\partial z = c\,(m/q)\,1[z > 0]`, so
   :math:`\mathbb{E}[\partial L/\partial z] = c\,1[z>0]` for every :math:`p`, because
   :math:`\mathbb{E}[m/q] = 1`. The same holds for :math:`\partial L/\partial x` and
   :math:`\partial L/\partial W_1` of a whole layer of such units.
2. **The role of the inverted scaling** (the seed's contrast with "the original dropout
   formulation"): without the :math:`1/q` factor, :math:`y = h\,m` (arm ``non_inverted``,
   built here from ``dropjax.keep_mask`` because dropjax has no such op), the same unit's
   expected gradient is :math:`q\,c\,1[z>0]`: it shrinks by :math:`(1 - p)`.
3. **Network level** ("the learning signal passing backward through the network remains
   stable"): a deep ReLU net with dropout after every hidden layer (``deep_linear_loss``:
   linear loss; ``deep_ce``: 10-way soft-max cross-entropy, the usual setting). Here a mask
   changes what lies downstream of it -- the pre-activations of the next layer and so its
   ReLU pattern, and the cotangent of a non-linear loss -- so :math:`\mathbb{E}[m/q\,\cdot
   (\text{mask-dependent factor})] \neq` the no-dropout gradient in general.

Two one-layer cases isolate those two mechanisms (reported per case, no headline verdict):
``unit_mse`` (squared error: the cotangent depends on the mask; equivalently
:math:`\mathbb{E}[L] = L_0 + \tfrac{p}{q}\sum_j (h_j v_j)^2` per example, the ``linear_l2``
penalty, whose gradient grows with :math:`p/q`) and ``dropout_before_relu`` (a mask feeding
a ReLU changes its pattern).

What is measured. For a fixed random He-initialised network and batch (one per seed), the
Monte Carlo mean over many masks of :math:`\partial L/\partial x` and
:math:`\partial L/\partial W_1`, drawn in chunks (one call draws a chunk of independent
masks; both arms use the same keys, so the same masks), against the no-dropout gradient
:math:`g_0`, and against the non-inverted unit's prediction :math:`q\,g_0`:

* the squared relative deviation :math:`\|\mathbb{E} g - g_{\mathrm{ref}}\|^2 /
  \|g_{\mathrm{ref}}\|^2`, estimated without bias as a U-statistic over chunks
  (:func:`deviation_stats`: the squared distance of the mean minus the trace of its
  covariance), with a Student-t interval over seeds (the mean square over networks); its
  square root is the relative deviation;
* the gain :math:`\langle \mathbb{E} g, g_0\rangle/\|g_0\|^2` (1 for "unchanged", :math:`q`
  for "shrunk by 1 - p"), the scalar "learning signal" of the figure.

How each is decided (tolerance ``TOL`` = 0.05, a 5 % relative deviation). A statement
"E g = g_ref" holds at one rate when the 95 % upper bound of the relative deviation lies
below ``TOL`` for both gradients (dL/dx and dL/dW1), fails when the lower bound of either
lies above ``TOL``, and is undecided otherwise. Over the rates: holds at every rate ->
**reproduced**; fails at some rate -> **refuted**; else **inconclusive** (the identity checks
and verdicts of :mod:`experiments.harness.stats`, on the relative deviation, whose interval is
the square root of the squared deviation's, clipped at 0). ``TOL`` is the
minimal effect worth telling apart: it is half the smallest shrink :math:`p` in the rate
grids (0.1), so the 5 % bands around :math:`g_0` and around :math:`q\,g_0` never overlap and
a reproduced unit-level verdict for one arm excludes the other arm's prediction.

* ``unit`` verdict: statement 1, inverted arm against :math:`g_0` in ``unit_linear_loss``;
* ``non_inverted_unit`` verdict: statement 2, non-inverted arm against :math:`q\,g_0` in the
  same case (reproduced = the expected gradient shrinks by exactly :math:`1 - p`, within
  ``TOL``);
* ``network`` verdict: statement 3, inverted arm against :math:`g_0` in both deep cases
  (refuted = the expected gradient of a deep net moves by more than ``TOL`` with :math:`p`);
* ``network_stability`` (comparative, :func:`experiments.harness.stats.decide`): "inverted dropout
  keeps the deep net's learning signal closer to :math:`g_0` than non-inverted dropout", the
  paired (per seed) difference of relative deviations of dL/dW1, non-inverted minus
  inverted, claimed sign +, with :math:`\delta = p` (the shrink the non-inverted unit shows,
  the seed's own effect), per case and rate, combined with
  :func:`experiments.harness.stats.combine_decisions`. The measure is the whole vector's deviation,
  so a gradient that vanishes counts as deviation 1, while one that turns or grows can
  deviate more: at high :math:`p` the non-inverted net's shrunken gradient can be the closer
  one (the table's gain columns show the component along :math:`g_0` separately).

Evidence. The seed gives no protocol, network or data: it states a property of an
expectation over masks. The checks here are exact expectations of fixed, fully specified
functions, estimated by Monte Carlo with the Monte Carlo error inside the intervals, so the
coverage is 1.0 (there is no protocol to fall short of) on synthetic inputs (nothing
substituted for data the seed names). The networks are random and untrained: a refuted
network-level verdict is a counterexample to a general statement; a reproduced one would
speak only for networks like these. The headline ``verdict`` reads
``"unit-level <unit>; network-level <network>"``.
"""

from __future__ import annotations

import time
from typing import Any

from experiments.claims.relu_gradient._cells import (
    _evidence,
    _ref_summary,
    config,
    decide,
    deviation_stats,
    init_params,
    make_batch,
    mc_gradient_moments,
    measure_seed,
    non_inverted_dropout,
    rate_check,
    summarise,
)
from experiments.claims.relu_gradient._protocol import (
    CASES,
    CLAIM_TEXT,
    DATA,
    NAME,
    NETWORK_CASES,
    PRECISE_STATEMENT,
    PRESETS,
    SOURCE,
    TOL,
    WRT,
    Preset,
)
from experiments.claims.relu_gradient._render import (
    plot,
    render,
)
from experiments.harness import plots, stats
from experiments.harness.claim import Claim, one_shot
from experiments.harness.results import RunContext


def measure_all(ctx: RunContext) -> dict[str, Any]:
    """Measure every seed, summarise over seeds, decide the three statements, plot."""
    preset = PRESETS[ctx.preset]
    seeds = ctx.seeds(preset.seeds)
    start = time.time()
    per_seed = [measure_seed(s, preset) for s in seeds]
    summary = summarise(per_seed, preset.rates)
    verdicts = decide(summary, preset.rates)
    results = dict(
        claim=CLAIM_TEXT,
        source=SOURCE,
        precise_statement=PRECISE_STATEMENT,
        config=config(preset, seeds),
        data=DATA,
        per_seed=per_seed,
        summary=summary,
        verdicts=verdicts,
        verdict_unit=verdicts["unit"],
        verdict_network=verdicts["network"],
        verdict=f"unit-level {verdicts['unit']}; network-level {verdicts['network']}",
        evidence=_evidence(len(per_seed)),
    )
    results["figure"] = plots.publish(plot, results, ctx.out_dir, ctx.preset, NAME)
    results["time_s"] = round(time.time() - start, 2)
    return results


run = one_shot(PRESETS, measure_all)


def spec_for(preset: str) -> stats.DecisionSpec:
    """The comparative part, fixed before the data: in each deep case and at each rate p,
    non-inverted minus inverted relative deviation of dL/dW1 from g0, claimed positive with
    δ = p (the shrinkage non-inverted dropout predicts); the analytic parts are decided by
    tolerance, outside this spec."""
    rates = PRESETS[preset].rates
    return stats.DecisionSpec(
        claims={
            "network_stability": (
                "inverted dropout keeps the deep gradient more stable than non-inverted dropout",
                "all",
            )
        },
        contrasts=tuple(
            stats.Contrast(
                "network_stability",
                "non_inverted",
                "inverted",
                f"{case} @ {r:g}",
                +1,
                float(r),
                SOURCE,
            )
            for case in NETWORK_CASES
            for r in rates
        ),
        pairs=PRESETS[preset].seeds,
        pooling="none: one paired interval per (case, rate) over networks",
    )


CLAIM = Claim(
    NAME,
    "Expected backprop gradient of ReLU nets with inverted dropout vs p",
    PRESETS,
    run,
    render,
    spec=spec_for,
)


__all__ = [
    "CASES",
    "CLAIM",
    "Preset",
    "TOL",
    "WRT",
    "_ref_summary",
    "deviation_stats",
    "init_params",
    "make_batch",
    "mc_gradient_moments",
    "non_inverted_dropout",
    "rate_check",
]
