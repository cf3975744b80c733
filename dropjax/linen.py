"""Flax linen adapters: thin modules over dropjax's functional ops.

``dropjax.linen.Dropout`` has exactly ``flax.linen.Dropout``'s constructor and call
signature (``rate, broadcast_dims, deterministic, rng_collection``;
``__call__(inputs, deterministic=None, rng=None)``), so swapping the import is enough. The
other modules add the variants with the same conventions: ``deterministic`` may be given to
the constructor or at call time (exactly once), and the key comes from ``rng`` or from
``self.make_rng(rng_collection)``.

Monte Carlo mode: inside ``with dropjax.linen.mc_dropout():`` every dropout layer, dropjax's
and ``flax.linen.Dropout``, samples even when the model is applied with
``deterministic=True`` / ``train=False``, while BatchNorm and everything else stay in the
mode the model was called with. No model code changes.

Modules contain no maths of their own; they call the functional ops.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import dropjax

__all__ = [
    "DecoupledDense",
    "DecoupledDropout",
    "Dropout",
    "mc_dropout",
]

_MC_MODE = contextvars.ContextVar("dropjax_linen_mc_mode", default=False)


def _resolve(module: nn.Module, deterministic: bool | None, rng) -> jax.Array | None:
    """The key to use, or None when the layer is deterministic for this call."""
    deterministic = nn.merge_param("deterministic", module.deterministic, deterministic)
    if deterministic and not _MC_MODE.get():
        return None
    return rng if rng is not None else module.make_rng(module.rng_collection)


def _flax_dropout_interceptor(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, nn.Dropout) and context.method_name == "__call__":
        inputs = args[0] if args else kwargs["inputs"]
        rng = kwargs.get("rng")
        if rng is None:
            rng = module.make_rng(module.rng_collection)
        return dropjax.dropout(rng, inputs, module.rate, broadcast_dims=module.broadcast_dims)
    return next_fun(*args, **kwargs)


@contextlib.contextmanager
def mc_dropout() -> Iterator[None]:
    """Monte Carlo mode: dropout layers sample even when the model runs deterministically.

    Within the context, ``dropjax.linen`` layers ignore ``deterministic=True`` and
    ``flax.linen.Dropout`` layers are replaced, call by call, by
    ``dropjax.dropout(make_rng(rng_collection), x, rate, broadcast_dims=...)``. BatchNorm
    and all other layers are untouched, so apply the model in eval mode (running averages)
    and pass a dropout key: ``model.apply(v, x, train=False, rngs={"dropout": key})``.
    The switch is read at trace time: build (or re-trace) jitted functions inside it.

    Examples:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, dropjax.linen
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train: bool):
      ...         x = nn.BatchNorm(use_running_average=not train)(x)
      ...         return nn.Dropout(0.5, deterministic=not train)(x)
      >>> net, x = Net(), jnp.ones((2, 4))
      >>> v = net.init(jax.random.key(0), x, train=False)
      >>> with dropjax.linen.mc_dropout():
      ...     y = net.apply(v, x, train=False, rngs={"dropout": jax.random.key(1)})
      >>> bool((y == 0).any())
      True
    """
    token = _MC_MODE.set(True)
    try:
        with nn.intercept_methods(_flax_dropout_interceptor):
            yield
    finally:
        _MC_MODE.reset(token)


class Dropout(nn.Module):
    """Inverted dropout; a drop-in for ``flax.linen.Dropout`` built on :func:`dropjax.dropout`.

    Attributes:
      rate: the dropout probability (*not* the keep rate!).
      broadcast_dims: dimensions that share one mask entry.
      deterministic: if True, inputs pass unchanged; may be given here or at call time.
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.Dropout(0.5)
      >>> y = layer.apply({}, jnp.ones(4), deterministic=False,
      ...                 rngs={"dropout": jax.random.key(0)})
      >>> y.shape
      (4,)
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        """Drops inputs with probability ``rate`` and rescales the rest by 1/(1-rate)."""
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if self.rate == 0.0 or (deterministic and not _MC_MODE.get()):
            return inputs
        if self.rate == 1.0:  # as flax: zeros, without drawing a key
            return jnp.zeros_like(inputs)
        key = rng if rng is not None else self.make_rng(self.rng_collection)
        return dropjax.dropout(key, inputs, self.rate, broadcast_dims=self.broadcast_dims)


class DecoupledDropout(nn.Module):
    """Elementwise forward/backward-decoupled dropout (:func:`dropjax.decoupled_dropout`).

    Attributes:
      forward_rate: drop probability of the forward pass.
      backward_rate: drop probability of the backward mask (extra rate when nested).
      backward: ``"nested"`` (Gao et al.'s augmented dropout) or ``"independent"``.
      broadcast_dims: dimensions that share one mask entry.
      deterministic: if True, inputs pass unchanged (both passes).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.DecoupledDropout(0.3, 1e-4, deterministic=False)
      >>> layer.apply({}, jnp.ones(3), rngs={"dropout": jax.random.key(0)}).shape
      (3,)
    """

    forward_rate: float
    backward_rate: float
    backward: str = "nested"
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        """Forward: dropout at ``forward_rate``; backward: the decoupled mask."""
        key = _resolve(self, deterministic, rng)
        if key is None:
            return inputs
        return dropjax.decoupled_dropout(
            key,
            inputs,
            self.forward_rate,
            self.backward_rate,
            backward=self.backward,
            broadcast_dims=self.broadcast_dims,
        )


def _dense(params, x):
    y = jnp.matmul(x, params["kernel"])
    if "bias" in params:
        y = y + params["bias"]
    return y


class DecoupledDense(nn.Module):
    """A dense layer with input dropout in the layer-exact form of Gao et al.'s Eq. 9.

    Forward: ``y = (x * eps_f) @ kernel + bias``. Backward (:func:`dropjax.decoupled_call`):
    ``dkernel = (x * eps_b)^T delta`` and ``dx = (delta @ kernel^T) * eps_b``. With
    ``deterministic=True`` it is a plain dense layer.

    Attributes:
      features: output size.
      forward_rate: forward drop probability of the input.
      backward_rate: backward drop probability (extra rate when nested).
      backward: ``"nested"`` or ``"independent"``.
      use_bias: whether to add a bias.
      kernel_init: kernel initializer (``nn.initializers.lecun_normal()`` as in nn.Dense).
      bias_init: bias initializer.
      broadcast_dims: input dimensions that share one mask entry.
      deterministic: if True, no dropout.
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.DecoupledDense(3, 0.5, 1e-4)
      >>> x = jnp.ones((2, 5))
      >>> v = layer.init(jax.random.key(0), x, deterministic=True)
      >>> layer.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
      (2, 3)
    """

    features: int
    forward_rate: float
    backward_rate: float
    backward: str = "nested"
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs, deterministic: bool | None = None, rng=None):
        """Applies the decoupled-dropout dense layer."""
        params = {"kernel": self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features))}
        if self.use_bias:
            params["bias"] = self.param("bias", self.bias_init, (self.features,))
        key = _resolve(self, deterministic, rng)
        if key is None:
            return _dense(params, inputs)
        return dropjax.decoupled_call(
            key,
            _dense,
            params,
            inputs,
            self.forward_rate,
            self.backward_rate,
            backward=self.backward,
            broadcast_dims=self.broadcast_dims,
        )
