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
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr
from jax.typing import ArrayLike

if TYPE_CHECKING:  # matplotlib is optional: imported only when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

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

_PLOT_HINT = "matplotlib is required for plotting; install it with `pip install dropjax[plot]`"


# --------------------------------------------------------------------------- validation


def _is_concrete(x: jax.Array) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _as_float(x: ArrayLike) -> jax.Array:
    """Converts to a JAX array with a floating dtype (integers/bools -> default float)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _sum_tolerance(dtype) -> float:
    return 1e-2 if jnp.finfo(dtype).bits <= 16 else 1e-4


def _check_finite(x: jax.Array, name: str) -> None:
    if _is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or infinite values.")


def _check_probs(probs: ArrayLike, name: str, layout: str) -> jax.Array:
    """Validates probabilities with the given layout, e.g. ``"(T, N, C)"``."""
    p = _as_float(probs)
    ndim = layout.count(",") + 1
    if p.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got shape {p.shape}.")
    if any(s == 0 for s in p.shape):
        raise ValueError(f"{name} must not have an empty axis, got shape {p.shape}.")
    if _is_concrete(p):
        v = np.asarray(p, dtype=np.float64)
        _check_finite(p, name)
        if np.any(v < 0):
            raise ValueError(
                f"{name} must be non-negative probabilities; min value is {v.min():.4g}."
            )
        tol = _sum_tolerance(p.dtype)
        dev = float(np.max(np.abs(v.sum(axis=-1) - 1.0)))
        if dev > tol:
            raise ValueError(
                f"{name} must sum to 1 over the last (class) axis within {tol:g}; largest "
                f"deviation is {dev:.4g}. Pass probabilities (e.g. jax.nn.softmax(logits)), "
                "not logits."
            )
    return p


def _check_labels(labels: ArrayLike, n: int, num_classes: int) -> jax.Array:
    y = jnp.asarray(labels)
    if y.dtype == jnp.bool_:
        y = y.astype(jnp.int32)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}.")
    if y.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},), got shape {y.shape}.")
    if _is_concrete(y):
        v = np.asarray(y)
        if np.any(v < 0) or np.any(v >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}) for {num_classes} classes; "
                f"got values in [{v.min()}, {v.max()}]."
            )
    return y


def _check_binary(x: ArrayLike, name: str, n: int) -> jax.Array:
    """Validates a (N,) array of 0/1 (or boolean) values and returns it as bool."""
    x = jnp.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape (N,) = ({n},), got shape {x.shape}.")
    if _is_concrete(x) and x.dtype != jnp.bool_:
        v = np.asarray(x)
        if not np.all((v == 0) | (v == 1)):
            raise ValueError(f"{name} must be boolean or contain only 0 and 1.")
    return x if x.dtype == jnp.bool_ else x != 0


def _check_scores(scores: ArrayLike, name: str) -> jax.Array:
    s = _as_float(scores)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (N,), got shape {s.shape}.")
    _check_finite(s, name)
    return s


def _nan_unless_valid(value: jax.Array, scores: jax.Array, labels=None, tpr=None) -> jax.Array:
    """``value``, or NaN when traced inputs are invalid (concrete ones were checked).

    Invalid: a non-finite score, a label other than 0/1 (booleans are always valid), or a
    ``tpr`` outside ``(0, 1]``. Mirrors the checks that raise on concrete inputs, so one
    rule holds under :func:`jax.jit`: an invalid input gives NaN, never a plausible score.
    """
    checks = []
    if not _is_concrete(scores):
        checks.append(jnp.all(jnp.isfinite(scores)))
    if labels is not None and not _is_concrete(labels):
        labels = jnp.asarray(labels)
        if labels.dtype != jnp.bool_:
            checks.append(jnp.all((labels == 0) | (labels == 1)))
    if tpr is not None and not _is_concrete(tpr):
        checks.append((tpr > 0) & (tpr <= 1))
    if not checks:
        return value
    ok = checks[0]
    for check in checks[1:]:
        ok = ok & check
    return jnp.where(ok, value, jnp.asarray(jnp.nan, value.dtype))


def _check_num_bins(num_bins: int) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive Python int, got {num_bins!r}.")
    return int(num_bins)


# --------------------------------------------------------------------------- MC classification


def predictive_entropy(probs: ArrayLike) -> jax.Array:
    r"""Entropy of the mean predictive distribution (total uncertainty).

    .. math::

        \mathbb{H}[\bar p_n] = -\sum_c \bar p_{nc} \log \bar p_{nc},
        \qquad \bar p_{nc} = \frac{1}{T}\sum_t p_{tnc}

    Args:
      probs: Monte Carlo probabilities of shape ``(T, N, C)``.

    Returns:
      Array of shape ``(N,)`` in nats, with ``0 log 0 = 0``.

    Raises:
      ValueError: if ``probs`` has the wrong number of dimensions or, when concrete,
        holds negative values or rows that do not sum to one.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import predictive_entropy
      >>> p = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # T=2, N=1, C=2
      >>> print(round(float(predictive_entropy(p)[0]), 4))  # log 2
      0.6931
    """
    p = _check_probs(probs, "probs", "(T, N, C)")
    return jnp.sum(entr(jnp.mean(p, axis=0)), axis=-1)


def expected_entropy(probs: ArrayLike) -> jax.Array:
    r"""Mean over samples of the per-sample entropy (aleatoric uncertainty).

    .. math::

        \mathbb{E}_t \mathbb{H}[p_{tn}] = -\frac{1}{T}\sum_t \sum_c p_{tnc} \log p_{tnc}

    Args:
      probs: Monte Carlo probabilities of shape ``(T, N, C)``.

    Returns:
      Array of shape ``(N,)`` in nats.

    Raises:
      ValueError: on invalid shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import expected_entropy
      >>> p = jnp.array([[[0.5, 0.5]], [[1.0, 0.0]]])
      >>> print(round(float(expected_entropy(p)[0]), 4))  # (log 2 + 0) / 2
      0.3466
    """
    p = _check_probs(probs, "probs", "(T, N, C)")
    return jnp.mean(jnp.sum(entr(p), axis=-1), axis=0)


def mutual_information(probs: ArrayLike) -> jax.Array:
    r"""Mutual information between prediction and model (BALD; epistemic uncertainty).

    .. math::

        \mathrm{MI}_n = \max\bigl(0,\ \mathbb{H}[\bar p_n] - \mathbb{E}_t \mathbb{H}[p_{tn}]\bigr)

    The difference is non-negative in exact arithmetic (Jensen); the clip at zero only
    removes floating-point round-off.

    Args:
      probs: Monte Carlo probabilities of shape ``(T, N, C)``.

    Returns:
      Array of shape ``(N,)`` in nats.

    Raises:
      ValueError: on invalid shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import mutual_information
      >>> p = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident, disagreeing samples
      >>> print(round(float(mutual_information(p)[0]), 4))
      0.6931
    """
    p = _check_probs(probs, "probs", "(T, N, C)")
    total = jnp.sum(entr(jnp.mean(p, axis=0)), axis=-1)
    aleatoric = jnp.mean(jnp.sum(entr(p), axis=-1), axis=0)
    return jnp.maximum(total - aleatoric, 0.0)


def variation_ratio(probs: ArrayLike) -> jax.Array:
    r"""One minus the fraction of samples whose argmax is the modal (most voted) class.

    .. math::

        \mathrm{VR}_n = 1 - \frac{1}{T}\max_c \sum_t \mathbb{1}[\arg\max_k p_{tnk} = c]

    Ties inside a sample's argmax go to the lowest class index (as :func:`jnp.argmax`).

    Args:
      probs: Monte Carlo probabilities of shape ``(T, N, C)``.

    Returns:
      Array of shape ``(N,)`` with values in ``[0, 1 - 1/C]``.

    Raises:
      ValueError: on invalid shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import variation_ratio
      >>> p = jnp.array([[[0.9, 0.1]], [[0.8, 0.2]], [[0.3, 0.7]], [[0.6, 0.4]]])
      >>> print(round(float(variation_ratio(p)[0]), 4))  # 3 of 4 votes for class 0
      0.25
    """
    p = _check_probs(probs, "probs", "(T, N, C)")
    num_samples, _, num_classes = p.shape
    votes = jax.nn.one_hot(jnp.argmax(p, axis=-1), num_classes, dtype=p.dtype)  # (T, N, C)
    modal = jnp.max(jnp.sum(votes, axis=0), axis=-1)
    return 1.0 - modal / num_samples


def predictive_variance(probs: ArrayLike) -> jax.Array:
    r"""Mean over classes of the variance over samples of the class probabilities.

    .. math::

        \mathrm{PV}_n = \frac{1}{C}\sum_c \frac{1}{T}\sum_t (p_{tnc} - \bar p_{nc})^2

    The variance is the population variance (``ddof=0``) over the ``T`` samples, so a
    single sample gives zero.

    Args:
      probs: Monte Carlo probabilities of shape ``(T, N, C)``.

    Returns:
      Array of shape ``(N,)``.

    Raises:
      ValueError: on invalid shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import predictive_variance
      >>> p = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
      >>> print(round(float(predictive_variance(p)[0]), 4))
      0.25
    """
    p = _check_probs(probs, "probs", "(T, N, C)")
    return jnp.mean(jnp.var(p, axis=0), axis=-1)


# --------------------------------------------------------------------------- regression


def regression_moments(
    means: ArrayLike, variances: ArrayLike | None = None
) -> tuple[jax.Array, jax.Array]:
    r"""Predictive mean and variance of a Monte Carlo regression ensemble.

    By the law of total variance, with per-sample means :math:`\mu_t` and (aleatoric)
    variances :math:`\sigma^2_t`:

    .. math::

        \mu = \frac{1}{T}\sum_t \mu_t, \qquad
        \sigma^2 = \frac{1}{T}\sum_t \sigma^2_t + \frac{1}{T}\sum_t (\mu_t - \mu)^2

    Args:
      means: per-sample predicted means, shape ``(T, ...)``.
      variances: per-sample predicted variances with the shape of ``means``, or
        ``None`` for a model without an aleatoric head (the variance is then purely
        the spread of the means).

    Returns:
      ``(mean, variance)``, each of shape ``means.shape[1:]``.

    Raises:
      ValueError: if ``means`` is 0-d or has an empty sample axis, if the shapes
        differ, or, when concrete, if the inputs are not finite or a variance is
        negative.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import regression_moments
      >>> mu, var = regression_moments(jnp.array([1.0, 3.0]), jnp.array([0.5, 1.5]))
      >>> print(float(mu), float(var))  # var = mean(0.5, 1.5) + var(1, 3)
      2.0 2.0
    """
    m = _as_float(means)
    if m.ndim < 1 or m.shape[0] == 0:
        raise ValueError(f"means must have shape (T, ...) with T >= 1, got shape {m.shape}.")
    _check_finite(m, "means")
    mean = jnp.mean(m, axis=0)
    spread = jnp.var(m, axis=0)
    if variances is None:
        return mean, spread
    v = _as_float(variances).astype(m.dtype)
    if v.shape != m.shape:
        raise ValueError(f"variances shape {v.shape} must equal means shape {m.shape}.")
    _check_finite(v, "variances")
    if _is_concrete(v) and np.any(np.asarray(v) < 0):
        raise ValueError("variances must be non-negative.")
    return mean, jnp.mean(v, axis=0) + spread


def gaussian_nll(mean: ArrayLike, var: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Mean Gaussian negative log-likelihood of targets under :math:`\mathcal N(\mu, \sigma^2)`.

    .. math::

        \mathrm{NLL} = \frac{1}{M}\sum_i \frac{1}{2}\Bigl(\log(2\pi\sigma_i^2)
        + \frac{(y_i - \mu_i)^2}{\sigma_i^2}\Bigr)

    The mean is over all ``M`` elements of the broadcast shape (the full constant
    :math:`\tfrac12\log 2\pi` is included).

    Args:
      mean: predictive means.
      var: predictive variances, strictly positive; broadcastable with ``mean``.
      targets: observed values; broadcastable with ``mean``.

    Returns:
      Scalar array.

    Raises:
      ValueError: if the shapes do not broadcast or, when concrete, if any input is
        not finite or a variance is not strictly positive.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import gaussian_nll
      >>> print(round(float(gaussian_nll(jnp.zeros(3), jnp.ones(3), jnp.zeros(3))), 4))
      0.9189
    """
    mu, v, y = _as_float(mean), _as_float(var), _as_float(targets)
    try:
        jnp.broadcast_shapes(mu.shape, v.shape, y.shape)
    except ValueError as err:
        raise ValueError(
            f"mean {mu.shape}, var {v.shape} and targets {y.shape} must broadcast together."
        ) from err
    dtype = jnp.result_type(mu.dtype, v.dtype, y.dtype)
    mu, v, y = mu.astype(dtype), v.astype(dtype), y.astype(dtype)
    for x, name in ((mu, "mean"), (v, "var"), (y, "targets")):
        _check_finite(x, name)
    if _is_concrete(v) and np.any(np.asarray(v) <= 0):
        raise ValueError("var must be strictly positive.")
    return jnp.mean(0.5 * (jnp.log(2.0 * jnp.pi * v) + jnp.square(y - mu) / v))


# --------------------------------------------------------------------------- calibration / scoring


def _calibration_bins(
    probs: jax.Array, labels: jax.Array, num_bins: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin (count, sum of confidence, sum of correctness) for validated inputs."""
    conf = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == labels).astype(probs.dtype)
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=probs.dtype)
    # side="left": conf in (edges[i], edges[i+1]] -> i + 1; conf == 0 is put in bin 0.
    idx = jnp.clip(jnp.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
    ones = jnp.ones_like(conf)
    seg = lambda x: jax.ops.segment_sum(x, idx, num_segments=num_bins)
    return seg(ones), seg(conf), seg(correct)


def expected_calibration_error(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> jax.Array:
    r"""Expected calibration error of top-label confidence with equal-width bins.

    .. math::

        \mathrm{ECE} = \sum_{b=0}^{B-1} \frac{|S_b|}{N}\,
        \bigl|\mathrm{acc}(S_b) - \mathrm{conf}(S_b)\bigr|

    where confidence is :math:`\max_c p_{nc}`, the prediction is the argmax, and
    :math:`S_b` holds the examples with confidence in :math:`(b/B, (b+1)/B]`. Bins are
    right-closed, so a confidence exactly on an edge goes to the lower bin and a
    confidence of 1 to the last bin (a confidence of 0, impossible for valid
    probabilities, would go to bin 0). Empty bins contribute zero.

    Args:
      probs: predictive probabilities ``(N, C)`` (average MC samples first).
      labels: integer class labels ``(N,)``.
      num_bins: number of bins ``B`` (static under jit).

    Returns:
      Scalar array in ``[0, 1]``.

    Raises:
      ValueError: on invalid shapes, ``num_bins``, probabilities or labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import expected_calibration_error
      >>> p = jnp.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
      >>> y = jnp.array([0, 0, 0, 1])
      >>> ece = expected_calibration_error(p, y, num_bins=10)
      >>> print(round(float(ece), 4))  # 0.5 * |1 - 0.9| + 0.5 * |0.5 - 0.6|
      0.1
    """
    num_bins = _check_num_bins(num_bins)
    p = _check_probs(probs, "probs", "(N, C)")
    y = _check_labels(labels, p.shape[0], p.shape[1])
    _, conf_sum, acc_sum = _calibration_bins(p, y, num_bins)
    return jnp.sum(jnp.abs(acc_sum - conf_sum)) / p.shape[0]


def negative_log_likelihood(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Mean negative log-likelihood of the labels under the predictive distribution.

    .. math::

        \mathrm{NLL} = -\frac{1}{N}\sum_n \log p_{n, y_n}

    A zero probability on a true label gives ``inf`` (no clipping is applied).

    Args:
      probs: predictive probabilities ``(N, C)``.
      labels: integer class labels ``(N,)``.

    Returns:
      Scalar array in nats.

    Raises:
      ValueError: on invalid shapes, probabilities or labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import negative_log_likelihood
      >>> p = jnp.array([[0.5, 0.5], [0.25, 0.75]])
      >>> print(round(float(negative_log_likelihood(p, jnp.array([0, 1]))), 4))
      0.4904
    """
    p = _check_probs(probs, "probs", "(N, C)")
    y = _check_labels(labels, p.shape[0], p.shape[1])
    picked = jnp.take_along_axis(p, y[:, None], axis=-1)[:, 0]
    return -jnp.mean(jnp.log(picked))


def brier_score(probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Multi-class Brier score: squared error to the one-hot label, summed over classes.

    .. math::

        \mathrm{BS} = \frac{1}{N}\sum_n \sum_c (p_{nc} - \mathbb{1}[c = y_n])^2

    This is the original (Brier, 1950) definition with range ``[0, 2]``; divide by ``C``
    for the per-class mean used by some libraries.

    Args:
      probs: predictive probabilities ``(N, C)``.
      labels: integer class labels ``(N,)``.

    Returns:
      Scalar array.

    Raises:
      ValueError: on invalid shapes, probabilities or labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import brier_score
      >>> p = jnp.array([[1.0, 0.0], [0.5, 0.5]])
      >>> print(round(float(brier_score(p, jnp.array([0, 1]))), 4))  # (0 + 0.5) / 2
      0.25
    """
    p = _check_probs(probs, "probs", "(N, C)")
    y = _check_labels(labels, p.shape[0], p.shape[1])
    onehot = jax.nn.one_hot(y, p.shape[1], dtype=p.dtype)
    return jnp.mean(jnp.sum(jnp.square(p - onehot), axis=-1))


def mc_negative_log_likelihood(sample_probs: ArrayLike, labels: ArrayLike) -> jax.Array:
    r"""Negative log-likelihood of the MC-averaged prediction, computed from the samples.

    .. math::

        \mathrm{NLL} = -\frac{1}{N}\sum_n
        \Bigl(\operatorname{logsumexp}_t \log p_{t n y_n} - \log T\Bigr)

    which equals :func:`negative_log_likelihood` of the mean prediction, but the
    log-mean-exp keeps precision when all per-sample probabilities are tiny.

    Args:
      sample_probs: Monte Carlo probabilities ``(T, N, C)``.
      labels: integer class labels ``(N,)``.

    Returns:
      Scalar array in nats.

    Raises:
      ValueError: on invalid shapes, probabilities or labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import mc_negative_log_likelihood
      >>> p = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
      >>> print(round(float(mc_negative_log_likelihood(p, jnp.array([0]))), 4))  # -log(1/2)
      0.6931
    """
    p = _check_probs(sample_probs, "sample_probs", "(T, N, C)")
    num_samples, n, num_classes = p.shape
    y = _check_labels(labels, n, num_classes)
    idx = jnp.broadcast_to(y[None, :, None], (num_samples, n, 1))
    log_p = jnp.log(jnp.take_along_axis(p, idx, axis=-1)[..., 0])  # (T, N)
    log_mean = jax.nn.logsumexp(log_p, axis=0) - jnp.log(float(num_samples))
    return -jnp.mean(log_mean)


# --------------------------------------------------------------------------- ranking / selective


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
    s = _check_scores(scores, "scores")
    pos = _check_binary(labels, "labels", s.shape[0])
    if _is_concrete(pos):
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
    return _nan_unless_valid(jnp.sum(jnp.where(pos, wins, 0.0)) / n_pos, s, labels)


def accuracy_coverage_curve(
    confidence: ArrayLike, correct: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    r"""Accuracy of the ``k`` most confident predictions, for every coverage ``k/N``.

    .. math::

        \mathrm{cov}_k = \frac{k}{N}, \qquad
        \mathrm{acc}_k = \frac{1}{k}\sum_{i=1}^{k} \mathrm{correct}_{\pi(i)},
        \qquad k = 1, \dots, N

    where :math:`\pi` sorts by decreasing confidence. Ties in confidence are broken by
    input order (stable sort), which only affects points inside a tied group.

    Args:
      confidence: confidence scores ``(N,)`` (higher = more confident, e.g. max
        probability or minus an uncertainty).
      correct: booleans or 0/1 ``(N,)`` marking correct predictions.

    Returns:
      ``(coverage, accuracy)``, two ``(N,)`` arrays ordered from the most confident
      prediction (coverage ``1/N``) to full coverage (``1``); ``accuracy`` is all NaN under
      jit when a confidence is NaN or infinite or ``correct`` holds a value other than 0/1.

    Raises:
      ValueError: on invalid shapes, non-finite confidences or non-binary ``correct``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import accuracy_coverage_curve
      >>> cov, acc = accuracy_coverage_curve(jnp.array([0.9, 0.6, 0.8]), jnp.array([1, 0, 0]))
      >>> print([round(float(c), 3) for c in cov], [round(float(a), 3) for a in acc])
      [0.333, 0.667, 1.0] [1.0, 0.5, 0.333]
    """
    conf = _check_scores(confidence, "confidence")
    n = conf.shape[0]
    ok = _check_binary(correct, "correct", n)
    order = jnp.argsort(-conf, stable=True)
    k = jnp.arange(1, n + 1, dtype=conf.dtype)
    hits = jnp.cumsum(ok[order].astype(conf.dtype))
    return k / n, _nan_unless_valid(hits / k, conf, correct)


def aurc(confidence: ArrayLike, correct: ArrayLike) -> jax.Array:
    r"""Area under the risk-coverage curve (lower is better).

    The discrete definition used is the mean of the selective risks over the ``N``
    coverage levels of :func:`accuracy_coverage_curve`:

    .. math::

        \mathrm{AURC} = \frac{1}{N}\sum_{k=1}^{N} (1 - \mathrm{acc}_k)

    Ties in confidence are broken by input order.

    Args:
      confidence: confidence scores ``(N,)`` (higher = more confident).
      correct: booleans or 0/1 ``(N,)`` marking correct predictions.

    Returns:
      Scalar array in ``[0, 1]``; NaN under jit for invalid inputs, as
      :func:`accuracy_coverage_curve`.

    Raises:
      ValueError: as :func:`accuracy_coverage_curve`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import aurc
      >>> print(round(float(aurc(jnp.array([0.9, 0.6, 0.8]), jnp.array([1, 0, 0]))), 4))
      0.3889
    """
    _, acc = accuracy_coverage_curve(confidence, correct)
    return jnp.mean(1.0 - acc)


# --------------------------------------------------------------------------- plotting


def _pyplot() -> ModuleType:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(_PLOT_HINT) from err
    return plt


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.5, 4.5))
    else:
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:  # pragma: no cover - an Axes implies matplotlib
            raise ImportError(_PLOT_HINT) from err
    return ax


def reliability_diagram(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15, ax: Axes | None = None
) -> Figure | SubFigure:
    r"""Plots per-bin accuracy against confidence, with the ECE in the title.

    Bins follow :func:`expected_calibration_error`. Each non-empty bin shows its
    accuracy as a bar and the gap to its mean confidence as a hatched bar; the dashed
    diagonal is perfect calibration.

    Args:
      probs: predictive probabilities ``(N, C)``.
      labels: integer class labels ``(N,)``.
      num_bins: number of equal-width confidence bins.
      ax: a matplotlib ``Axes`` to draw on; a new figure is created when ``None``.

    Returns:
      The matplotlib ``Figure`` holding the plot.

    Raises:
      ImportError: if matplotlib is not installed (``pip install dropjax[plot]``).
      ValueError: on invalid inputs, as :func:`expected_calibration_error`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import reliability_diagram
      >>> fig = reliability_diagram(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0, 0]))
      >>> type(fig).__name__
      'Figure'
      >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    num_bins = _check_num_bins(num_bins)
    p = _check_probs(probs, "probs", "(N, C)")
    y = _check_labels(labels, p.shape[0], p.shape[1])
    ax = _axes(ax)
    count, conf_sum, acc_sum = (
        np.asarray(a, np.float64) for a in _calibration_bins(p, y, num_bins)
    )
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / p.shape[0])
    nonempty = count > 0
    safe = np.where(nonempty, count, 1.0)
    acc, conf = acc_sum / safe, conf_sum / safe
    width = 1.0 / num_bins
    left = np.arange(num_bins) * width
    ax.bar(
        left[nonempty],
        acc[nonempty],
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        label="accuracy",
    )
    ax.bar(
        left[nonempty],
        (conf - acc)[nonempty],
        bottom=acc[nonempty],
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap",
    )
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE = {ece:.3f})")
    ax.legend(loc="upper left")
    return ax.figure


def uncertainty_histogram(
    scores_in: ArrayLike,
    scores_out: ArrayLike | None = None,
    ax: Axes | None = None,
    bins: int = 30,
) -> Figure | SubFigure:
    r"""Overlaid histograms of uncertainty scores for in- and out-of-distribution data.

    Both histograms share the same bin edges and are normalised to unit area. When
    ``scores_out`` is given, the title reports the AUROC of separating
    out-of-distribution (positive) from in-distribution examples by the score.

    Args:
      scores_in: in-distribution scores, any shape (flattened).
      scores_out: optional out-of-distribution scores, any shape (flattened).
      ax: a matplotlib ``Axes`` to draw on; a new figure is created when ``None``.
      bins: number of bins (or explicit edges, as accepted by ``numpy.histogram``).

    Returns:
      The matplotlib ``Figure`` holding the plot.

    Raises:
      ImportError: if matplotlib is not installed (``pip install dropjax[plot]``).
      ValueError: if a score array is empty or not finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import uncertainty_histogram
      >>> fig = uncertainty_histogram(jnp.array([0.1, 0.2, 0.3]), jnp.array([0.5, 0.9]))
      >>> fig.axes[0].get_title()
      'AUROC (out vs in) = 1.000'
      >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    s_in = _check_scores(jnp.ravel(_as_float(scores_in)), "scores_in")
    s_out = (
        None
        if scores_out is None
        else _check_scores(jnp.ravel(_as_float(scores_out)), "scores_out")
    )
    ax = _axes(ax)
    a_in = np.asarray(s_in, np.float64)
    arrays = [a_in] if s_out is None else [a_in, np.asarray(s_out, np.float64)]
    edges = np.histogram_bin_edges(np.concatenate(arrays), bins=bins)
    # matplotlib's stubs type hist's bins as a Sequence, though it takes an array of edges:
    ax.hist(
        a_in,
        bins=edges,  # type: ignore[arg-type]
        density=True,
        alpha=0.6,
        color="tab:blue",
        label=f"in-distribution (n={a_in.size})",
    )
    if s_out is not None:
        ax.hist(
            arrays[1],
            bins=edges,  # type: ignore[arg-type]
            density=True,
            alpha=0.6,
            color="tab:orange",
            label=f"out-of-distribution (n={arrays[1].size})",
        )
        y = jnp.concatenate([jnp.zeros(s_in.shape, bool), jnp.ones(s_out.shape, bool)])
        score = float(auroc(jnp.concatenate([s_in, s_out.astype(s_in.dtype)]), y))
        ax.set_title(f"AUROC (out vs in) = {score:.3f}")
    ax.set_xlabel("uncertainty score")
    ax.set_ylabel("density")
    ax.legend()
    return ax.figure


# --------------------------------------------------------------------------- more calibration


def _equal_mass_bins(n: int, num_bins: int) -> np.ndarray:
    """Bin of each rank ``0..n-1`` for ``num_bins`` equal-mass bins (``np.array_split`` sizes)."""
    q, extra = divmod(n, num_bins)
    ranks = np.arange(n)
    big = extra * (q + 1)  # the first `extra` bins hold q + 1 ranks, the others q
    return np.where(ranks < big, ranks // (q + 1), extra + (ranks - big) // max(q, 1))


def adaptive_calibration_error(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> jax.Array:
    r"""Calibration error of top-label confidence with equal-mass (adaptive) bins.

    As :func:`expected_calibration_error`, but the bins hold equal numbers of examples
    instead of covering equal widths of confidence (Nguyen & O'Connor, 2015; the
    top-label form of Nixon et al.'s 2019 adaptive calibration error):

    .. math::

        \mathrm{ACE} = \sum_{b=0}^{B-1} \frac{|S_b|}{N}\,
        \bigl|\mathrm{acc}(S_b) - \mathrm{conf}(S_b)\bigr|

    where the examples are sorted by increasing confidence :math:`\max_c p_{nc}` (a stable
    sort, so tied confidences keep their input order) and cut into ``B`` consecutive groups
    whose sizes are those of ``numpy.array_split``: the first ``N mod B`` bins hold
    ``N // B + 1`` examples, the others ``N // B``. With ``B > N`` the last ``B - N`` bins
    are empty and contribute zero. Equal-mass bins avoid the near-empty high-variance bins
    that equal-width binning gives when most confidences are close to 1.

    Args:
      probs: predictive probabilities ``(N, C)`` (average MC samples first).
      labels: integer class labels ``(N,)``.
      num_bins: number of bins ``B`` (static under jit).

    Returns:
      Scalar array in ``[0, 1]``.

    Raises:
      ValueError: on invalid shapes, ``num_bins``, probabilities or labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import adaptive_calibration_error
      >>> p = jnp.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.95, 0.05]])
      >>> y = jnp.array([1, 0, 0, 0])
      >>> # bins {0.6, 0.7}: |0.5 - 0.65|; {0.9, 0.95}: |1 - 0.925|; each weighted 1/2
      >>> print(round(float(adaptive_calibration_error(p, y, num_bins=2)), 4))
      0.1125
    """
    num_bins = _check_num_bins(num_bins)
    p = _check_probs(probs, "probs", "(N, C)")
    y = _check_labels(labels, p.shape[0], p.shape[1])
    n = p.shape[0]
    conf = jnp.max(p, axis=-1)
    correct = (jnp.argmax(p, axis=-1) == y).astype(p.dtype)
    order = jnp.argsort(conf, stable=True)
    idx = jnp.asarray(_equal_mass_bins(n, num_bins), jnp.int32)
    seg = lambda x: jax.ops.segment_sum(x[order], idx, num_segments=num_bins)
    return jnp.sum(jnp.abs(seg(correct) - seg(conf))) / n


def classwise_calibration_error(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15
) -> jax.Array:
    r"""Class-wise expected calibration error: the ECE of every class's probability, averaged.

    Following Kull et al. (2019), each class ``c`` is treated as a binary problem whose
    predicted probability is :math:`p_{nc}` (for every example, not only where ``c`` is
    the argmax) and whose outcome is :math:`\mathbb{1}[y_n = c]`:

    .. math::

        \mathrm{cwECE} = \frac{1}{C}\sum_{c=1}^{C}\sum_{b=0}^{B-1} \frac{|S_{cb}|}{N}\,
        \bigl|\mathrm{freq}_c(S_{cb}) - \mathrm{conf}_c(S_{cb})\bigr|

    where :math:`S_{cb}` holds the examples with :math:`p_{nc} \in (b/B, (b+1)/B]`. Bins
    follow :func:`expected_calibration_error`: right-closed, a probability exactly on an
    edge goes to the lower bin, and a probability of 0 to bin 0.

    Args:
      probs: predictive probabilities ``(N, C)`` (average MC samples first).
      labels: integer class labels ``(N,)``.
      num_bins: number of equal-width bins ``B`` per class (static under jit).

    Returns:
      Scalar array in ``[0, 1]``.

    Raises:
      ValueError: on invalid shapes, ``num_bins``, probabilities or labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import classwise_calibration_error
      >>> p = jnp.array([[0.8, 0.2], [0.8, 0.2]])
      >>> y = jnp.array([0, 1])  # class 0 happens half the time, predicted 0.8
      >>> print(round(float(classwise_calibration_error(p, y, num_bins=10)), 4))
      0.3
    """
    num_bins = _check_num_bins(num_bins)
    p = _check_probs(probs, "probs", "(N, C)")
    n, num_classes = p.shape
    y = _check_labels(labels, n, num_classes)
    onehot = jax.nn.one_hot(y, num_classes, dtype=p.dtype)
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=p.dtype)
    idx = jnp.clip(jnp.searchsorted(edges, p, side="left") - 1, 0, num_bins - 1)  # (N, C)
    # One segment per (class, bin): segment id c * B + b.
    seg_id = (idx + num_bins * jnp.arange(num_classes)[None, :]).reshape(-1)
    seg = lambda x: jax.ops.segment_sum(x.reshape(-1), seg_id, num_segments=num_classes * num_bins)
    return jnp.sum(jnp.abs(seg(onehot) - seg(p))) / (n * num_classes)


# --------------------------------------------------------------------------- more ranking


def _check_two_classes(pos: jax.Array, fn_name: str, need_negatives: bool = True) -> None:
    if _is_concrete(pos):
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
    s = _check_scores(scores, "scores")
    pos = _check_binary(labels, "labels", s.shape[0])
    _check_two_classes(pos, "aupr", need_negatives=False)
    pos_desc, tp, end = _descending_counts(s, pos)
    precision_at_end = tp[end] / (end + 1).astype(s.dtype)
    n_pos = tp[-1]
    return _nan_unless_valid(jnp.sum(jnp.where(pos_desc, precision_at_end, 0.0)) / n_pos, s, labels)


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
    s = _check_scores(scores, "scores")
    pos = _check_binary(labels, "labels", s.shape[0])
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
    return _nan_unless_valid(fp / n_neg, s, labels, tpr)


# --------------------------------------------------------------------------- recalibration


def temperature_scale(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
    num_iters: int = 50,
) -> tuple[jax.Array, jax.Array]:
    r"""Fits one temperature on held-out logits by minimising the NLL (Guo et al., 2017).

    .. math::

        \hat T = \arg\min_{T \in [T_{lo}, T_{hi}]} \frac{1}{N}\sum_n
        \Bigl(\operatorname{logsumexp}_c \frac{z_{nc}}{T} - \frac{z_{n y_n}}{T}\Bigr)

    The NLL is convex in the inverse temperature :math:`\beta = 1/T`, with derivative
    :math:`\frac1N\sum_n (\mathbb{E}_{\mathrm{softmax}(\beta z_n)}[z] - z_{n y_n})` and
    second derivative the mean softmax variance of the logits. The root of the derivative
    is found by safeguarded Newton steps in :math:`\beta`: a bracket on
    :math:`[1/T_{hi}, 1/T_{lo}]` shrinks at every step, and a step that would leave it is
    replaced by the bracket's geometric midpoint. ``num_iters`` steps run in a
    :func:`jax.lax.fori_loop`, so the whole fit is one jit-compiled program (Newton
    converges in a handful of steps; bisection alone would reach float32 precision well
    within the default 50). When the optimum lies outside ``bounds`` (e.g. separable data
    wants :math:`T \to 0`), the nearest bound is returned.

    Apply the fitted temperature to new logits as ``jax.nn.softmax(test_logits / T)``; it
    divides logits, so it never changes the argmax (accuracy). For MC dropout, fit it on
    the logits of the deterministic network, or on the log of the MC-averaged
    probabilities.

    Args:
      logits: held-out logits ``(N, C)``.
      labels: integer class labels ``(N,)``.
      bounds: ``(T_lo, T_hi)`` Python floats with ``0 < T_lo < T_hi``.
      num_iters: number of Newton/bisection steps, a static Python int >= 1.

    Returns:
      ``(temperature, probs)``: a scalar array (float32, or float64 for float64 logits) and
      the calibrated probabilities ``softmax(logits / temperature)`` of shape ``(N, C)`` in
      the logits' dtype (the fit itself runs in at least float32).

    Raises:
      ValueError: on invalid shapes or labels, non-finite logits (when concrete), invalid
        ``bounds`` or ``num_iters``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import temperature_scale
      >>> z = jnp.array([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
      >>> y = jnp.array([0, 0, 1, 1])  # 3 of 4 right at confidence 0.98: overconfident
      >>> t, p = temperature_scale(z, y)
      >>> print(round(float(t), 3), round(float(p[0, 0]), 3))  # sigmoid(4 / t) = 0.75
      3.641 0.75
    """
    z = _as_float(logits)
    if z.ndim != 2 or any(s == 0 for s in z.shape):
        raise ValueError(f"logits must have shape (N, C) with N, C >= 1, got shape {z.shape}.")
    _check_finite(z, "logits")
    y = _check_labels(labels, z.shape[0], z.shape[1])
    if (
        len(bounds) != 2
        or not all(isinstance(b, int | float | np.floating | np.integer) for b in bounds)
        or not 0.0 < float(bounds[0]) < float(bounds[1]) < np.inf
    ):
        raise ValueError(
            f"bounds must be Python floats (T_lo, T_hi) with 0 < T_lo < T_hi, got {bounds!r}."
        )
    if isinstance(num_iters, bool) or not isinstance(num_iters, int | np.integer) or num_iters < 1:
        raise ValueError(f"num_iters must be a positive Python int, got {num_iters!r}.")
    out_dtype = z.dtype
    z = z.astype(jnp.float64 if z.dtype == jnp.float64 else jnp.float32)  # fit in >= f32
    beta_lo = jnp.asarray(1.0 / float(bounds[1]), z.dtype)
    beta_hi = jnp.asarray(1.0 / float(bounds[0]), z.dtype)
    z_true = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]

    def derivatives(beta):
        p = jax.nn.softmax(beta * z, axis=-1)
        mean = jnp.sum(p * z, axis=-1)
        var = jnp.sum(p * jnp.square(z - mean[:, None]), axis=-1)
        return jnp.mean(mean - z_true), jnp.mean(var)

    def step(_, carry):
        lo, hi, beta = carry
        grad, hess = derivatives(beta)
        lo = jnp.where(grad <= 0, beta, lo)
        hi = jnp.where(grad >= 0, beta, hi)
        newton = beta - grad / jnp.where(hess > 0, hess, 1.0)
        ok = (hess > 0) & (newton > lo) & (newton < hi)
        return lo, hi, jnp.where(ok, newton, jnp.sqrt(lo * hi))

    start = jnp.clip(jnp.asarray(1.0, z.dtype), beta_lo, beta_hi)
    _, _, beta = jax.lax.fori_loop(0, int(num_iters), step, (beta_lo, beta_hi, start))
    beta = jnp.clip(beta, beta_lo, beta_hi)
    return 1.0 / beta, jax.nn.softmax(beta * z, axis=-1).astype(out_dtype)
