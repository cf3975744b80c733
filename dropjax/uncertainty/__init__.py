r"""Uncertainty, calibration and selective-prediction metrics for Monte Carlo predictions.

Conventions used throughout this module:

* Classification inputs are *probabilities* (not logits). Stacks of Monte Carlo
  predictions put the sample axis first, ``(T, N, C)``: ``T`` stochastic forward
  passes, ``N`` examples, ``C`` classes. Metrics that score a single predictive
  distribution take the already averaged ``(N, C)`` array.
* Logarithms are natural, so entropies and likelihoods are in nats.
* Every function works under :func:`jax.jit`. Shapes are always checked (they are
  static). Values (non-negative probabilities summing to one, labels in range,
  finite scores) are checked only when the inputs are concrete, i.e. outside of a
  trace; traced inputs skip the value checks. Invalid inputs raise ``ValueError``.
  The ranking metrics (:func:`auroc`, :func:`aupr`, :func:`fpr_at_tpr`,
  :func:`accuracy_coverage_curve`, :func:`aurc`) return NaN instead when traced inputs
  are invalid (a NaN or infinite score, a label other than 0/1, a ``tpr`` outside
  ``(0, 1]``), so an invalid input under :func:`jax.jit` is never a plausible number.
* ``num_bins`` and ``bins`` arguments are Python integers and must be static
  under :func:`jax.jit` (e.g. ``jax.jit(f, static_argnames="num_bins")``).

The plotting helpers need matplotlib (``pip install dropjax[plot]``), which is
imported only when they are called.

The functions live in private modules by topic (scores, calibration, ranking, selective
prediction, plots) and are all public here, under ``dropjax.uncertainty``.
"""

from __future__ import annotations

from dropjax.uncertainty._calibration import (
    adaptive_calibration_error as adaptive_calibration_error,
)
from dropjax.uncertainty._calibration import (
    classwise_calibration_error as classwise_calibration_error,
)
from dropjax.uncertainty._calibration import (
    expected_calibration_error as expected_calibration_error,
)
from dropjax.uncertainty._calibration import temperature_scale as temperature_scale
from dropjax.uncertainty._plots import reliability_diagram as reliability_diagram
from dropjax.uncertainty._plots import uncertainty_histogram as uncertainty_histogram
from dropjax.uncertainty._ranking import aupr as aupr
from dropjax.uncertainty._ranking import auroc as auroc
from dropjax.uncertainty._ranking import fpr_at_tpr as fpr_at_tpr
from dropjax.uncertainty._scores import brier_score as brier_score
from dropjax.uncertainty._scores import expected_entropy as expected_entropy
from dropjax.uncertainty._scores import gaussian_nll as gaussian_nll
from dropjax.uncertainty._scores import mc_negative_log_likelihood as mc_negative_log_likelihood
from dropjax.uncertainty._scores import mutual_information as mutual_information
from dropjax.uncertainty._scores import negative_log_likelihood as negative_log_likelihood
from dropjax.uncertainty._scores import predictive_entropy as predictive_entropy
from dropjax.uncertainty._scores import predictive_variance as predictive_variance
from dropjax.uncertainty._scores import regression_moments as regression_moments
from dropjax.uncertainty._scores import variation_ratio as variation_ratio
from dropjax.uncertainty._selective import accuracy_coverage_curve as accuracy_coverage_curve
from dropjax.uncertainty._selective import aurc as aurc

__all__ = [
    "accuracy_coverage_curve",
    "adaptive_calibration_error",
    "aupr",
    "aurc",
    "auroc",
    "brier_score",
    "classwise_calibration_error",
    "expected_calibration_error",
    "expected_entropy",
    "fpr_at_tpr",
    "gaussian_nll",
    "mc_negative_log_likelihood",
    "mutual_information",
    "negative_log_likelihood",
    "predictive_entropy",
    "predictive_variance",
    "regression_moments",
    "reliability_diagram",
    "temperature_scale",
    "uncertainty_histogram",
    "variation_ratio",
]

# One public home: each function reports itself as dropjax.uncertainty.<name> (reprs, pickling,
# the API reference), wherever its private module is.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
