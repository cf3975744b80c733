"""The protocol of :mod:`experiments.claims.relu_gradient`: presets, decision spec, paper
constants and the helpers they need."""

from __future__ import annotations

import dataclasses

NAME = "relu_gradient"


CLAIM_TEXT = (
    '"the expected value of the backpropagated gradient is magically independent of the '
    'dropout probability p" (a ReLU neuron under inverted dropout); without the inverted '
    "scaling it would shrink by (1 - p); 'the learning signal passing backward through the "
    "network remains stable'"
)


SOURCE = "seed 000 (explainer 'Inverted Dropout'), section 'A Symphony of Components'"


ARMS = ("inverted", "non_inverted")


ARM_NOTES = {
    "inverted": "y = x m / (1 - p)  (dropjax.dropout)",
    "non_inverted": "y = x m  (dropjax.keep_mask, no rescaling: the original formulation)",
}


UNIT_CASE = "unit_linear_loss"


MECHANISM_CASES = ("unit_mse", "dropout_before_relu")


NETWORK_CASES = ("deep_linear_loss", "deep_ce")


CASES = (UNIT_CASE, *MECHANISM_CASES, *NETWORK_CASES)


CASE_NOTES = {
    "unit_linear_loss": "relu(x W1 + b1) -> dropout -> linear read-out, loss = mean output",
    "unit_mse": "relu(x W1 + b1) -> dropout -> linear read-out, squared error",
    "dropout_before_relu": "dropout(x) -> relu(. W1 + b1) -> linear read-out, linear loss",
    "deep_linear_loss": "depth x [relu layer -> dropout] -> scalar read-out, linear loss",
    "deep_ce": "depth x [relu layer -> dropout] -> 10-way softmax cross-entropy",
}


WRT = ("x", "W1")


REFS = ("g0", "q_g0")  # the no-dropout gradient; the non-inverted unit's prediction (1 - p) g0


TOL = 0.05
"""Relative deviation below which ``E g = g_ref`` counts as holding (see the docstring)."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """The networks, rates and Monte Carlo budget of one preset.

    Attributes:
      d_in: input features.
      width: units per hidden layer.
      depth: hidden layers of the deep cases.
      batch: inputs per network.
      rates: dropout rates p.
      seeds: networks, one per seed.
      chunks: chunk means per Monte Carlo estimate.
      chunk: masks per chunk (drawn by one call).
    """

    d_in: int
    width: int
    depth: int
    batch: int
    rates: tuple[float, ...]
    seeds: int
    chunks: int
    chunk: int


PRESETS = {
    "smoke": Preset(8, 16, 3, batch=4, rates=(0.2, 0.6), seeds=3, chunks=16, chunk=256),
    "quick": Preset(16, 32, 4, batch=4, rates=(0.1, 0.3, 0.5, 0.7), seeds=8, chunks=40, chunk=400),
    "paper": Preset(
        32, 64, 6, batch=8, rates=(0.1, 0.3, 0.5, 0.7), seeds=30, chunks=100, chunk=1000
    ),
}


# ---------------------------------------------------------------------------- decide
_PAIR_CHECK = {"reproduced": "within", "refuted": "outside", "inconclusive": "undecided"}


# ---------------------------------------------------------------------------- run
PRECISE_STATEMENT = (
    "Unit level: for a ReLU unit followed by inverted dropout, with the cotangent arriving at "
    "the unit fixed, E[dL/dz] = dL/dz at p = 0 for every p, since E[m/(1-p)] = 1; without the "
    "1/(1-p) scaling it is (1-p) times that. Network level: in a deep ReLU net with dropout "
    "after every hidden layer, a mask changes the next layer's ReLU pattern (and a non-linear "
    "loss's cotangent), so E[grad] moves with p; E[grad L] = grad E[L], and E[L] carries a "
    "p-dependent penalty unless L is affine in each mask entry."
)


DATA = (
    "synthetic Gaussian inputs and random He-initialised networks (the seed names no data or "
    "network)"
)
