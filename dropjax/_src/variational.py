r"""Learned Gaussian dropout (Kingma et al. 2015) and sparse variational dropout (Molchanov 2017).

Gaussian dropout multiplies a weight (or a unit) by :math:`\xi \sim \mathcal{N}(1, \alpha)`.
Kingma, Salimans & Welling, "Variational Dropout and the Local Reparameterization Trick"
(NeurIPS 2015) read this as a variational posterior
:math:`q(w_{ij}) = \mathcal{N}(\theta_{ij}, \alpha_{ij}\theta_{ij}^2)` under the improper
log-uniform prior :math:`p(|w|) \propto 1/|w|`, so that :math:`\alpha` can be *learned* by
maximising the evidence lower bound

.. math::

    \mathcal{L} = \sum_{n=1}^{N} \mathbb{E}_{q}\log p(y_n \mid x_n, w)
    - \sum_{ij} D_{KL}\big(q(w_{ij}) \,\|\, p(w_{ij})\big).

Molchanov, Ashukha & Vetrov, "Variational Dropout Sparsifies Deep Neural Networks" (ICML
2017) let :math:`\alpha_{ij} \to \infty` (no upper bound), which prunes a weight: its
posterior is then all noise, and the deterministic network sets it to zero. Their additive
reparameterisation learns :math:`\log\sigma^2_{ij}` instead of :math:`\log\alpha_{ij}`
(:func:`variational_log_alpha`), which keeps the gradient variance of :math:`\theta` low.

The pieces here are pure functions with explicit keys:

========================  ==================================================================
function                  what it computes
========================  ==================================================================
variational_dropout       ``x * (1 + sqrt(alpha) * eps)``, ``eps = jax.random.normal(key, x.shape)``
variational_dense         local reparameterisation, dense: one normal draw per pre-activation,
                          ``jax.random.normal(key, (..., out))``
variational_conv          local reparameterisation, convolution (channels last), likewise
variational_log_alpha     ``clip(log_sigma2 - log(theta^2 + eps), -clip, clip)``
kl_kingma                 Kingma et al.'s polynomial KL approximation (alpha clipped to <= 1)
kl_molchanov              Molchanov et al.'s sigmoid KL approximation (any alpha)
sparsify                  ``where(log_alpha > threshold, 0, theta)``
sparsity                  zeroed fraction and compression of a parameter tree, per layer
========================  ==================================================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from dropjax._src import checks as _c

__all__ = [
    "KINGMA_C",
    "MOLCHANOV_K",
    "kl_kingma",
    "kl_molchanov",
    "sparsify",
    "sparsity",
    "variational_conv",
    "variational_dense",
    "variational_dropout",
    "variational_log_alpha",
]

KINGMA_C = (1.16145124, -1.50204118, 0.58629921)
"""Kingma et al. (2015), Section 3.3: ``c1, c2, c3`` of the KL polynomial."""

MOLCHANOV_K = (0.63576, 1.87320, 1.48695)
"""Molchanov et al. (2017), Eq. 14: ``k1, k2, k3`` of the KL approximation."""


def _compute_dtype(dtype) -> jnp.dtype:
    """At least float32: bf16/f16 inputs are computed in f32 and rounded once."""
    dtype = jnp.dtype(dtype)
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.dtype(jnp.float32)


def _floating(value, name: str, what: str) -> jax.Array:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = jnp.asarray(float(value), jnp.float32)
    if not hasattr(value, "dtype"):
        value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(
            f"{name}: {what} must be floating point to be learned; got {value.dtype}. "
            "Pass e.g. jnp.full(shape, -10.0)"
        )
    return jnp.asarray(value)


def _check_broadcast(name: str, what: str, shape, target) -> None:
    try:
        ok = jnp.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name}: {what} of shape {tuple(shape)} must broadcast to {tuple(target)}"
        )


def _safe_sqrt(v: jax.Array) -> jax.Array:
    """``sqrt(v)`` for ``v >= 0`` whose gradient at 0 is 0 instead of infinite."""
    pos = v > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def variational_dropout(key: jax.Array, x: ArrayLike, log_alpha: ArrayLike) -> jax.Array:
    r"""Gaussian multiplicative noise with a learned variance :math:`\alpha = e^{\log\alpha}`.

    Kingma et al. (2015), Section 3: each unit is multiplied by
    :math:`\xi \sim \mathcal{N}(1, \alpha)`,

    .. math::

        y = x \odot (1 + \sqrt{\alpha}\,\epsilon), \qquad \epsilon \sim \mathcal{N}(0, I),
        \qquad \mathbb{E}[y] = x, \quad \operatorname{Var}[y] = \alpha x^2.

    Gaussian dropout at drop rate :math:`p` is the case :math:`\alpha = p/(1-p)`
    (:func:`dropjax.gaussian_dropout`). ``log_alpha`` broadcasts against ``x``: a scalar
    (one rate per layer), a vector over the last axis (one per unit), or ``x.shape`` (one per
    element). It is differentiable; add :func:`kl_kingma` (with :math:`\alpha \le 1`) or
    :func:`kl_molchanov` of it, times the number of units it applies to, to the loss.
    Applied to a layer's input, this is Kingma et al.'s "correlated" weight noise: the
    pre-activations have the marginal variances of :func:`variational_dense` with the
    per-input ``log_alpha[:, None]``, but they share the noise. The noise is
    ``jax.random.normal(key, x.shape)`` in float32 (or ``x``'s wider dtype).

    Args:
      key: one PRNG key.
      x: floating-point input.
      log_alpha: :math:`\log\alpha`, broadcastable to ``x``; may be traced.

    Returns:
      The noisy array, same shape and dtype as ``x``.

    Raises:
      ValueError: a ``log_alpha`` that does not broadcast to ``x``.
      TypeError: a non-floating ``x`` or ``log_alpha``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> y = dropjax.variational_dropout(jax.random.key(0), jnp.ones(20_000), jnp.log(0.25))
      >>> round(float(y.mean()), 1), round(float(y.var()), 2)
      (1.0, 0.25)
    """
    name = "variational_dropout"
    order = "key, x, log_alpha"
    x = _c.check_floating(
        x, name, key=key, order=order, example=f"{name}(jax.random.key(0), x, log_alpha)"
    )
    log_alpha = _floating(log_alpha, name, "log_alpha")
    _check_broadcast(name, "log_alpha", log_alpha.shape, x.shape)
    key = _c.check_key(key, name, order=order)
    return _vd_core(key, x, log_alpha)


@jax.jit
def _vd_core(key, x, log_alpha):
    compute = _compute_dtype(x.dtype)
    eps = jax.random.normal(key, x.shape, compute)
    std = jnp.exp(0.5 * log_alpha.astype(compute))
    xc = x.astype(compute)
    return (xc + xc * std * eps).astype(x.dtype)


def sparsify(theta: ArrayLike, log_alpha: ArrayLike, threshold: ArrayLike = 3.0) -> jax.Array:
    r"""Zeroes the weights whose :math:`\log\alpha` exceeds ``threshold``.

    Molchanov et al. (2017), Section 4.3: a weight with :math:`\log\alpha > 3` (a Gaussian
    dropout rate :math:`p = \alpha/(1+\alpha) > 0.95`) carries almost only noise; the
    deterministic (evaluation) network drops it.

    Args:
      theta: the weight means.
      log_alpha: :math:`\log\alpha`, broadcastable to ``theta``.
      threshold: the pruning threshold on :math:`\log\alpha` (default 3).

    Returns:
      ``theta`` with the pruned entries set to zero, same dtype.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> dropjax.sparsify(jnp.array([1.0, 2.0, 3.0]), jnp.array([-5.0, 4.0, 2.9])).tolist()
      [1.0, 0.0, 3.0]
    """
    theta = jnp.asarray(theta)
    return jnp.where(jnp.asarray(log_alpha) > threshold, jnp.zeros((), theta.dtype), theta)


def _prepare(
    name: str,
    key: jax.Array | None,
    x: ArrayLike,
    kernel: ArrayLike,
    log_alpha: ArrayLike,
    bias: ArrayLike | None,
    threshold: float | None,
    deterministic: bool,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None, np.dtype, jax.Array | None]:
    order = "key, x, kernel, log_alpha"
    example = f"{name}(jax.random.key(0), x, kernel, log_alpha)"
    x = _c.check_floating(x, name, key=key, order=order, example=example)
    kernel = _floating(kernel, name, "kernel")
    log_alpha = _floating(log_alpha, name, "log_alpha")
    _check_broadcast(name, "log_alpha", log_alpha.shape, kernel.shape)
    if bias is not None:
        bias = _floating(bias, name, "bias")
    compute = _compute_dtype(x.dtype)
    kernel = kernel.astype(compute)
    log_alpha = log_alpha.astype(compute)
    if threshold is not None:
        kernel = sparsify(kernel, log_alpha, threshold)
    if not deterministic:
        key = _c.check_key(key, name, order=order)
    return x, kernel, log_alpha, bias, compute, key


def _finish(
    key: jax.Array | None,
    mean: jax.Array,
    var: jax.Array | None,
    bias: jax.Array | None,
    dtype: DTypeLike,
    deterministic: bool,
) -> jax.Array:
    compute = mean.dtype
    y = mean
    if not deterministic:
        assert key is not None and var is not None  # _prepare checked the key; the core drew var
        y = mean + _safe_sqrt(var) * jax.random.normal(key, mean.shape, compute)
    if bias is not None:
        y = y + bias.astype(compute)
    return y.astype(dtype)


def variational_dense(
    key: jax.Array | None,
    x: ArrayLike,
    kernel: ArrayLike,
    log_alpha: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    threshold: float | None = None,
    deterministic: bool = False,
) -> jax.Array:
    r"""A dense layer with Gaussian weight noise, sampled by local reparameterisation.

    The weights are :math:`w_{ij} \sim \mathcal{N}(\theta_{ij}, \alpha_{ij}\theta_{ij}^2)`,
    independently. Instead of drawing a weight matrix, Kingma et al. (2015), Section 2.3,
    draw the pre-activations, which are Gaussian given the input:

    .. math::

        b_{j} = \mu_j + \sqrt{v_j}\,\epsilon_j, \qquad
        \mu = x\,\theta, \qquad v = x^2\,(\alpha \odot \theta^2), \qquad
        \epsilon \sim \mathcal{N}(0, I),

    one independent draw per example and output unit, which lowers the gradient variance
    and costs two matrix products. ``bias`` is added without noise.

    Args:
      key: one PRNG key; may be None when ``deterministic``.
      x: input of shape ``(..., in)``.
      kernel: :math:`\theta`, shape ``(in, out)``.
      log_alpha: :math:`\log\alpha`, broadcastable to ``(in, out)``: a scalar (one per
        layer), ``(out,)`` (one per output unit), ``(in, 1)`` (one per input unit), or
        ``(in, out)`` (one per weight, as sparse VD). May be traced; differentiable.
      bias: optional ``(out,)`` bias.
      threshold: if given, weights with ``log_alpha > threshold`` are zeroed first
        (:func:`sparsify`), in the mean and the variance (Molchanov et al.'s evaluation
        mode, and their "train_clip" training option).
      deterministic: if True, return the mean :math:`x\theta + b` (no key needed).

    Returns:
      ``(..., out)`` pre-activations in ``x``'s dtype (computed in at least float32).

    Raises:
      ValueError: a ``log_alpha`` that does not broadcast to the kernel.
      TypeError: a non-floating argument; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x, w = jnp.ones((2, 3)), jnp.ones((3, 4))
      >>> dropjax.variational_dense(jax.random.key(0), x, w, jnp.full((3, 4), -1.0)).shape
      (2, 4)
      >>> dropjax.variational_dense(None, x, w, 0.0, deterministic=True)[0].tolist()
      [3.0, 3.0, 3.0, 3.0]
    """
    name = "variational_dense"
    x, kernel, log_alpha, bias, compute, key = _prepare(
        name, key, x, kernel, log_alpha, bias, threshold, deterministic
    )
    if kernel.ndim != 2 or x.ndim < 1 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(
            f"{name}: kernel must be (in, out) with in = x.shape[-1]; got x {x.shape}, "
            f"kernel {kernel.shape}"
        )
    return _dense_core(key, x, kernel, log_alpha, bias, deterministic)


@functools.partial(jax.jit, static_argnums=(5,))
def _dense_core(key, x, kernel, log_alpha, bias, deterministic):
    xc = x.astype(kernel.dtype)
    mean = xc @ kernel
    var = None if deterministic else jnp.square(xc) @ (jnp.exp(log_alpha) * jnp.square(kernel))
    return _finish(key, mean, var, bias, x.dtype, deterministic)


def _dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
    """Channels last: inputs ``(N, *spatial, C)``, kernels ``(*spatial, I, O)``."""
    spatial = tuple(range(1, ndim - 1))
    return lax.ConvDimensionNumbers(
        lhs_spec=(0, ndim - 1, *spatial),
        rhs_spec=(ndim - 1, ndim - 2, *range(ndim - 2)),
        out_spec=(0, ndim - 1, *spatial),
    )


def variational_conv(
    key: jax.Array | None,
    x: ArrayLike,
    kernel: ArrayLike,
    log_alpha: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    strides: int | Sequence[int] = 1,
    padding: str | Sequence[Sequence[int]] = "SAME",
    kernel_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    threshold: float | None = None,
    deterministic: bool = False,
) -> jax.Array:
    r"""A convolution with Gaussian weight noise, sampled by local reparameterisation.

    The convolutional analogue of :func:`variational_dense` (Molchanov et al. 2017,
    Section 4.1): an output is a sum of input-times-weight products, so with independent
    :math:`w \sim \mathcal{N}(\theta, \alpha\theta^2)` it is Gaussian with

    .. math::

        \mu = x \star \theta, \qquad v = x^2 \star (\alpha \odot \theta^2), \qquad
        b = \mu + \sqrt{v}\,\epsilon,

    where :math:`\star` is ``lax.conv_general_dilated`` with the same strides, padding and
    dilation, and :math:`\epsilon` is one normal draw per output element. Layout is
    channels last, as ``flax.linen.Conv``: ``x`` is ``(batch, *spatial, in)``, the kernel
    ``(*window, in // feature_group_count, out)``.

    Args:
      key: one PRNG key; may be None when ``deterministic``.
      x: input ``(batch, *spatial, in)``.
      kernel: :math:`\theta`, ``(*window, in // groups, out)``.
      log_alpha: :math:`\log\alpha`, broadcastable to the kernel; differentiable.
      bias: optional ``(out,)`` bias, added without noise.
      strides: window strides (an int for every spatial axis, or one per axis).
      padding: ``"SAME"``, ``"VALID"`` or a sequence of ``(low, high)`` pairs.
      kernel_dilation: kernel (rhs) dilation, an int or one per spatial axis.
      feature_group_count: as in ``lax.conv_general_dilated``.
      threshold: if given, weights with ``log_alpha > threshold`` are zeroed first.
      deterministic: if True, return the mean convolution plus bias (no key needed).

    Returns:
      ``(batch, *out_spatial, out)`` pre-activations in ``x``'s dtype.

    Raises:
      ValueError: mismatched ranks, or a ``log_alpha`` that does not broadcast.
      TypeError: a non-floating argument; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x, w = jnp.ones((2, 5, 5, 3)), jnp.full((3, 3, 3, 4), 0.1)
      >>> dropjax.variational_conv(jax.random.key(0), x, w, jnp.float32(-2.0)).shape
      (2, 5, 5, 4)
    """
    name = "variational_conv"
    x, kernel, log_alpha, bias, compute, key = _prepare(
        name, key, x, kernel, log_alpha, bias, threshold, deterministic
    )
    if x.ndim < 3 or kernel.ndim != x.ndim:
        raise ValueError(
            f"{name}: x must be (batch, *spatial, in) and the kernel (*window, in, out) of the "
            f"same rank; got x {x.shape}, kernel {kernel.shape}"
        )
    n = x.ndim - 2
    as_tuple = lambda v: (int(v),) * n if isinstance(v, (int, np.integer)) else tuple(map(int, v))
    pad = padding if isinstance(padding, str) else tuple(tuple(map(int, p)) for p in padding)
    config = (as_tuple(strides), pad, as_tuple(kernel_dilation), int(feature_group_count))
    return _conv_core(key, x, kernel, log_alpha, bias, deterministic, config)


@functools.partial(jax.jit, static_argnums=(5, 6))
def _conv_core(key, x, kernel, log_alpha, bias, deterministic, config):
    strides, padding, dilation, groups = config
    conv = functools.partial(
        lax.conv_general_dilated,
        window_strides=strides,
        padding=padding,
        rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(x.ndim),
        feature_group_count=groups,
    )
    xc = x.astype(kernel.dtype)
    mean = conv(xc, kernel)
    var = None
    if not deterministic:
        var = conv(jnp.square(xc), jnp.broadcast_to(jnp.exp(log_alpha), kernel.shape) * kernel**2)
    return _finish(key, mean, var, bias, x.dtype, deterministic)


def variational_log_alpha(
    theta: ArrayLike, log_sigma2: ArrayLike, *, clip: float | None = 8.0, eps: float = 1e-8
) -> jax.Array:
    r""":math:`\log\alpha` from the additive reparameterisation (Molchanov et al. 2017, Eq. 12).

    Sparse VD learns :math:`\theta` and :math:`\log\sigma^2` with
    :math:`w = \theta + \sigma\epsilon`, so that the noise does not enter the gradient with
    respect to :math:`\theta` multiplied by :math:`\theta`; then
    :math:`\sigma^2 = \alpha\theta^2` gives

    .. math::

        \log\alpha = \operatorname{clip}\big(\log\sigma^2 - \log(\theta^2 + \varepsilon),
        -c, c\big),

    with :math:`c = 8` and :math:`\varepsilon = 10^{-8}` as in the authors' code (the
    clip keeps :math:`\alpha` finite for the variance and the KL; its gradient is zero
    outside the interval).

    Args:
      theta: the weight means.
      log_sigma2: :math:`\log\sigma^2`, same shape (or broadcastable).
      clip: the bound :math:`c` (None: no clipping).
      eps: keeps :math:`\log\theta^2` finite at :math:`\theta = 0`.

    Returns:
      :math:`\log\alpha`, the broadcast shape, at least float32.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> la = dropjax.variational_log_alpha(jnp.array([1.0, 0.0]), jnp.array([-2.0, -2.0]))
      >>> [round(v, 3) for v in la.tolist()]
      [-2.0, 8.0]
    """
    theta = _floating(theta, "variational_log_alpha", "theta")
    log_sigma2 = _floating(log_sigma2, "variational_log_alpha", "log_sigma2")
    compute = _compute_dtype(jnp.promote_types(theta.dtype, log_sigma2.dtype))
    t = theta.astype(compute)
    out = log_sigma2.astype(compute) - jnp.log(jnp.square(t) + eps)
    return out if clip is None else jnp.clip(out, -clip, clip)


def kl_kingma(log_alpha: ArrayLike) -> jax.Array:
    r"""Kingma et al.'s (2015) KL approximation for the log-uniform prior, :math:`\alpha \le 1`.

    Section 3.3 of "Variational Dropout and the Local Reparameterization Trick": with
    :math:`q(w) = \mathcal{N}(\theta, \alpha\theta^2)` and the improper prior
    :math:`p(\log|w|) = \text{const}`, the negative KL depends on :math:`\alpha` only, and
    a cubic polynomial fitted on :math:`\alpha \in (0, 1]` approximates it:

    .. math::

        -D_{KL} \approx \text{const} + \tfrac12\log\alpha + c_1\alpha + c_2\alpha^2
        + c_3\alpha^3,

    :math:`c_1 = 1.16145124`, :math:`c_2 = -1.50204118`, :math:`c_3 = 0.58629921`. The
    paper leaves the constant unspecified (the prior is improper); this function returns
    the KL with the constant set to 0, i.e.
    :math:`-(\tfrac12\log\alpha + c_1\alpha + c_2\alpha^2 + c_3\alpha^3)`.

    **Valid range.** The fit holds for :math:`\alpha \le 1`, i.e. :math:`\log\alpha \le 0`.
    Beyond it the cubic term takes over and the "KL" plunges (about -4170 at
    :math:`\log\alpha = 3`, ``-inf`` once :math:`\alpha^3` overflows), so a model could
    drive its loss down without bound by inflating :math:`\alpha`. As Kingma et al. clip
    :math:`\alpha` at 1 in their experiments, ``log_alpha`` is clipped to ``<= 0`` here:

    .. math::

        \mathrm{kl\_kingma}(\log\alpha) = \mathrm{kl\_kingma}(\min(\log\alpha, 0)),

    so the value is the fit's at :math:`\alpha = 1`, :math:`-(c_1 + c_2 + c_3) \approx
    -0.2457`, for every :math:`\log\alpha \ge 0`, and its gradient there is zero. Below
    0 nothing is clipped (the KL grows as :math:`-\tfrac12\log\alpha` when
    :math:`\alpha \to 0`, as the exact KL does). For learned :math:`\alpha > 1` (sparse
    variational dropout) use :func:`kl_molchanov`, fitted for all :math:`\alpha`.

    Args:
      log_alpha: :math:`\log\alpha`, any shape; differentiable (zero gradient above 0).

    Returns:
      The elementwise KL (up to the constant) of ``min(log_alpha, 0)``, same shape, at
      least float32, finite for every finite or ``+inf`` input; sum it over the weights
      (or units) it describes.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> kl = dropjax.kl_kingma(jnp.log(jnp.array([0.1, 0.5, 1.0])))
      >>> bool((jnp.diff(kl) < 0).all())  # more noise, closer to the prior
      True
    """
    la = _floating(log_alpha, "kl_kingma", "log_alpha")
    la = la.astype(_compute_dtype(la.dtype))
    la = jnp.minimum(la, jnp.zeros((), la.dtype))  # the fit's range, alpha <= 1 (see above)
    c1, c2, c3 = KINGMA_C
    a = jnp.exp(la)
    return -(0.5 * la + a * (c1 + a * (c2 + a * c3)))


def kl_molchanov(log_alpha: ArrayLike) -> jax.Array:
    r"""Molchanov et al.'s (2017) KL approximation for the log-uniform prior, any :math:`\alpha`.

    Eq. 14 of "Variational Dropout Sparsifies Deep Neural Networks":

    .. math::

        -D_{KL}\big(q(w \mid \theta, \alpha) \,\|\, p(w)\big) \approx
        k_1\,\sigma(k_2 + k_3\log\alpha) - \tfrac12\log(1 + \alpha^{-1}) + C,
        \qquad C = -k_1,

    :math:`k_1 = 0.63576`, :math:`k_2 = 1.87320`, :math:`k_3 = 1.48695`, fitted to the
    exact :math:`-D_{KL} = \tfrac12\log\alpha - \mathbb{E}_{\epsilon\sim\mathcal{N}(1,\alpha)}
    \log|\epsilon| + C` (Eq. 13) for all :math:`\alpha`. :math:`C = -k_1` makes the KL tend
    to 0 as :math:`\alpha \to \infty`. It is computed as
    :math:`k_1 - k_1\sigma(k_2 + k_3\log\alpha) + \tfrac12\operatorname{softplus}(-\log\alpha)`,
    finite with finite gradients for any finite ``log_alpha``.

    Args:
      log_alpha: :math:`\log\alpha`, any shape; differentiable.

    Returns:
      The elementwise KL, same shape, at least float32; sum it over the weights.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> kl = dropjax.kl_molchanov(jnp.array([-8.0, 0.0, 8.0]))
      >>> [round(v, 3) for v in kl.tolist()]
      [4.636, 0.431, 0.0]
    """
    la = _floating(log_alpha, "kl_molchanov", "log_alpha")
    la = la.astype(_compute_dtype(la.dtype))
    k1, k2, k3 = MOLCHANOV_K
    return k1 - k1 * jax.nn.sigmoid(k2 + k3 * la) + 0.5 * jax.nn.softplus(-la)


def variational_layers(tree: Any, path: tuple[str, ...] = ()):
    """``(path, mapping)`` for every mapping in ``tree`` that holds kernel and log_sigma2.

    ``path`` joins the keys leading to the mapping with ``"/"`` (``""`` for ``tree``
    itself); mappings are visited in sorted key order.
    """
    if isinstance(tree, Mapping):
        if "kernel" in tree and "log_sigma2" in tree:
            yield "/".join(path), tree
            return
        for name in sorted(tree, key=str):
            yield from variational_layers(tree[name], (*path, str(name)))


def _summary(weights: int, nonzero: int) -> dict[str, Any]:
    return {
        "weights": int(weights),
        "nonzero": int(nonzero),
        "zero_fraction": (weights - nonzero) / weights if weights else 0.0,
        "compression": weights / nonzero if nonzero else math.inf,
    }


def sparsity(params: Any, threshold: float = 3.0, *, clip: float | None = 8.0) -> dict[str, Any]:
    r"""How many weights a sparse-VD network prunes: per layer and in total.

    Every mapping in ``params`` with a ``kernel`` (:math:`\theta`) and a ``log_sigma2`` is a
    variational layer; its pruned kernel is
    ``sparsify(theta, variational_log_alpha(theta, log_sigma2), threshold)``, what the
    deterministic network uses. Biases are not counted (as in Molchanov et al.'s Table 1,
    :math:`|W| / |W \ne 0|` over the weights).

    Every layer is pruned with the same ``threshold`` and ``clip`` given here; a Flax
    model's layers each carry their own, which :func:`dropjax.linen.sparsity` and
    :func:`dropjax.nnx.sparsity` use.

    Args:
      params: a nested mapping of arrays (``variables["params"]`` of a linen model, or the
        pure dict of an NNX model's parameters).
      threshold: the pruning threshold on :math:`\log\alpha`.
      clip: the :math:`\log\alpha` clip of :func:`variational_log_alpha` (None: none).

    Returns:
      ``{"layers": {path: stats}, "total": stats}``, where stats are ``weights``,
      ``nonzero``, ``zero_fraction`` and ``compression`` (weights / nonzero; ``inf`` when all
      are pruned).

    Raises:
      ValueError: ``params`` has no variational layer.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> params = {"fc": {"kernel": jnp.array([[1.0, 0.01]]),
      ...                  "log_sigma2": jnp.full((1, 2), -4.0)}}
      >>> s = dropjax.sparsity(params)
      >>> s["total"]["nonzero"], s["total"]["compression"]
      (1, 2.0)
    """
    return layer_sparsity(
        (path, layer["kernel"], layer["log_sigma2"], threshold, clip)
        for path, layer in variational_layers(params)
    )


def layer_sparsity(layers: Iterable[tuple[str, Any, Any, Any, float | None]]) -> dict[str, Any]:
    """:func:`sparsity` of ``(path, theta, log_sigma2, threshold, clip)`` tuples.

    Each layer is pruned with its own ``threshold`` and ``clip``, exactly as its
    deterministic forward pass prunes it: ``sparsify(theta, variational_log_alpha(theta,
    log_sigma2, clip=clip), threshold)``. The Flax adapters pass each layer's settings.

    Raises:
      ValueError: ``layers`` is empty.
    """
    out = {}
    total_w = total_nz = 0
    for path, kernel, log_sigma2, threshold, clip in layers:
        theta = jnp.asarray(kernel)
        log_alpha = variational_log_alpha(theta, log_sigma2, clip=clip)
        nonzero = int(jnp.count_nonzero(sparsify(theta, log_alpha, threshold)))
        out[path] = _summary(theta.size, nonzero)
        total_w += theta.size
        total_nz += nonzero
    if not out:
        raise ValueError(
            "sparsity found no variational layer (a mapping with 'kernel' and 'log_sigma2') "
            "in params; pass variables['params'] of a model with VariationalDense/Conv layers"
        )
    return {"layers": out, "total": _summary(total_w, total_nz)}
