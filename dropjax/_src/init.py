r"""Dropout-aware weight initialisation: variance scaling corrected for the keep probability.

Derivation (ReLU network, inverted dropout of keep probability :math:`q = 1 - p` on each
layer's input). Layer :math:`l` computes :math:`z_{l+1} = W_{l+1}\, \tilde h_l` with
:math:`h_l = \mathrm{relu}(z_l)` and :math:`\tilde h_l = h_l \odot m_l / q`,
:math:`m_l \sim \mathrm{Bernoulli}(q)`. With zero-mean, symmetric pre-activations and
weights of variance :math:`\sigma^2` independent of everything else:

.. math::

    \mathbb{E}[\tilde h^2] = \frac{\mathbb{E}[m^2]}{q^2}\,\mathbb{E}[h^2]
    = \frac{\mathbb{E}[h^2]}{q} = \frac{\mathbb{E}[z_l^2]}{2q}, \qquad
    \mathbb{E}[z_{l+1}^2] = n_\text{in}\,\sigma^2\,\mathbb{E}[\tilde h^2]
    = \frac{n_\text{in}\sigma^2}{2q}\,\mathbb{E}[z_l^2]

so the forward second moment is constant through depth iff
:math:`\sigma^2 = 2q / n_\text{in}`: He initialisation *multiplied* by :math:`1 - p`.
Without the correction it grows like :math:`q^{-L}`. Backwards, the cotangent of
:math:`h_l` is the cotangent of :math:`\tilde h_l` masked and scaled by the same
:math:`m_l / q`, and the ReLU derivative halves the second moment again, so
:math:`\mathbb{E}[g_{z_l}^2] = \frac{n_\text{out}\sigma^2}{2q}\mathbb{E}[g_{z_{l+1}}^2]`:
the same factor with the fan-out, :math:`\sigma^2 = 2q / n_\text{out}`. This is the critical
initialisation of Pretorius et al. (NeurIPS 2018) for multiplicative noise with
:math:`\mathbb{E}[\epsilon^2] = 1/q`.

Convention. With *non-inverted* dropout (the original formulation: :math:`\tilde h = h
\odot m` during training, activations or weights scaled by :math:`q` at test time)
:math:`\mathbb{E}[\tilde h^2] = q\,\mathbb{E}[h^2]`, and the same argument gives
:math:`\sigma^2 = 2 / (q\, n)`: a variance *inversely* proportional to the keep
probability. That is the statement of the explainer this library was planned from ("the
ideal variance for the weights is inversely proportional to the keep probability"); it
holds for non-inverted dropout and is reversed for inverted dropout, which the explainer
(and dropjax) otherwise uses. Both conventions give the same test-time network: the
non-inverted weights scaled by :math:`q` have variance :math:`q^2 \cdot 2/(qn) = 2q/n`.

A consequence worth knowing: the correction preserves the signal of the *training*
(dropped) network. The deterministic evaluation network has
:math:`\mathbb{E}[z_{l+1}^2] = q\,\mathbb{E}[z_l^2]` under it, so its signal shrinks by
:math:`q` per layer (and without the correction the training signal explodes by
:math:`1/q` per layer); no single variance keeps both constant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from dropjax._src import checks as _c

__all__ = ["dropout_he_normal", "dropout_variance_scaling"]

Initializer = Callable[..., jax.Array]

Mode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
Distribution = Literal["truncated_normal", "normal", "uniform"]
_MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


def _keep_factor(rate: ArrayLike, inverted: bool, name: str) -> float | jax.Array:
    rate = _c.check_rate(rate, "rate")
    value = _c.concrete_value(rate)
    if value == 1.0:
        raise ValueError(
            f"{name} got rate=1: every input is dropped, so there is no signal whose variance "
            "could be preserved; pass a rate in [0, 1)"
        )
    keep = 1.0 - value if value is not None else 1.0 - jnp.asarray(rate).astype(jnp.float32)
    return keep if inverted else 1.0 / keep


def dropout_variance_scaling(
    scale: float,
    mode: Mode,
    distribution: Distribution,
    rate: ArrayLike,
    *,
    inverted: bool = True,
    in_axis: int | Sequence[int] = -2,
    out_axis: int | Sequence[int] = -1,
    batch_axis: int | Sequence[int] = (),
    dtype: DTypeLike = jnp.float32,
) -> Initializer:
    r"""``jax.nn.initializers.variance_scaling`` corrected for dropout on the layer input.

    The weights get variance

    .. math::

        \sigma^2 = \frac{\text{scale}}{n} \cdot
        \begin{cases} 1 - p & \text{inverted dropout (the default; dropjax.dropout)} \\
        1 / (1 - p) & \text{non-inverted dropout (scaled at test time)} \end{cases}

    with :math:`n` the fan given by ``mode`` and :math:`p` = ``rate``. Inverted dropout
    multiplies the second moment of the layer input by :math:`1/(1-p)`, so the weights must
    shrink by :math:`1-p` to keep the signal variance constant through depth; see the module
    docstring for the derivation (forward: ``mode="fan_in"``, backward: ``"fan_out"``).
    ``rate`` 0 gives ``variance_scaling(scale, ...)`` itself.

    Args:
      scale: the uncorrected scale (2 for ReLU, 1 for linear/tanh-like units).
      mode: ``"fan_in"`` (forward signal), ``"fan_out"`` (backward signal), ``"fan_avg"``
        or ``"fan_geo_avg"``.
      distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.
      rate: drop probability of the dropout on the layer's input (not the keep rate!), in
        ``[0, 1)``; may be traced when the initializer is called inside ``jit``.
      inverted: True for inverted dropout (kept units scaled by ``1/(1-p)`` during
        training); False for the original non-inverted form.
      in_axis: input axis or axes of the weights array.
      out_axis: output axis or axes.
      batch_axis: axes ignored when computing the fans.
      dtype: default dtype of the weights.

    Returns:
      An initializer ``init(key, shape, dtype=dtype) -> jax.Array``.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1)``; a non-positive ``scale``; an
        unknown ``mode`` or ``distribution``.

    Examples:
      >>> import jax, dropjax
      >>> init = dropjax.dropout_variance_scaling(1.0, "fan_in", "normal", rate=0.5)
      >>> w = init(jax.random.key(0), (1000, 500))
      >>> round(float(w.var() * 1000), 1)  # scale * (1 - p) = 0.5
      0.5
    """
    name = "dropout_variance_scaling"
    if isinstance(scale, (int, float)) and not scale > 0:
        raise ValueError(f"{name} needs scale > 0; got {scale!r}")
    if mode not in _MODES:
        raise ValueError(f"{name} got mode={mode!r}; use one of {_MODES}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"{name} got distribution={distribution!r}; use one of {_DISTRIBUTIONS}")
    factor = _keep_factor(rate, inverted, name)
    return jax.nn.initializers.variance_scaling(
        scale * factor,
        mode,
        distribution,
        in_axis=in_axis,
        out_axis=out_axis,
        batch_axis=batch_axis,
        dtype=dtype,
    )


def dropout_he_normal(
    rate: ArrayLike,
    *,
    mode: Mode = "fan_in",
    inverted: bool = True,
    in_axis: int | Sequence[int] = -2,
    out_axis: int | Sequence[int] = -1,
    batch_axis: int | Sequence[int] = (),
    dtype: DTypeLike = jnp.float32,
) -> Initializer:
    r"""He (Kaiming) normal initialisation for ReLU layers whose input has dropout.

    .. math::

        W \sim \mathcal{N}_{[-2\sigma, 2\sigma]}\!\left(0, \sigma^2\right), \qquad
        \sigma^2 = \frac{2\,(1 - p)}{n}

    (truncated normal, as ``jax.nn.initializers.he_normal``), with :math:`n` the fan-in for
    a constant forward signal or the fan-out (``mode="fan_out"``) for a constant backward
    signal, under inverted dropout of rate :math:`p` on every layer's input. For
    non-inverted dropout (``inverted=False``) the factor is :math:`1/(1-p)` instead. The
    module docstring derives both and explains which convention makes the variance
    proportional, and which inversely proportional, to the keep probability.

    Args:
      rate: drop probability on the layer's input (not the keep rate!), in ``[0, 1)``.
      mode: ``"fan_in"`` (forward), ``"fan_out"`` (backward), ``"fan_avg"`` or
        ``"fan_geo_avg"``.
      inverted: True for inverted dropout (``dropjax.dropout``), False for non-inverted.
      in_axis: input axis or axes of the weights array.
      out_axis: output axis or axes.
      batch_axis: axes ignored when computing the fans.
      dtype: default dtype of the weights.

    Returns:
      An initializer ``init(key, shape, dtype=dtype) -> jax.Array``, usable as a Flax
      ``kernel_init``.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1)``; an unknown ``mode``.

    Examples:
      >>> import jax, dropjax
      >>> w = dropjax.dropout_he_normal(0.5)(jax.random.key(0), (1000, 500))
      >>> round(float(w.var() * 1000), 1)  # 2 * (1 - p)
      1.0
    """
    name = "dropout_he_normal"
    if mode not in _MODES:
        raise ValueError(f"{name} got mode={mode!r}; use one of {_MODES}")
    factor = _keep_factor(rate, inverted, name)
    return jax.nn.initializers.variance_scaling(
        2.0 * factor,
        mode,
        "truncated_normal",
        in_axis=in_axis,
        out_axis=out_axis,
        batch_axis=batch_axis,
        dtype=dtype,
    )
