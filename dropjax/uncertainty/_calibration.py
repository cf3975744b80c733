r"""Calibration: expected (equal-width), adaptive (equal-mass) and class-wise calibration
errors, and temperature scaling. Conventions are those of :mod:`dropjax.uncertainty`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src import checks as _c

__all__ = [
    "adaptive_calibration_error",
    "classwise_calibration_error",
    "expected_calibration_error",
    "temperature_scale",
]


def calibration_bins(
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
    num_bins = _c.check_num_bins(num_bins)
    p = _c.check_probs(probs, "probs", "(N, C)")
    y = _c.check_labels(labels, p.shape[0], p.shape[1])
    _, conf_sum, acc_sum = calibration_bins(p, y, num_bins)
    return jnp.sum(jnp.abs(acc_sum - conf_sum)) / p.shape[0]


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
    num_bins = _c.check_num_bins(num_bins)
    p = _c.check_probs(probs, "probs", "(N, C)")
    y = _c.check_labels(labels, p.shape[0], p.shape[1])
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
    num_bins = _c.check_num_bins(num_bins)
    p = _c.check_probs(probs, "probs", "(N, C)")
    n, num_classes = p.shape
    y = _c.check_labels(labels, n, num_classes)
    onehot = jax.nn.one_hot(y, num_classes, dtype=p.dtype)
    edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=p.dtype)
    idx = jnp.clip(jnp.searchsorted(edges, p, side="left") - 1, 0, num_bins - 1)  # (N, C)
    # One segment per (class, bin): segment id c * B + b.
    seg_id = (idx + num_bins * jnp.arange(num_classes)[None, :]).reshape(-1)
    seg = lambda x: jax.ops.segment_sum(x.reshape(-1), seg_id, num_segments=num_classes * num_bins)
    return jnp.sum(jnp.abs(seg(onehot) - seg(p))) / (n * num_classes)


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
    z = _c.as_float(logits)
    if z.ndim != 2 or any(s == 0 for s in z.shape):
        raise ValueError(f"logits must have shape (N, C) with N, C >= 1, got shape {z.shape}.")
    _c.check_finite(z, "logits")
    y = _c.check_labels(labels, z.shape[0], z.shape[1])
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
