r"""Uncertainty scores of Monte Carlo predictions, likelihoods and proper scoring rules.

Entropies, mutual information (BALD), variation ratio and predictive variance of
``(T, N, C)`` Monte Carlo probabilities; the moments and Gaussian likelihood of a regression
ensemble; the negative log-likelihood and the Brier score. Conventions are those of
:mod:`dropjax.uncertainty`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr
from jax.typing import ArrayLike

from dropjax._src import checks as _c

__all__ = [
    "brier_score",
    "expected_entropy",
    "gaussian_nll",
    "mc_negative_log_likelihood",
    "mutual_information",
    "negative_log_likelihood",
    "predictive_entropy",
    "predictive_variance",
    "regression_moments",
    "variation_ratio",
]


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
    p = _c.check_probs(probs, "probs", "(T, N, C)")
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
    p = _c.check_probs(probs, "probs", "(T, N, C)")
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
    p = _c.check_probs(probs, "probs", "(T, N, C)")
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
    p = _c.check_probs(probs, "probs", "(T, N, C)")
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
    p = _c.check_probs(probs, "probs", "(T, N, C)")
    return jnp.mean(jnp.var(p, axis=0), axis=-1)


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
    m = _c.as_float(means)
    if m.ndim < 1 or m.shape[0] == 0:
        raise ValueError(f"means must have shape (T, ...) with T >= 1, got shape {m.shape}.")
    _c.check_finite(m, "means")
    mean = jnp.mean(m, axis=0)
    spread = jnp.var(m, axis=0)
    if variances is None:
        return mean, spread
    v = _c.as_float(variances).astype(m.dtype)
    if v.shape != m.shape:
        raise ValueError(f"variances shape {v.shape} must equal means shape {m.shape}.")
    _c.check_finite(v, "variances")
    if _c.is_concrete(v) and np.any(np.asarray(v) < 0):
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
    mu, v, y = _c.as_float(mean), _c.as_float(var), _c.as_float(targets)
    try:
        jnp.broadcast_shapes(mu.shape, v.shape, y.shape)
    except ValueError as err:
        raise ValueError(
            f"mean {mu.shape}, var {v.shape} and targets {y.shape} must broadcast together."
        ) from err
    dtype = jnp.result_type(mu.dtype, v.dtype, y.dtype)
    mu, v, y = mu.astype(dtype), v.astype(dtype), y.astype(dtype)
    for x, name in ((mu, "mean"), (v, "var"), (y, "targets")):
        _c.check_finite(x, name)
    if _c.is_concrete(v) and np.any(np.asarray(v) <= 0):
        raise ValueError("var must be strictly positive.")
    return jnp.mean(0.5 * (jnp.log(2.0 * jnp.pi * v) + jnp.square(y - mu) / v))


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
    p = _c.check_probs(probs, "probs", "(N, C)")
    y = _c.check_labels(labels, p.shape[0], p.shape[1])
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
    p = _c.check_probs(probs, "probs", "(N, C)")
    y = _c.check_labels(labels, p.shape[0], p.shape[1])
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
    p = _c.check_probs(sample_probs, "sample_probs", "(T, N, C)")
    num_samples, n, num_classes = p.shape
    y = _c.check_labels(labels, n, num_classes)
    idx = jnp.broadcast_to(y[None, :, None], (num_samples, n, 1))
    log_p = jnp.log(jnp.take_along_axis(p, idx, axis=-1)[..., 0])  # (T, N)
    log_mean = jax.nn.logsumexp(log_p, axis=0) - jnp.log(float(num_samples))
    return -jnp.mean(log_mean)
