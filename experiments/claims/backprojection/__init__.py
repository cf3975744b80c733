"""Bouthillier et al. (2015), Sections 3.1 and 5.1-5.2: dropout noise projected back into
the input space, and a deterministic network trained on the projections (Figures 2, 4, 5).

**Back-projection (Eq. 4-8).** For a trained ReLU MLP with clean hidden activations
:math:`f^{(i)}` and dropout-noised ones :math:`\\tilde f^{(i)}` (Eq. 6: noise at every layer
up to :math:`i`, with the inverted scaling of Eq. 9/10), find an input :math:`x^{(i)*}`
whose clean activations at layer :math:`i` match the noisy activations at :math:`x`:
:math:`\\min \\lVert f^{(i)}(x^{(i)*}) - \\tilde f^{(i)}(x)\\rVert^2`, one :math:`x^{(i)*}`
per hidden layer as in Eq. 8 (``dropjax.backproject``). The paper takes 20 plain gradient
steps; a ReLU MLP is badly conditioned for gradient steps (this experiment's earlier version,
8 heavy-ball steps on one joint x*, left 61 % / 87 % of the noise unmatched at layers 1/2),
so we minimise the same objective with damped Gauss-Newton
(``method="gauss_newton"``: per-example conjugate gradient on the Gauss-Newton system). No
box constraint: the paper states none, and in [0, 1] the second layer's noise cannot be
matched (the results show it). The matching error reported is

.. math::

    e_i = \\lVert f^{(i)}(x^{(i)*}) - \\tilde f^{(i)}(x) \\rVert \\,/\\,
          \\lVert \\tilde f^{(i)}(x) - f^{(i)}(x) \\rVert

pooled over the examples (Frobenius norms): 1 is no better than :math:`x` itself, 0 an
exact match. The paper reports no number for it. For contrast we also report one
:math:`x^*` for both layers at once (the paper's training shortcut, with
:math:`\\lambda_i` = 1 / the layer's noise energy); its Appendix 8.1 argues such an
:math:`x^*` cannot match both layers, and the numbers agree.

**Figures 2 and 5.** On the trained dropout network (replica 0), for a few test digits,
several :math:`x^{(i)*}` per hidden layer, each from its own mask: under dropout at 0.5
(Figure 2) and under random dropout, :math:`\\rho \\sim U(0, 0.8)` per layer and example
(Eq. 10, Figure 5). The paper draws these from an autoencoder with hidden dropout 0.4; we
use the classifier MLP, which the paper also uses for Figure 4.

**Training on back-projected samples (Figure 4, Sec. 5.2).** Three arms with the same seeds
(identical initial parameters, data order and dropout keys):

* ``plain``: the MLP without noise;
* ``dropout``: hidden dropout at 0.5 (inverted);
* ``backproject``: a deterministic network. In each step half the batch is the clean
  :math:`x`; the other half is split evenly over the hidden layers and replaced by
  :math:`x^{(i)*}` (the paper's inputs :math:`(x, x^{(1)*}, x^{(2)*})`), each computed from
  the *current* parameters (no gradient through it) with fresh masks. The paper alternates
  an epoch of :math:`x` with an epoch of :math:`x^*` generated at the epoch's start; mixing
  within the batch keeps the same half-and-half proportion with fresher :math:`x^*`.

**Decision.** The claim: "Dropout can be replicated by projecting the noise back into the
input and training a neural network deterministically on this generated data. There is not
significant drop in accuracy". Tested as: backproject's test error is lower than plain's
(:func:`experiments.harness.stats.decide`, claimed sign −, paired over seeds), the headline;
with two companions: dropout − plain (does dropout help in this regime at all?) and backproject −
dropout, decided as a drop (claimed sign +), then read for the paper's "no significant drop"
(:func:`no_drop_verdict`: a drop reaching δ contradicts it; anything else decided supports it).
The paper gives no numbers (Figure 4 is a plot), so δ = ``DELTA`` = 0.5 points of test error
is our choice of the smallest gain worth the name in this regime. The verdict line gives both
parts (e.g. ``vs plain: inconclusive; no significant drop vs dropout: indicative (interval:
contradicted) (a drop)``); the evidence record (power, pairs) rests on backproject −
plain. Coverage is the fraction
of the paper's training examples seen (501 epochs of 50,000 plus 150 of 60,000); below 1 the
headline is *indicative*.

Presets: ``smoke``: scikit-learn's 8x8 digits, a 32-16 MLP, a few dozen steps. ``quick``:
the first 2,000 MNIST training images (a small training set, where dropout's advantage over
a plain network shows within 40 epochs = 800 iterations; about 3 CPU-minutes on one core),
a 512-256 MLP, 4 paired replicas; training x(i)* with 3 / 10 Gauss-Newton steps (layers 1 /
2) of 10 CG iterations each. ``paper``: all 60,000 images, a 1500-1500 MLP (one of the
paper's four), 501 epochs (without the paper's 150 further epochs on train + validation).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from experiments.claims.backprojection._cells import (
    decide,
    load_data,
    matching_error,
    measure,
    no_drop_verdict,
    summarise,
)
from experiments.claims.backprojection._protocol import (
    CLAIM_TEXT,
    DELTA,
    FLAT_LAST,
    NAME,
    PAPER_EXAMPLES,
    PAPER_QUOTES,
    PRESETS,
    SCALED_REASON,
    SOURCE,
    BackprojMLP,
    backproject_layer,
    noisy_activations,
    split_sizes,
)
from experiments.claims.backprojection._render import (
    render,
    render_figures,
)
from experiments.harness import stats
from experiments.harness.claim import Claim, one_shot
from experiments.harness.protocols import converged
from experiments.harness.results import RunContext


def measure_all(ctx: RunContext, checkpoint_dir=None, budget=None) -> dict[str, Any]:
    """Trains plain, dropout and back-projection arms; back-projects on the trained nets.

    Resumable arm by arm (``checkpoint_dir`` and ``budget`` come from the grid; see
    :func:`experiments.claims.backprojection._cells.measure`)."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset, preset.train_size)
    seeds = [ctx.seed + r for r in range(ctx.replicas or preset.replicas)]
    measured = measure(preset, data, seeds, ctx.quiet, checkpoint_dir, budget)
    cfg = measured["train"]
    summary = summarise(measured["arms"])
    coverage = min(1.0, cfg.iterations * cfg.batch_size / PAPER_EXAMPLES)
    results = {
        "source": SOURCE,
        "claim": CLAIM_TEXT,
        "config": {
            "model": "ReLU MLP, hidden dropout only (input noise is already in input space)",
            **{k: v for k, v in dataclasses.asdict(preset).items() if k != "dataset"},
            "solver": "dropjax.backproject(method='gauss_newton'), no box",
            "train": dataclasses.asdict(cfg),
            "metric": "test error (%) after the last epoch",
            "visualised_network": "replica 0 of the dropout arm",
            "coverage_basis": f"training examples seen / {PAPER_EXAMPLES} (501 epochs of "
            "50,000 + 150 of 60,000)",
        },
        "data": data.describe(),
        "seeds": seeds,
        "paper": {
            "quotes": PAPER_QUOTES,
            "protocol": "MLPs 2500-2500, 2500-1250, 1500-1500, 1500-750; 501 epochs + 150; "
            "x* regenerated every epoch with 20 SGD steps (lr 300 layer 1, 30 layer 2); "
            "training alternates an epoch of x and an epoch of x*",
        },
        "matching": measured["matched"]["records"],
        "training_matching": measured["training_matching"],
        **summary,
        **decide(summary["errors"], coverage, preset.scaled),
        "arms": measured["arms"],
    }
    if preset.scaled:  # the declared convergence check; a verdict stands only if it holds
        flat = converged(measured["arms"], FLAT_LAST, DELTA)
        results["scaled"] = {"reason": SCALED_REASON, **flat}
        if not flat["all_flat"]:
            results["verdict"] = f"indicative (not converged): {results['verdict']}"
    results["figures"] = render_figures(
        results, measured["x_viz"], measured["matched"]["samples"], ctx.out_dir, ctx.preset
    )
    results["figure"] = results["figures"][0]
    return results


run = one_shot(PRESETS, measure_all, resumable=True)


def spec_for(preset: str) -> stats.DecisionSpec:
    """The decision, fixed before the data: backproject − plain (claimed a gain, the
    headline), dropout − plain (does dropout help here at all?) and backproject − dropout
    (decided as a drop, read for the paper's "no significant drop"), test error in
    percentage points, each against ``DELTA`` (our choice: Figure 4 gives no values)."""
    rows = (
        ("vs plain", "backproject", "plain", -1),
        ("dropout helps", "dropout", "plain", -1),
        ("no significant drop", "backproject", "dropout", +1),
    )
    return stats.DecisionSpec(
        claims={
            "vs plain": ("back-projection lowers test error vs plain", "all"),
            "dropout helps": ("dropout lowers test error vs plain (context)", "all"),
            "no significant drop": (
                "no significant drop vs dropout: contradicted by a drop reaching δ",
                "all",
            ),
        },
        contrasts=tuple(
            stats.Contrast(k, arm, base, "test error (pp)", sign, DELTA, SOURCE)
            for k, arm, base, sign in rows
        ),
        pairs=PRESETS[preset].replicas,
        pooling="none: paired over seeds",
        headline=("vs plain", "no significant drop"),
    )


CLAIM = Claim(
    NAME,
    "Dropout noise back-projected to the input (Bouthillier et al. Fig. 2/4/5)",
    PRESETS,
    run,
    render,
    spec=spec_for,
)


__all__ = [
    "no_drop_verdict",
    "BackprojMLP",
    "CLAIM",
    "DELTA",
    "NAME",
    "backproject_layer",
    "decide",
    "matching_error",
    "noisy_activations",
    "split_sizes",
]
