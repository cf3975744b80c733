r"""Acquisition functions for active learning with Monte Carlo dropout.

Every function takes a ``(T, N, C)`` array of MC-sampled class probabilities: ``T``
stochastic forward passes (dropout masks) over a pool of ``N`` unlabelled inputs with ``C``
classes, e.g. from :func:`dropjax.mc.sample`. The per-point scores (:func:`bald`,
:func:`max_entropy`, :func:`variation_ratio`, :func:`mean_std`, :func:`margin`) return an
``(N,)`` array where **higher means acquire first**, so a batch of the ``b`` best points is
``jax.lax.top_k(score, b)[1]``. They are pure and jit-able; values are checked as in
:mod:`dropjax.uncertainty` (shapes always, probabilities only outside a trace).

Picking the top ``b`` points of a per-point score ignores that those points may carry the
same information (near-duplicates all score high). :func:`batch_bald` (Kirsch, van
Amersfoort & Gal, 2019) instead grows the batch greedily by the *joint* mutual information
between the batch's labels and the model parameters.

**Consistent masks.** The joint scores model sample ``t`` as one draw of the parameters
:math:`\omega_t`, so the labels of two pool points are independent *given* :math:`\omega_t`:
:math:`p(y_1, y_2 \mid \omega_t) = p(y_1 \mid x_1, \omega_t)\, p(y_2 \mid x_2, \omega_t)`.
That holds only when sample ``t`` used the same dropout mask for every pool point, which
is what ``dropjax.mc.sample(fn, key, T, x_pool, consistent=True)`` gives. With the default
per-example masks (``consistent=False``) row ``t`` mixes different masks, and
:func:`batch_bald`'s joint entropies are then those of unrelated draws (the
per-point scores are unaffected: each only looks at one point's ``T`` samples).

Examples:
  >>> import jax, jax.numpy as jnp, dropjax
  >>> from dropjax import acquisition, mc
  >>> w = jax.random.normal(jax.random.key(0), (5, 3))  # a toy "network"
  >>> def predict(key, x):  # dropout on the inputs of a linear softmax layer
  ...     return jax.nn.softmax(dropjax.dropout(key, x, 0.5) @ w)
  >>> pool = jax.random.normal(jax.random.key(1), (20, 5))
  >>> probs = mc.sample(predict, jax.random.key(2), 16, pool, consistent=True)
  >>> probs.shape
  (16, 20, 3)
  >>> acquisition.bald(probs).shape
  (20,)
  >>> acquisition.batch_bald(probs, 3).indices.shape
  (3,)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import entr
from jax.typing import ArrayLike

from dropjax import uncertainty as _unc
from dropjax._src.checks import check_key, check_probs

__all__ = [
    "BatchBALDResult",
    "bald",
    "batch_bald",
    "margin",
    "max_entropy",
    "mean_std",
    "variation_ratio",
]


# --------------------------------------------------------------------------- per-point scores


def bald(probs: ArrayLike) -> jax.Array:
    r"""BALD: mutual information between a point's label and the model parameters.

    .. math::

        \mathrm{BALD}_n = \mathbb{H}[\bar p_n] - \frac{1}{T}\sum_t \mathbb{H}[p_{tn}]

    (Houlsby et al., 2011; Gal, Islam & Ghahramani, 2017). High when the samples are each
    confident but disagree: the points the model is unsure about because of its
    parameters, not because of label noise. Same as
    :func:`dropjax.uncertainty.mutual_information`.

    Args:
      probs: MC probabilities ``(T, N, C)``.

    Returns:
      ``(N,)`` scores in nats, higher = acquire first.

    Raises:
      ValueError: on a wrong shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.acquisition import bald
      >>> p = jnp.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
      >>> [round(float(s), 4) for s in bald(p)]  # disagreement vs plain noise
      [0.6931, 0.0]
    """
    return _unc.mutual_information(probs)


def max_entropy(probs: ArrayLike) -> jax.Array:
    r"""Max entropy: the entropy of the MC-averaged prediction (total uncertainty).

    .. math::

        \mathbb{H}[\bar p_n] = -\sum_c \bar p_{nc}\log \bar p_{nc}

    Same as :func:`dropjax.uncertainty.predictive_entropy`.

    Args:
      probs: MC probabilities ``(T, N, C)``.

    Returns:
      ``(N,)`` scores in nats, higher = acquire first.

    Raises:
      ValueError: on a wrong shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.acquisition import max_entropy
      >>> p = jnp.array([[[0.5, 0.5], [0.9, 0.1]]])
      >>> [round(float(s), 4) for s in max_entropy(p)]
      [0.6931, 0.3251]
    """
    return _unc.predictive_entropy(probs)


def variation_ratio(probs: ArrayLike) -> jax.Array:
    r"""Variation ratio: one minus the fraction of samples voting for the modal class.

    .. math::

        \mathrm{VR}_n = 1 - \frac{1}{T}\max_c \sum_t \mathbb{1}[\arg\max_k p_{tnk} = c]

    The vote form (Freeman, 1965), as in Gal, Islam & Ghahramani's code; ties in a
    sample's argmax go to the lowest class. Same as
    :func:`dropjax.uncertainty.variation_ratio`.

    Args:
      probs: MC probabilities ``(T, N, C)``.

    Returns:
      ``(N,)`` scores in ``[0, 1 - 1/C]``, higher = acquire first.

    Raises:
      ValueError: on a wrong shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.acquisition import variation_ratio
      >>> p = jnp.array([[[0.9, 0.1]], [[0.2, 0.8]], [[0.6, 0.4]], [[0.7, 0.3]]])
      >>> print(float(variation_ratio(p)[0]))  # 3 of 4 votes for class 0
      0.25
    """
    return _unc.variation_ratio(probs)


def mean_std(probs: ArrayLike) -> jax.Array:
    r"""Mean standard deviation: the spread of the class probabilities over samples.

    .. math::

        \sigma_n = \frac{1}{C}\sum_c \sqrt{\frac{1}{T}\sum_t p_{tnc}^2 - \bar p_{nc}^{\,2}}

    (Kendall, Badrinarayanan & Cipolla, 2015), the population standard deviation over the
    ``T`` samples, averaged over classes.

    Args:
      probs: MC probabilities ``(T, N, C)``.

    Returns:
      ``(N,)`` scores in ``[0, 1/2]``, higher = acquire first.

    Raises:
      ValueError: on a wrong shape or, when concrete, invalid probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.acquisition import mean_std
      >>> p = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
      >>> print(float(mean_std(p)[0]))  # each class: std of {0, 1} = 0.5
      0.5
    """
    p = check_probs(probs, "probs", "(T, N, C)")
    return jnp.mean(jnp.std(p, axis=0), axis=-1)


def margin(probs: ArrayLike) -> jax.Array:
    r"""Margin: minus the gap between the two largest MC-averaged class probabilities.

    .. math::

        \mathrm{margin}_n = -\bigl(\bar p_{n(1)} - \bar p_{n(2)}\bigr)

    where :math:`\bar p_{n(1)} \ge \bar p_{n(2)}` are the largest two entries of the mean
    prediction. Margin sampling (Scheffer et al., 2001) acquires the *smallest* gap; the
    sign is flipped here so that, like every score in this module, higher = acquire
    first. Values lie in ``[-1, 0]``: ``0`` for a tie between the top two classes, ``-1``
    for a certain prediction.

    Args:
      probs: MC probabilities ``(T, N, C)`` with ``C >= 2``.

    Returns:
      ``(N,)`` scores in ``[-1, 0]``, higher = acquire first.

    Raises:
      ValueError: on a wrong shape, fewer than two classes or, when concrete, invalid
        probabilities.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.acquisition import margin
      >>> p = jnp.array([[[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]])
      >>> [round(float(s), 4) for s in margin(p)]
      [-0.2, -0.85]
    """
    p = check_probs(probs, "probs", "(T, N, C)")
    if p.shape[-1] < 2:
        raise ValueError(f"margin needs at least 2 classes, got probs of shape {p.shape}.")
    top2 = jax.lax.top_k(jnp.mean(p, axis=0), 2)[0]
    return top2[:, 1] - top2[:, 0]


# --------------------------------------------------------------------------- BatchBALD


class BatchBALDResult(NamedTuple):
    """What :func:`batch_bald` returns.

    Attributes:
      indices: ``(batch_size,)`` int32 pool indices in acquisition order.
      scores: ``(batch_size,)``; ``scores[i]`` is the (estimated) mutual information in
        nats between the labels of the first ``i + 1`` selected points and the parameters;
        ``scores[0]`` is the BALD score of ``indices[0]``.
    """

    indices: jax.Array
    scores: jax.Array


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"batch_bald: {name} must be a Python int >= {low}, got {value!r}.")
    return int(value)


def _check_optional_int(value: object, name: str, low: int) -> int | None:
    return None if value is None else _check_int(value, name, low)


def _joint_entropies(
    log_prev: jax.Array, chunks: jax.Array, num_classes: int, sampled: bool
) -> jax.Array:
    """Entropy of (selected labels, candidate label) for every candidate, chunk by chunk.

    Args:
      log_prev: ``(M, K)``: entry ``(m, j)`` is the log-likelihood of the ``m``-th label
        configuration of the selected points under parameter sample ``j``,
        :math:`\\log \\prod_i p(\\hat y^m_i \\mid x_i, \\omega_j)`. The rows are every
        configuration (exact) or ``M`` configurations drawn from the joint (sampled).
      chunks: ``(num_chunks, K, chunk * C)`` candidate probabilities, in chunks.
      num_classes: ``C``.
      sampled: the importance-weighted estimate over drawn rows instead of the exact sum.

    Returns:
      ``(num_chunks * chunk,)`` joint entropies in nats (padding included).
    """
    rows, k = log_prev.shape
    top = jnp.max(log_prev, axis=1)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    scaled = jnp.exp(log_prev - top[:, None])  # rows rescaled to a max of 1: no underflow
    row_mass = jnp.sum(scaled, axis=1)  # K * p(config) / exp(top)
    log_k = math.log(k)

    def entropy_chunk(cand: jax.Array) -> jax.Array:
        mixed = (scaled @ cand).reshape(rows, -1, num_classes)  # K p(config, y) / exp(top)
        positive = mixed > 0
        safe = jnp.where(positive, mixed, 1.0)
        log_joint = top[:, None, None] + jnp.log(safe) - log_k  # log p(config, y)
        if sampled:
            # Mean over drawn configs of sum_y p(y | config) * (-log p(config, y)).
            weight = safe / row_mass[:, None, None]
            terms = jnp.where(positive, -weight * log_joint, 0.0)
            return jnp.sum(terms, axis=(0, 2)) / rows
        terms = jnp.where(positive, -jnp.exp(log_joint) * log_joint, 0.0)
        return jnp.sum(terms, axis=(0, 2))

    return jax.lax.map(entropy_chunk, chunks).reshape(-1)


def _batch_bald_impl(
    p: jax.Array,
    key: jax.Array,
    *,
    batch_size: int,
    num_exact: int,
    num_samples: int,
    chunk_size: int,
) -> BatchBALDResult:
    k, n, c = p.shape
    dtype = jnp.float64 if p.dtype == jnp.float64 else jnp.float32
    p = p.astype(dtype)
    log_p = jnp.log(p)  # -inf where a probability is 0
    cond = jnp.mean(jnp.sum(entr(p), axis=-1), axis=0)  # (N,) E_w H[y_n | w]
    num_chunks = -(-n // chunk_size)
    padded = jnp.pad(p, ((0, 0), (0, num_chunks * chunk_size - n), (0, 0)))
    chunks = padded.reshape(k, num_chunks, chunk_size * c).transpose(1, 0, 2)
    neg_inf = jnp.asarray(-jnp.inf, dtype)

    def pick(log_prev, selected, sampled):
        joint = _joint_entropies(log_prev, chunks, c, sampled)[:n]
        gain = jnp.where(selected, neg_inf, joint - cond)
        x = jnp.argmax(gain).astype(jnp.int32)
        return x, joint[x]

    indices, scores = [], []
    selected = jnp.zeros((n,), bool)
    cond_sum = jnp.zeros((), dtype)
    log_prev = jnp.zeros((1, k), dtype)
    exact_steps = min(num_exact, batch_size)
    for step in range(exact_steps):  # few steps: every configuration is enumerated
        x, joint = pick(log_prev, selected, sampled=False)
        cond_sum = cond_sum + cond[x]
        indices.append(x)
        scores.append(joint - cond_sum)
        selected = selected.at[x].set(True)
        if step + 1 < exact_steps:  # (M, K) -> (M * C, K): every label of the new point
            log_prev = (log_prev[:, None, :] + log_p[:, x, :].T[None]).reshape(-1, k)
    indices_arr = jnp.zeros((batch_size,), jnp.int32).at[:exact_steps].set(jnp.stack(indices))
    scores_arr = jnp.zeros((batch_size,), dtype).at[:exact_steps].set(jnp.stack(scores))
    if exact_steps == batch_size:
        return BatchBALDResult(indices_arr, scores_arr)

    # Sampled phase: M configurations drawn from the joint of the selected labels. Each
    # configuration m keeps one parameter sample j_m, and every label of it is drawn from
    # p(y | x_i, w_{j_m}); extending a configuration with the next point's label drawn the
    # same way keeps it an exact draw from the larger joint.
    key_j, key_y = jax.random.split(key)
    j = jax.random.randint(key_j, (num_samples,), 0, k)

    def extend(log_prev, x, draw_key):
        labels = jax.random.categorical(draw_key, log_p[j, x, :])  # (M,)
        return log_prev + jnp.take(log_p[:, x, :], labels, axis=1).T

    log_prev = jnp.zeros((num_samples, k), dtype)
    for i, x in enumerate(indices):
        log_prev = extend(log_prev, x, jax.random.fold_in(key_y, i))

    def body(step, carry):
        log_prev, selected, cond_sum, indices_arr, scores_arr = carry
        x, joint = pick(log_prev, selected, sampled=True)
        cond_sum = cond_sum + cond[x]
        indices_arr = indices_arr.at[step].set(x)
        scores_arr = scores_arr.at[step].set(joint - cond_sum)
        log_prev = extend(log_prev, x, jax.random.fold_in(key_y, step))
        return log_prev, selected.at[x].set(True), cond_sum, indices_arr, scores_arr

    carry = (log_prev, selected, cond_sum, indices_arr, scores_arr)
    carry = jax.lax.fori_loop(exact_steps, batch_size, body, carry)
    return BatchBALDResult(carry[3], carry[4])


_batch_bald_jit = jax.jit(
    _batch_bald_impl,
    static_argnames=("batch_size", "num_exact", "num_samples", "chunk_size"),
)


def batch_bald(
    probs: ArrayLike,
    batch_size: int,
    *,
    key: jax.Array | None = None,
    num_samples: int = 1000,
    exact_threshold: int | None = None,
    chunk_size: int | None = 256,
) -> BatchBALDResult:
    r"""BatchBALD: greedy batch acquisition by joint mutual information (Kirsch et al., 2019).

    The score of a batch :math:`A = \{x_1, \dots, x_n\}` is the mutual information
    between its labels and the parameters, estimated from ``K = T`` parameter samples
    :math:`\omega_j` (the rows of ``probs``):

    .. math::

        a(A) = \mathbb{H}[y_1, \dots, y_n] - \sum_{i=1}^{n} \mathbb{E}_{\omega}\,
        \mathbb{H}[y_i \mid \omega], \qquad
        \hat p(y_1, \dots, y_n) = \frac{1}{K}\sum_{j=1}^{K} \prod_{i=1}^{n}
        p(y_i \mid x_i, \omega_j)

    The batch grows greedily: step ``n`` adds the pool point that maximises
    :math:`a(A_{n-1} \cup \{x\})` (a ``1 - 1/e`` approximation of the best batch, as
    :math:`a` is submodular). Ties go to the lowest index; a point is never picked twice.

    **Joint entropy.** While :math:`C^n \le` ``exact_threshold`` the joint entropy is
    exact: the :math:`C^{n-1}` label configurations of the selected points are enumerated
    (held as a ``(C^{n-1}, K)`` matrix of log-likelihoods, so a candidate costs one matrix
    product). For larger batches it is the paper's importance-sampled estimate: ``M =
    num_samples`` configurations :math:`\hat y^m_{1:n-1}` are drawn from
    :math:`\hat p` (draw :math:`j_m` uniformly, then each label from
    :math:`p(\cdot \mid x_i, \omega_{j_m})`; they are extended, not redrawn, as the
    batch grows), and

    .. math::

        \mathbb{H}[y_{1:n-1}, y_n] \approx -\frac{1}{M}\sum_{m=1}^{M}\sum_{y_n}
        \frac{\hat p(\hat y^m_{1:n-1}, y_n)}{\hat p(\hat y^m_{1:n-1})}
        \log \hat p(\hat y^m_{1:n-1}, y_n)

    Likelihood products are rescaled per configuration, so long batches do not underflow.
    Step 1 is always exact (it is BALD). Candidates are scored ``chunk_size`` at a time
    (:func:`jax.lax.map`), so the peak memory is about ``max(M, C^{n-1}) * chunk_size * C``
    floats whatever the pool size; the cost per step is
    :math:`O(\max(M, C^{n-1})\, K N C)`.

    **Consistent masks required.** ``probs[t]`` must be the whole pool under *one*
    parameter sample: draw it with ``dropjax.mc.sample(fn, key, T, x_pool,
    consistent=True)``, which shares each sample's dropout mask across the pool (see the
    module docstring). With per-example masks the joint entropy is meaningless.

    The whole selection is one jit-compiled program per static configuration; the function
    also works under an outer :func:`jax.jit` with ``batch_size`` and the other options
    static.

    Args:
      probs: MC probabilities ``(T, N, C)`` from consistent masks.
      batch_size: number of points to select, a Python int in ``[1, N]``.
      key: PRNG key for the sampled estimator; required only when a step is sampled
        (``batch_size`` beyond the exact steps), e.g. ``jax.random.key(0)``.
      num_samples: ``M``, sampled label configurations (a Python int >= 1).
      exact_threshold: largest number of joint configurations :math:`C^n` computed
        exactly; ``None`` means ``num_samples`` (exact while it is no dearer than
        sampling).
      chunk_size: candidates scored at once (Python int >= 1), or ``None`` for the whole
        pool.

    Returns:
      A :class:`BatchBALDResult` ``(indices, scores)``: the selected pool indices in
      acquisition order and the joint mutual information of each prefix of the batch.

    Raises:
      ValueError: on a wrong shape, invalid probabilities (when concrete), a
        ``batch_size`` outside ``[1, N]``, invalid options, or a missing ``key`` when the
        sampled estimator is needed.
      TypeError: if ``key`` is not a PRNG key.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.acquisition import bald, batch_bald
      >>> # Points 0 and 1 are duplicates (same disagreement); point 2 disagrees differently.
      >>> p = jnp.array([
      ...     [[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]],
      ...     [[0.1, 0.9], [0.1, 0.9], [0.9, 0.1]],
      ...     [[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]],
      ...     [[0.1, 0.9], [0.1, 0.9], [0.1, 0.9]],
      ... ])  # (T=4, N=3, C=2)
      >>> [round(float(s), 3) for s in bald(p)]  # all equal: top-2 BALD could take 0 and 1
      [0.368, 0.368, 0.368]
      >>> result = batch_bald(p, 2)
      >>> [int(i) for i in result.indices]  # BatchBALD skips the duplicate
      [0, 2]
      >>> [round(float(s), 3) for s in result.scores]
      [0.368, 0.736]
    """
    p = check_probs(probs, "probs", "(T, N, C)")
    _, n, c = p.shape
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise ValueError(f"batch_bald: batch_size must be a Python int, got {batch_size!r}.")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_bald: batch_size must be in [1, N] = [1, {n}], got {batch_size}.")
    num_samples = _check_int(num_samples, "num_samples", 1)
    threshold = _check_optional_int(exact_threshold, "exact_threshold", 1)
    threshold = num_samples if threshold is None else threshold
    chunk = _check_optional_int(chunk_size, "chunk_size", 1)
    chunk = n if chunk is None else min(chunk, n)
    num_exact = 1
    while num_exact < batch_size and c ** (num_exact + 1) <= threshold:
        num_exact += 1
    if num_exact < batch_size:
        if key is None:
            raise ValueError(
                f"batch_bald: a batch of {batch_size} with {c} classes needs the sampled "
                f"estimator beyond {num_exact} exact steps (exact_threshold={threshold}); "
                "pass key=jax.random.key(0)"
            )
        key = check_key(key, "batch_bald")
    else:
        key = jax.random.key(0)  # unused
    return _batch_bald_jit(
        p,
        key,
        batch_size=int(batch_size),
        num_exact=num_exact,
        num_samples=num_samples,
        chunk_size=chunk,
    )
