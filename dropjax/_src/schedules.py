"""Dropout-rate schedules: functions ``step -> rate``, in the style of optax schedules.

A schedule is built once from Python numbers (checked then) and called with the step
count, which may be a Python int or a traced integer array. It returns a float32 array of
the step's shape, so feeding ``dropjax.dropout(key, x, schedule(step))`` inside a jitted
train step traces the step once for all steps: the rate is data, not a constant.

Every rate here is a probability of *dropping* (not the keep rate!).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src import checks as _c

__all__ = [
    "RateSchedule",
    "constant_rate",
    "curriculum_rate",
    "depth_rates",
    "linear_rate",
]

RateSchedule = Callable[[ArrayLike], jax.Array]
"""A function from the step count (int or integer array, may be traced) to a float32 rate."""


def _step(step: ArrayLike) -> jax.Array:
    step = jnp.asarray(step)
    if not (jnp.issubdtype(step.dtype, jnp.integer) or jnp.issubdtype(step.dtype, jnp.floating)):
        raise TypeError(f"a rate schedule needs a numeric step count; got dtype {step.dtype}")
    return step.astype(jnp.float32)


def _count(value: object, name: str, *, positive: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a Python int; got {value!r}")
    value = int(value)
    if positive and value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative int; got {value}")
    return value


def _rate(rate: object, name: str) -> float:
    """A concrete rate as a Python float, validated to lie in ``[0, 1]``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{name} must be a Python float in [0, 1] (schedules are built from numbers; the "
            f"step may be traced); got {rate!r}"
        )
    checked = _c.check_rate(rate, name)
    assert isinstance(checked, float)  # check_rate returns a Python number as a float
    return checked


def constant_rate(rate: float) -> RateSchedule:
    r"""A schedule that returns ``rate`` at every step.

    .. math::

        p(t) = \text{rate}

    Args:
      rate: drop probability in ``[0, 1]`` (not the keep rate!).

    Returns:
      A function ``step -> float32 array`` of the step's shape.

    Raises:
      ValueError: ``rate`` outside ``[0, 1]``.
      TypeError: ``rate`` not a Python number.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> schedule = dropjax.constant_rate(0.1)
      >>> round(schedule(1000).item(), 6), schedule(jnp.arange(3)).shape
      (0.1, (3,))
    """
    value = _rate(rate, "rate")

    def schedule(step: ArrayLike) -> jax.Array:
        return jnp.full(jnp.shape(_step(step)), value, jnp.float32)

    return schedule


def linear_rate(
    init_rate: float,
    end_rate: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> RateSchedule:
    r"""A schedule that moves the rate linearly from ``init_rate`` to ``end_rate``.

    As ``optax.linear_schedule``: constant before ``transition_begin``, linear over the next
    ``transition_steps`` steps, constant after.

    .. math::

        p(t) = p_0 + (p_1 - p_0)\,
        \frac{\min(\max(t - t_0, 0), T)}{T}

    Args:
      init_rate: drop probability :math:`p_0` at and before ``transition_begin``.
      end_rate: drop probability :math:`p_1` from ``transition_begin + transition_steps``.
      transition_steps: length :math:`T` of the ramp, a positive int.
      transition_begin: first step :math:`t_0` of the ramp, a non-negative int.

    Returns:
      A function ``step -> float32 array`` of the step's shape.

    Raises:
      ValueError: a rate outside ``[0, 1]``; ``transition_steps <= 0``;
        ``transition_begin < 0``.
      TypeError: a non-number rate or a non-int step count.

    Examples:
      >>> import dropjax
      >>> schedule = dropjax.linear_rate(0.0, 0.5, transition_steps=100)
      >>> [round(schedule(t).item(), 3) for t in (0, 50, 100, 200)]
      [0.0, 0.25, 0.5, 0.5]
    """
    p0 = _rate(init_rate, "init_rate")
    p1 = _rate(end_rate, "end_rate")
    steps = _count(transition_steps, "transition_steps", positive=True)
    begin = _count(transition_begin, "transition_begin", positive=False)

    def schedule(step: ArrayLike) -> jax.Array:
        progress = jnp.clip(_step(step) - begin, 0.0, steps) / steps
        return (p0 + (p1 - p0) * progress).astype(jnp.float32)

    return schedule


def curriculum_rate(final_rate: float, gamma: float) -> RateSchedule:
    r"""Curriculum Dropout (Morerio et al., ICCV 2017): the rate rises from 0 to a limit.

    The paper schedules the *keep* probability
    :math:`\theta(t) = (1 - \bar\theta)\, e^{-\gamma t} + \bar\theta`, starting at 1 (no
    dropout) and decaying to :math:`\bar\theta = 1 - \text{final\_rate}`; as a drop rate:

    .. math::

        p(t) = 1 - \theta(t) = \text{final\_rate}\,\left(1 - e^{-\gamma t}\right)

    so :math:`p(0) = 0` and :math:`p(t) \to \text{final\_rate}`. The rate reaches a fraction
    :math:`1 - e^{-\gamma t}` of its limit at step :math:`t`: ``gamma = 10 / total_steps``
    gets within :math:`e^{-10}` of it by the end of training. Negative steps give 0.

    Args:
      final_rate: limiting drop probability in ``[0, 1]``.
      gamma: decay speed per step, a finite number ``>= 0`` (0 gives rate 0 throughout).

    Returns:
      A function ``step -> float32 array`` of the step's shape.

    Raises:
      ValueError: ``final_rate`` outside ``[0, 1]``; a negative or non-finite ``gamma``.
      TypeError: non-number arguments.

    Examples:
      >>> import dropjax
      >>> schedule = dropjax.curriculum_rate(0.5, gamma=1e-3)
      >>> schedule(0).item(), round(schedule(1000).item(), 4), round(schedule(10**5).item(), 4)
      (0.0, 0.3161, 0.5)
    """
    p = _rate(final_rate, "final_rate")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float, np.integer, np.floating)):
        raise TypeError(f"gamma must be a Python float >= 0; got {gamma!r}")
    g = float(gamma)
    if not (math.isfinite(g) and g >= 0.0):
        raise ValueError(f"gamma must be a finite number >= 0 (decay per step); got {gamma!r}")

    def schedule(step: ArrayLike) -> jax.Array:
        t = jnp.maximum(_step(step), 0.0)
        return (p * -jnp.expm1(-g * t)).astype(jnp.float32)

    return schedule


def depth_rates(max_rate: ArrayLike, num_layers: int) -> tuple[float | jax.Array, ...]:
    r"""Per-layer drop rates of stochastic depth's linear decay rule (Huang et al., 2016).

    Layer :math:`l` of :math:`L` (1-based, counted from the input) gets

    .. math::

        p_l = \frac{l}{L}\, p_{\max}, \qquad l = 1, \dots, L

    i.e. survival probability :math:`1 - \frac{l}{L}(1 - p_L)` with :math:`p_L = p_{\max}`
    for the last layer. The returned tuple is 0-indexed: ``rates[i]`` belongs to layer
    ``i + 1``, so ``rates[0] = max_rate / L`` and ``rates[-1] = max_rate``. (Some code bases
    use ``i / (L - 1)`` instead, giving the first layer rate 0; this is the paper's rule.)

    Args:
      max_rate: drop probability of the last layer, in ``[0, 1]``; a traced scalar gives a
        tuple of traced scalars.
      num_layers: the number of layers ``L``, a positive int.

    Returns:
      A tuple of ``num_layers`` rates: Python floats for a Python ``max_rate``, scalar
      arrays otherwise.

    Raises:
      ValueError: a concrete ``max_rate`` outside ``[0, 1]``; ``num_layers <= 0``.
      TypeError: a non-int ``num_layers``.

    Examples:
      >>> import dropjax
      >>> dropjax.depth_rates(0.5, 4)
      (0.125, 0.25, 0.375, 0.5)
    """
    rate = _c.check_rate(max_rate, "max_rate")
    layers = _count(num_layers, "num_layers", positive=True)
    if isinstance(rate, float):
        return tuple(rate * layer / layers for layer in range(1, layers + 1))
    rate = jnp.asarray(rate)
    if not jnp.issubdtype(rate.dtype, jnp.floating):
        rate = rate.astype(jnp.float32)
    return tuple(rate * (layer / layers) for layer in range(1, layers + 1))
