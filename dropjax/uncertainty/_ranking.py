r"""Ranking metrics for out-of-distribution and error detection: AUROC, AUPR, FPR@TPR.

Positives (label 1) should score higher. Concrete invalid inputs raise; traced ones give NaN
(see :mod:`dropjax.uncertainty`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src import checks as _c

__all__ = ["aupr", "auroc", "fpr_at_tpr"]


def auroc(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Area under the ROC curve, with ties counted as one half (as scikit-learn).

    Uses the Mann-Whitney form with the positives' average ranks:

    .. math::

        \mathrm{AUROC} = \frac{1}{n_+ n_-}\sum_{i: y_i = 1}
        \Bigl(\#\{j: y_j = 0, s_j < s_i\} + \tfrac12\#\{j: y_j = 0, s_j = s_i\}\Bigr)

    Ranks come from a sort and binary searches, so shapes are static and the function
    is jit-able. Higher scores should indicate the positive class (e.g. uncertainty
    scores with out-of-distribution or misclassified examples as positives).

    Args:
      scores: real scores ``(N,)``.
      labels: binary labels ``(N,)``, booleans or 0/1.

    Returns:
      Scalar array in ``[0, 1]``; NaN under jit when only one class is present, a score is
      NaN or infinite, or a label is not 0/1.

    Raises:
      ValueError: on invalid shapes, non-finite scores, non-binary labels, or (when
        concrete) labels containing a single class.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import auroc
      >>> s = jnp.array([0.1, 0.4, 0.4, 0.8])
      >>> print(round(float(auroc(s, jnp.array([0, 0, 1, 1]))), 4))  # a tie counts 1/2
      0.875
    """
    s = _c.check_scores(scores, "scores")
    pos = _c.check_binary(labels, "labels", s.shape[0])
    if _c.is_concrete(pos):
        n_pos_c = int(np.sum(np.asarray(pos)))
        if n_pos_c == 0 or n_pos_c == s.shape[0]:
            raise ValueError("auroc needs both positive and negative labels.")
    order = jnp.argsort(s)
    s_sorted = s[order]
    neg_sorted = jnp.logical_not(pos[order]).astype(jnp.int32)
    neg_cum = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(neg_sorted)])
    below = neg_cum[jnp.searchsorted(s_sorted, s, side="left")]  # negatives with s_j < s_i
    at_or_below = neg_cum[jnp.searchsorted(s_sorted, s, side="right")]  # s_j <= s_i
    n_neg = neg_cum[-1].astype(s.dtype)
    n_pos = s.shape[0] - n_neg
    # Per-positive win rate in [0, 1], then averaged: keeps float32 precise for large N.
    wins = (below + at_or_below).astype(s.dtype) / (2.0 * n_neg)
    return _c.nan_unless_valid(jnp.sum(jnp.where(pos, wins, 0.0)) / n_pos, s, labels)


def _check_two_classes(pos: jax.Array, fn_name: str, need_negatives: bool = True) -> None:
    if _c.is_concrete(pos):
        n_pos = int(np.sum(np.asarray(pos)))
        if n_pos == 0 or (need_negatives and n_pos == pos.shape[0]):
            need = "positive and negative labels" if need_negatives else "a positive label"
            raise ValueError(f"{fn_name} needs {need}.")


def _descending_counts(s: jax.Array, pos: jax.Array):
    """Scores sorted decreasingly: positives, cumulative true positives, tied-group ends.

    ``end[i]`` is the last sorted position whose score equals the ``i``-th largest score, so
    a threshold at that score counts the whole tied group as predicted positive.
    """
    order = jnp.argsort(-s, stable=True)
    neg_score = -s[order]  # ascending
    pos_desc = pos[order]
    tp = jnp.cumsum(pos_desc.astype(s.dtype))
    end = jnp.searchsorted(neg_score, neg_score, side="right") - 1
    return pos_desc, tp, end


def aupr(scores: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Area under the precision-recall curve as average precision (as scikit-learn).

    The positives are the examples with label 1 (e.g. out-of-distribution or misclassified
    inputs, with an uncertainty score that should be higher for them). With thresholds at
    every distinct score, from the highest down, and :math:`P_k, R_k` the precision and
    recall when every example scoring at least the ``k``-th threshold is called positive:

    .. math::

        \mathrm{AP} = \sum_k (R_k - R_{k-1})\, P_k, \qquad R_0 = 0

    which is :func:`sklearn.metrics.average_precision_score`: no interpolation, and tied
    scores enter together (one step of the curve), so the order of tied examples does not
    matter. Computed as the mean over positives of the precision at the end of their tied
    group, with a sort and binary searches (static shapes, jit-able).

    Args:
      scores: real scores ``(N,)`` (higher = more likely positive).
      labels: binary labels ``(N,)``, booleans or 0/1.

    Returns:
      Scalar array in ``[0, 1]`` (the fraction of positives for a constant score); NaN
      under jit when there is no positive, a score is NaN or infinite, or a label is not
      0/1.

    Raises:
      ValueError: on invalid shapes, non-finite scores, non-binary labels, or (when
        concrete) labels without a positive.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import aupr
      >>> s = jnp.array([0.9, 0.8, 0.7, 0.1])
      >>> print(round(float(aupr(s, jnp.array([1, 0, 1, 0]))), 4))  # (1 + 2/3) / 2
      0.8333
    """
    s = _c.check_scores(scores, "scores")
    pos = _c.check_binary(labels, "labels", s.shape[0])
    _check_two_classes(pos, "aupr", need_negatives=False)
    pos_desc, tp, end = _descending_counts(s, pos)
    precision_at_end = tp[end] / (end + 1).astype(s.dtype)
    n_pos = tp[-1]
    return _c.nan_unless_valid(
        jnp.sum(jnp.where(pos_desc, precision_at_end, 0.0)) / n_pos, s, labels
    )


def fpr_at_tpr(scores: ArrayLike, labels: ArrayLike, tpr: float = 0.95) -> jax.Array:
    r"""False-positive rate at the first ROC operating point whose true-positive rate is >= ``tpr``.

    Positives are label 1 and should score higher (``FPR@95`` of out-of-distribution
    detection: positives are the OOD inputs, scores an uncertainty). The ROC operating
    points are those of :func:`sklearn.metrics.roc_curve` with ``drop_intermediate=False``:
    one threshold per distinct score, an example predicted positive when its score is
    ``>=`` the threshold (tied examples switch together). Scanning thresholds from the
    highest down, the result is the FPR of the first point with
    :math:`\mathrm{TPR} = \mathrm{TP}/n_+ \ge` ``tpr`` (compared as
    :math:`\mathrm{TP} \ge \mathrm{tpr} \cdot n_+` with a few ulps of slack, so that a
    target of exactly :math:`k/n_+` needs exactly ``k`` true positives):

    .. math::

        \mathrm{FPR@tpr} = \min\{\mathrm{FPR}(\theta) : \mathrm{TPR}(\theta) \ge \mathrm{tpr}\}

    No interpolation between operating points is done, so the value is attained by a real
    threshold (the lowest FPR that reaches the target recall; ties in score can make the
    attained TPR overshoot the target).

    Args:
      scores: real scores ``(N,)`` (higher = more likely positive).
      labels: binary labels ``(N,)``, booleans or 0/1.
      tpr: the target true-positive rate in ``(0, 1]``.

    Returns:
      Scalar array in ``[0, 1]`` (lower is better); NaN under jit when a class is absent,
      a score is NaN or infinite, a label is not 0/1, or a traced ``tpr`` is outside
      ``(0, 1]``.

    Raises:
      ValueError: on invalid shapes, non-finite scores, non-binary labels, a Python
        ``tpr`` outside ``(0, 1]``, or (when concrete) labels containing a single class.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import fpr_at_tpr
      >>> s = jnp.array([0.9, 0.8, 0.7, 0.6, 0.5])
      >>> y = jnp.array([1, 0, 1, 0, 0])
      >>> print(round(float(fpr_at_tpr(s, y, tpr=1.0)), 4))  # both positives: threshold 0.7
      0.3333
    """
    s = _c.check_scores(scores, "scores")
    pos = _c.check_binary(labels, "labels", s.shape[0])
    if not isinstance(tpr, jax.core.Tracer) and not 0.0 < float(tpr) <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr!r}.")
    _check_two_classes(pos, "fpr_at_tpr")
    _, tp, end = _descending_counts(s, pos)
    n_pos = tp[-1]
    n_neg = s.shape[0] - n_pos
    # TP >= tpr * n_pos, with a few ulps of slack so that tpr = k / n_pos needs exactly k
    # true positives despite float rounding (XLA may divide by multiplying by 1 / n_pos).
    needed = jnp.asarray(tpr, s.dtype) * n_pos * (1 - 4 * jnp.finfo(s.dtype).eps)
    first = jnp.argmax(tp >= needed)
    last = end[first]
    fp = (last + 1).astype(s.dtype) - tp[last]
    return _c.nan_unless_valid(fp / n_neg, s, labels, tpr)
