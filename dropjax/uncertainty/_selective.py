r"""Selective prediction: the accuracy-coverage curve and the area under the risk-coverage
curve. Conventions are those of :mod:`dropjax.uncertainty`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from dropjax._src import checks as _c

__all__ = ["accuracy_coverage_curve", "aurc"]


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
    conf = _c.check_scores(confidence, "confidence")
    n = conf.shape[0]
    ok = _c.check_binary(correct, "correct", n)
    order = jnp.argsort(-conf, stable=True)
    k = jnp.arange(1, n + 1, dtype=conf.dtype)
    hits = jnp.cumsum(ok[order].astype(conf.dtype))
    return k / n, _c.nan_unless_valid(hits / k, conf, correct)


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
