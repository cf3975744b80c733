"""Projecting dropout noise back into input space (Bouthillier et al. 2015, Sec. 3.1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["BackprojectResult", "backproject"]


class BackprojectResult(NamedTuple):
    """What :func:`backproject` returns.

    Attributes:
      x: the back-projected inputs :math:`x^*`, same shape as the initial point.
      losses: the objective at the start of each step, shape ``(steps,)``.
    """

    x: jax.Array
    losses: jax.Array


def backproject(
    features_fn: Callable[[jax.Array], Any],
    targets: Any,
    init: ArrayLike,
    *,
    steps: int = 200,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    layer_weights: Sequence[float] | None = None,
    bounds: tuple[float, float] | None = None,
) -> BackprojectResult:
    r"""Finds inputs whose clean hidden activations match given (dropout-noised) ones.

    Bouthillier et al.'s Eq. 5/8: with :math:`f^{(i)}` the clean network's activations at
    hidden layer :math:`i` and :math:`\tilde f^{(i)}(x)` the activations of the same network
    with dropout noise, minimise by gradient descent over :math:`x^*`

    .. math::

        L(x^*) = \sum_i \lambda_i \,\lVert f^{(i)}(x^*) - \tilde f^{(i)}(x) \rVert^2

    summed over the batch (examples do not interact, so each gets its own gradient). For
    one :math:`x^{(i)*}` per layer, as the paper does, call it once per layer with
    ``features_fn`` returning that layer only. Heavy-ball momentum; if ``bounds`` is given,
    each step is projected onto the box (e.g. ``(0, 1)`` for pixel intensities).

    Args:
      features_fn: ``x -> activations`` (an array or a sequence of arrays, one per layer) of
        the *clean* network.
      targets: the noisy activations to match, same structure as ``features_fn``'s output.
      init: the starting point, usually the clean input ``x`` itself.
      steps: number of gradient steps (static).
      learning_rate: step size.
      momentum: heavy-ball momentum in ``[0, 1)``.
      layer_weights: :math:`\lambda_i`, one per layer (default all 1).
      bounds: optional ``(low, high)`` box for :math:`x^*`.

    Returns:
      A :class:`BackprojectResult` with ``x`` (the :math:`x^*`) and the loss curve.

    Raises:
      ValueError: non-positive ``steps`` or ``learning_rate``, ``momentum`` outside
        ``[0, 1)``, or a ``layer_weights`` length that does not match the layers.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> w = jnp.array([[2.0, 0.0], [0.0, 0.5]])
      >>> relu_layer = lambda x: jax.nn.relu(x @ w)
      >>> x = jnp.array([[1.0, 1.0]])
      >>> noisy = dropjax.dropout(jax.random.key(0), relu_layer(x), 0.5)
      >>> res = dropjax.backproject(relu_layer, noisy, x, steps=300, learning_rate=0.05)
      >>> bool(jnp.allclose(relu_layer(res.x), noisy, atol=1e-3))
      True
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
    init = jnp.asarray(init)
    target_leaves = jax.tree.leaves(targets)
    if layer_weights is None:
        layer_weights = [1.0] * len(target_leaves)
    if len(layer_weights) != len(target_leaves):
        raise ValueError(
            f"layer_weights has {len(layer_weights)} entries for {len(target_leaves)} layers"
        )

    def loss(x):
        feats = jax.tree.leaves(features_fn(x))
        if len(feats) != len(target_leaves):
            raise ValueError(
                f"features_fn returned {len(feats)} layers but targets has {len(target_leaves)}"
            )
        return sum(
            lam * jnp.sum(jnp.square(f - t))
            for lam, f, t in zip(layer_weights, feats, target_leaves, strict=True)
        )

    value_and_grad = jax.value_and_grad(loss)

    def step(carry, _):
        x, velocity = carry
        value, grad = value_and_grad(x)
        velocity = momentum * velocity - learning_rate * grad
        x = x + velocity
        if bounds is not None:
            x = jnp.clip(x, bounds[0], bounds[1])
        return (x, velocity), value

    (x, _), losses = jax.lax.scan(step, (init, jnp.zeros_like(init)), None, length=steps)
    return BackprojectResult(x, losses)
