"""Flax NNX adapters: thin modules over dropjax's functional ops.

``dropjax.nnx.Dropout`` mirrors ``flax.nnx.Dropout``: ``Dropout(rate, *, broadcast_dims,
deterministic, rng_collection, rngs)`` and ``__call__(inputs, *, deterministic=None,
rngs=None)``, where the call-time ``rngs`` (an ``nnx.Rngs``, an ``nnx.RngStream`` or a key)
overrides the stream given to the constructor, and ``model.train()`` / ``model.eval()`` /
``nnx.view`` switch it. The other modules add the variants with the same conventions.

Monte Carlo mode: ``with dropjax.nnx.mc_dropout(model):`` turns every dropout layer of the
model on (dropjax's and ``flax.nnx.Dropout``) and puts BatchNorm in eval (running
averages); the previous settings come back on exit. :func:`dropjax.mc.sample_nnx` (defined
here, with the other Flax glue) draws Monte Carlo samples of an NNX model in that mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

try:
    from flax import nnx
except ImportError as err:  # the optional extra is missing (or flax does not import)
    raise ImportError(
        "dropjax.nnx needs Flax (flax.nnx), which could not be imported: "
        'pip install "dropjax[flax]" (or pip install flax)'
    ) from err

import dropjax
from dropjax._src import checks as _checks
from dropjax._src import mc_mode
from dropjax._src import variational as _variational
from dropjax._src.flax_glue import attention_fn as attention_fn
from dropjax._src.sampling import sample_args

__all__ = [
    "AlphaDropout",
    "ConcreteDropout",
    "DecoupledDense",
    "DecoupledDropout",
    "DropBlock",
    "DropConnectDense",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "RandomRateDropout",
    "SpatialDropout",
    "VariationalConv",
    "VariationalDense",
    "attention_fn",
    "mc_dropout",
    "sparsity",
    "total_kl",
]


_LECUN_NORMAL = nnx.initializers.lecun_normal()  # nnx.Linear's defaults
_ZEROS = nnx.initializers.zeros_init()


def _fork(rngs: nnx.Rngs | nnx.RngStream | None, rng_collection: str) -> nnx.RngStream | None:
    if isinstance(rngs, nnx.Rngs):
        return rngs[rng_collection].fork()
    if isinstance(rngs, nnx.RngStream):
        return rngs.fork()
    if rngs is None:
        return nnx.data(None)
    raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or None; got {type(rngs)}")


class _Stochastic(nnx.Module):
    """Shared plumbing: the deterministic switch and where the key comes from."""

    deterministic: bool | None
    rng_collection: str

    def _init_stochastic(
        self,
        deterministic: bool | None,
        rng_collection: str,
        rngs: nnx.Rngs | nnx.RngStream | None,
    ) -> None:
        # Concrete rates are validated here, at construction; traced ones pass unchanged.
        for name in ("rate", "max_rate", "forward_rate", "backward_rate"):
            if name in vars(self):
                _checks.check_rate(getattr(self, name), f"{type(self).__name__}.{name}")
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs: nnx.RngStream | None = _fork(rngs, rng_collection)

    def _deterministic(self, deterministic: bool | None) -> bool:
        """The call-time flag if given, else the attribute; an error if neither is set."""
        if deterministic is None:
            deterministic = self.deterministic
        if deterministic is None:
            raise ValueError(
                f"{type(self).__name__} needs `deterministic`: pass it to the constructor, "
                "at call time, or use model.train() / model.eval()"
            )
        return bool(deterministic)

    def _draw_key(self, rngs: nnx.Rngs | nnx.RngStream | jax.Array | None) -> jax.Array:
        """A key from the call-time ``rngs`` if given, else from the constructor's stream."""
        source = rngs if rngs is not None else self.rngs
        if source is None:
            raise ValueError(
                f"{type(self).__name__} is not deterministic but has no rngs: pass "
                "rngs=nnx.Rngs(dropout=0) to the constructor or rngs=key at call time"
            )
        if isinstance(source, nnx.Rngs):
            return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            return source()
        if isinstance(source, jax.Array):
            return source
        raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or a key; got {type(source)}")

    def _key(
        self, deterministic: bool | None, rngs: nnx.Rngs | nnx.RngStream | jax.Array | None
    ) -> jax.Array | None:
        """The key for this call, or None when the layer is deterministic."""
        return None if self._deterministic(deterministic) else self._draw_key(rngs)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by ``nnx.view`` and ``model.train()`` / ``model.eval()``."""
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Stochastic):
    """Inverted dropout; a drop-in for ``flax.nnx.Dropout`` built on :func:`dropjax.dropout`.

    Args:
      rate: the dropout probability (*not* the keep rate!). A Python number is validated
        here; a traced rate (e.g. set inside ``nnx.jit`` from a schedule) is accepted and
        never recompiles, and a traced rate outside ``[0, 1]`` (or NaN) gives an all-NaN
        output.
      broadcast_dims: dimensions that share one mask entry.
      deterministic: if True, inputs pass unchanged.
      rng_collection: the rng stream the key is drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` (forked), or None.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
      >>> layer(jnp.ones(4)).shape
      (4,)
      >>> layer(jnp.ones(2), deterministic=True).tolist()
      [1.0, 1.0]
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.rate = rate
        self.broadcast_dims: tuple[int, ...] = tuple(broadcast_dims)
        self._init_stochastic(deterministic, rng_collection, rngs)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Drops inputs with probability ``rate`` and rescales the rest by 1/(1-rate)."""
        rate = _checks.concrete_value(self.rate)  # None when traced: no Python branch on it
        if self._deterministic(deterministic) or rate == 0.0:
            return inputs
        if rate == 1.0:  # as flax: zeros, without drawing a key
            return jnp.zeros_like(inputs)
        key = self._draw_key(rngs)
        return dropjax.dropout(key, inputs, self.rate, broadcast_dims=self.broadcast_dims)


class DecoupledDropout(_Stochastic):
    """Elementwise forward/backward-decoupled dropout (:func:`dropjax.decoupled_dropout`).

    Args:
      forward_rate: drop probability of the forward pass.
      backward_rate: drop probability of the backward mask (extra rate when nested).
      backward: ``"nested"`` (Gao et al.'s augmented dropout) or ``"independent"``.
      broadcast_dims: dimensions that share one mask entry.
      deterministic: if True, inputs pass unchanged.
      rng_collection: the rng stream the key is drawn from.
      rngs: an ``nnx.Rngs`` or ``nnx.RngStream``.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.DecoupledDropout(0.3, 1e-4, rngs=nnx.Rngs(dropout=0))
      >>> layer(jnp.ones(3)).shape
      (3,)
    """

    def __init__(
        self,
        forward_rate: float,
        backward_rate: float,
        *,
        backward: str = "nested",
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.forward_rate = forward_rate
        self.backward_rate = backward_rate
        self.backward = backward
        self.broadcast_dims: tuple[int, ...] = tuple(broadcast_dims)
        self._init_stochastic(deterministic, rng_collection, rngs)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Forward: dropout at ``forward_rate``; backward: the decoupled mask."""
        key = self._key(deterministic, rngs)
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


def _dense(params: tuple[jax.Array, jax.Array | None], x: jax.Array) -> jax.Array:
    kernel, bias = params
    y = jnp.matmul(x, kernel)
    return y if bias is None else y + bias


class DecoupledDense(_Stochastic):
    """``nnx.Linear`` with input dropout in the layer-exact form of Gao et al.'s Eq. 9.

    Forward ``y = (x * eps_f) @ kernel + bias``; backward (:func:`dropjax.decoupled_call`)
    ``dkernel = (x * eps_b)^T delta``, ``dx = (delta @ kernel^T) * eps_b``.

    Args:
      in_features: input size.
      out_features: output size.
      forward_rate: forward drop probability of the input.
      backward_rate: backward drop probability (extra rate when nested).
      backward: ``"nested"`` or ``"independent"``.
      use_bias: whether to add a bias.
      kernel_init: kernel initializer (lecun normal, as ``nnx.Linear``).
      bias_init: bias initializer.
      broadcast_dims: input dimensions that share one mask entry.
      deterministic: if True, a plain linear layer.
      rng_collection: the rng stream the dropout key is drawn from.
      rngs: an ``nnx.Rngs`` with a ``params`` stream (and a dropout stream).

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.DecoupledDense(5, 3, 0.5, 1e-4, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5))).shape
      (2, 3)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        forward_rate: float,
        backward_rate: float,
        *,
        backward: str = "nested",
        use_bias: bool = True,
        kernel_init: Callable[..., Any] = _LECUN_NORMAL,
        bias_init: Callable[..., Any] = _ZEROS,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        self.kernel: nnx.Param[jax.Array] = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features))
        )
        self.bias: nnx.Param[jax.Array] | None = (
            nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None
        )
        self.forward_rate = forward_rate
        self.backward_rate = backward_rate
        self.backward = backward
        self.broadcast_dims: tuple[int, ...] = tuple(broadcast_dims)
        self._init_stochastic(deterministic, rng_collection, rngs)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Applies the decoupled-dropout linear layer."""
        params = (self.kernel[...], None if self.bias is None else self.bias[...])
        key = self._key(deterministic, rngs)
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


_DROPOUT_TYPES = (nnx.Dropout, _Stochastic)


@contextlib.contextmanager
def mc_dropout(model: nnx.Module) -> Iterator[nnx.Module]:
    """Monte Carlo mode for an NNX model: dropout on, BatchNorm in eval, restored on exit.

    Every ``flax.nnx.Dropout`` and dropjax NNX dropout layer gets ``deterministic=False``;
    every ``nnx.BatchNorm`` gets ``use_running_average=True``. Call-time
    ``deterministic=True`` arguments written in model code still win for flax's own
    Dropout; dropjax layers read their attribute unless told otherwise at call time.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.bn = nnx.BatchNorm(4, rngs=rngs)
      ...         self.drop = nnx.Dropout(0.5, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.drop(self.bn(x))
      >>> net = Net(nnx.Rngs(0, dropout=1))
      >>> net.eval()
      >>> with dropjax.nnx.mc_dropout(net):
      ...     y = net(jnp.ones((2, 4)))
      >>> bool((y == 0).any()), net.drop.deterministic
      (True, True)
    """
    saved: list[tuple[nnx.Module, str, bool | None]] = []
    for _, module in nnx.iter_modules(model):
        if isinstance(module, _DROPOUT_TYPES):
            name = mc_mode.DETERMINISTIC
        elif isinstance(module, nnx.BatchNorm):
            name = mc_mode.USE_RUNNING_AVERAGE
        else:
            continue
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, mc_mode.ATTRIBUTES[name])
    try:
        yield model
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def sample_nnx(
    model: nnx.Module,
    x: Any,
    key: jax.Array,
    num_samples: int,
    *,
    rng_collection: str = "dropout",
    chunk_size: int | None = None,
    method: str | Callable[..., Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
    consistent: bool = False,
    batch_axis: int = 0,
    out_batch_axis: int | None = None,
    mesh: Mesh | None = None,
    axis_name: str = "samples",
    **call_kwargs: Any,
) -> Any:
    r"""MC samples of a ``flax.nnx`` model with dropout on and BatchNorm in evaluation mode.

    The model is split once (``nnx.split``) and, for each sample, merged into a private
    copy inside the transform; the copy gets ``attributes`` via ``set_attributes`` (default
    ``deterministic=False, use_running_average=True``: every Dropout on, every BatchNorm on
    its running statistics, whatever mode ``model`` is in; other modules with these
    attributes, e.g. attention dropout, follow) and its ``rng_collection`` RNG streams
    reseeded. With ``keys = jax.random.split(key, num_samples)``, sample ``i`` is

    .. code-block:: python

        copy = nnx.clone(model)
        copy.set_attributes(**attributes, raise_if_not_found=False)
        nnx.reseed(copy, **{rng_collection: keys[i]})
        out[i] = copy(x, **call_kwargs)  # or getattr(copy, method)(x, ...)

    ``model`` itself is never changed: not its mode, not its RNG counters, not its
    BatchNorm statistics. The Dropout layers must own an RNG stream named
    ``rng_collection`` (built with ``rngs=nnx.Rngs(..., dropout=seed)``); for models that
    take ``rngs`` at call time, use :func:`dropjax.mc.sample` with your own ``fn``.

    Args:
      model: a ``flax.nnx.Module``.
      x: the model input (any pytree); the batch with ``consistent=True``.
      key: one PRNG key.
      num_samples: number of samples, a static Python int >= 1.
      rng_collection: the tag of the RNG streams to reseed per sample.
      chunk_size: as in :func:`dropjax.mc.sample`.
      method: name of the method to call, or ``method(module, x, **call_kwargs)``; default
        ``__call__``.
      attributes: module attributes set on the copy, merged over the defaults
        ``{"deterministic": False, "use_running_average": True}`` (e.g.
        ``{"deterministic": True}`` gives the deterministic evaluation-mode output).
      consistent: as in :func:`dropjax.mc.sample`: one dropout mask per sample for the whole batch.
      batch_axis: batch axis of ``x`` (with ``consistent=True``).
      out_batch_axis: batch axis of the outputs (with ``consistent=True``).
      mesh: as in :func:`dropjax.mc.sample`.
      axis_name: as in :func:`dropjax.mc.sample`.
      **call_kwargs: more keyword arguments of the call.

    Returns:
      The model output with a new leading axis of size ``num_samples``.

    Raises:
      ValueError: the model has no RNG stream tagged ``rng_collection``, or as in
        :func:`dropjax.mc.sample`.
      TypeError: as in :func:`dropjax.mc.sample`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from dropjax import mc
      >>> class Net(nnx.Module):
      ...     def __init__(self, rngs):
      ...         self.lin = nnx.Linear(4, 2, rngs=rngs)
      ...         self.drop = nnx.Dropout(0.5, rngs=rngs)
      ...     def __call__(self, x):
      ...         return self.lin(self.drop(x))
      >>> net = Net(nnx.Rngs(params=0, dropout=1))
      >>> net.eval()  # the model's own mode does not matter
      >>> ys = mc.sample_nnx(net, jnp.ones((3, 4)), jax.random.key(2), 5)
      >>> ys.shape, net.drop.deterministic
      ((5, 3, 2), True)
    """
    fn_name = "dropjax.mc.sample_nnx"
    if not isinstance(rng_collection, str):
        raise TypeError(f"{fn_name}: rng_collection must be a str; got {rng_collection!r}")
    tags = {node.key.tag for _, node in nnx.iter_graph(model) if isinstance(node, nnx.RngStream)}
    if rng_collection not in tags:
        raise ValueError(
            f"{fn_name} found no RNG stream named {rng_collection!r} in the model (streams: "
            f"{sorted(tags)}); build its Dropout layers with "
            f"rngs=nnx.Rngs(params=0, {rng_collection}=1), or pass rng_collection= one of the "
            "names above"
        )
    attrs = {**mc_mode.ATTRIBUTES, **(attributes or {})}
    graphdef, state = nnx.split(model)

    def fn(k, inputs, state):
        copy = nnx.merge(graphdef, state)
        if attrs:
            copy.set_attributes(**attrs, raise_if_not_found=False)
        nnx.reseed(copy, **{rng_collection: k})
        if method is None:
            return copy(inputs, **call_kwargs)
        if isinstance(method, str):
            return getattr(copy, method)(inputs, **call_kwargs)
        return method(copy, inputs, **call_kwargs)

    return sample_args(
        fn,
        key,
        num_samples,
        (x, state),
        {},
        chunk_size=chunk_size,
        consistent=consistent,
        batch_axis=(batch_axis, None),
        out_batch_axis=out_batch_axis,
        mesh=mesh,
        axis_name=axis_name,
        fn_name=fn_name,
    )


class _Variant(_Stochastic):
    """Shared call for the variant layers: resolve the key, then ``self._op(key, inputs)``."""

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Applies the layer's noise unless deterministic."""
        key = self._key(deterministic, rngs)
        return inputs if key is None else self._op(key, inputs)

    def _op(self, key: jax.Array, x: jax.Array) -> jax.Array:
        raise NotImplementedError  # each variant applies its own op


class RandomRateDropout(_Variant):
    """Random dropout, ``rho ~ U(0, max_rate)``; see :func:`dropjax.random_rate_dropout`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> dropjax.nnx.RandomRateDropout(0.5, rngs=nnx.Rngs(dropout=0))(jnp.ones(4)).shape
      (4,)
    """

    def __init__(
        self,
        max_rate: float,
        *,
        per_example: bool = False,
        batch_axis: int = 0,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.max_rate = max_rate
        self.per_example = per_example
        self.batch_axis = batch_axis
        self.broadcast_dims: tuple[int, ...] = tuple(broadcast_dims)
        self._init_stochastic(deterministic, rng_collection, rngs)

    def _op(self, key: jax.Array, x: jax.Array) -> jax.Array:
        return dropjax.random_rate_dropout(
            key,
            x,
            self.max_rate,
            per_example=self.per_example,
            batch_axis=self.batch_axis,
            broadcast_dims=self.broadcast_dims,
        )


class _RateOnly(_Variant):
    def __init__(
        self,
        rate: float,
        *,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.rate = rate
        self._init_stochastic(deterministic, rng_collection, rngs)


class GaussianDropout(_RateOnly):
    """Multiplicative ``N(1, rate/(1-rate))`` noise; see :func:`dropjax.gaussian_dropout`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> dropjax.nnx.GaussianDropout(0.2, rngs=nnx.Rngs(dropout=0))(jnp.ones(4)).shape
      (4,)
    """

    def _op(self, key: jax.Array, x: jax.Array) -> jax.Array:
        return dropjax.gaussian_dropout(key, x, self.rate)


class AlphaDropout(_RateOnly):
    """SELU-preserving dropout; see :func:`dropjax.alpha_dropout`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> dropjax.nnx.AlphaDropout(0.1, rngs=nnx.Rngs(dropout=0))(jnp.ones(4)).shape
      (4,)
    """

    def _op(self, key: jax.Array, x: jax.Array) -> jax.Array:
        return dropjax.alpha_dropout(key, x, self.rate)


class SpatialDropout(_Variant):
    """Drops whole feature maps (named axes); see :func:`dropjax.spatial_dropout`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.SpatialDropout(0.5, rngs=nnx.Rngs(dropout=0))
      >>> layer(jnp.ones((2, 4, 4, 3))).shape
      (2, 4, 4, 3)
    """

    def __init__(
        self,
        rate: float,
        *,
        channel_axis: int = -1,
        batch_axis: int | None = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.rate = rate
        self.channel_axis = channel_axis
        self.batch_axis = batch_axis
        self._init_stochastic(deterministic, rng_collection, rngs)

    def _op(self, key: jax.Array, x: jax.Array) -> jax.Array:
        return dropjax.spatial_dropout(
            key, x, self.rate, channel_axis=self.channel_axis, batch_axis=self.batch_axis
        )


class DropBlock(_Variant):
    """DropBlock on NHWC; see :func:`dropjax.dropblock`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.DropBlock(0.1, block_size=3, rngs=nnx.Rngs(dropout=0))
      >>> layer(jnp.ones((2, 8, 8, 3))).shape
      (2, 8, 8, 3)
    """

    def __init__(
        self,
        rate: float,
        *,
        block_size: int | Sequence[int] = 7,
        batch_axis: int | None = 0,
        channel_axis: int | None = -1,
        share_channels: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.rate = rate
        self.block_size = block_size
        self.batch_axis = batch_axis
        self.channel_axis = channel_axis
        self.share_channels = share_channels
        self._init_stochastic(deterministic, rng_collection, rngs)

    def _op(self, key: jax.Array, x: jax.Array) -> jax.Array:
        return dropjax.dropblock(
            key,
            x,
            self.rate,
            block_size=self.block_size,
            batch_axis=self.batch_axis,
            channel_axis=self.channel_axis,
            share_channels=self.share_channels,
        )


class DropPath(_Variant):
    """Stochastic depth for a residual branch; see :func:`dropjax.drop_path`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> dropjax.nnx.DropPath(0.2, rngs=nnx.Rngs(dropout=0))(jnp.ones((4, 3))).shape
      (4, 3)
    """

    def __init__(
        self,
        rate: float,
        *,
        batch_axis: int | None = 0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.rate = rate
        self.batch_axis = batch_axis
        self._init_stochastic(deterministic, rng_collection, rngs)

    def _op(self, key: jax.Array, x: jax.Array) -> jax.Array:
        return dropjax.drop_path(key, x, self.rate, batch_axis=self.batch_axis)


class DropConnectDense(_Stochastic):
    """``nnx.Linear`` with dropped weights; see :func:`dropjax.dropconnect_dense`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> dropjax.nnx.DropConnectDense(4, 3, 0.5, rngs=nnx.Rngs(0))(jnp.ones((2, 4))).shape
      (2, 3)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: float,
        *,
        per_example: bool = False,
        use_bias: bool = True,
        kernel_init: Callable[..., Any] = _LECUN_NORMAL,
        bias_init: Callable[..., Any] = _ZEROS,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        self.kernel: nnx.Param[jax.Array] = nnx.Param(
            kernel_init(rngs.params(), (in_features, out_features))
        )
        self.bias: nnx.Param[jax.Array] | None = (
            nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None
        )
        self.rate = rate
        self.per_example = per_example
        self._init_stochastic(deterministic, rng_collection, rngs)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Applies the layer with a dropped kernel unless deterministic."""
        params = (self.kernel[...], None if self.bias is None else self.bias[...])
        key = self._key(deterministic, rngs)
        if key is None:
            return _dense(params, inputs)
        return dropjax.dropconnect_dense(
            key, inputs, params[0], params[1], self.rate, per_example=self.per_example
        )


class ConcreteDropout(_Stochastic):
    """Concrete dropout with a learned rate (Gal, Hron & Kendall 2017).

    ``rate_logit`` is an ``nnx.Param``. :meth:`regularizer` returns
    :func:`dropjax.concrete_dropout_regularizer` for this layer (pass the following layer's
    kernel as ``weight`` for the weight term); add it to the loss.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.ConcreteDropout(rngs=nnx.Rngs(dropout=0))
      >>> layer(jnp.ones((2, 4))).shape, layer.regularizer(input_dim=4).shape
      ((2, 4), ())
    """

    def __init__(
        self,
        *,
        init_rate: float = 0.1,
        temperature: float = 0.1,
        weight_regularizer: float = 1e-6,
        dropout_regularizer: float = 1e-5,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        init = _checks.concrete_value(init_rate)
        if init is not None and not 0.0 < init < 1.0:
            raise ValueError(
                f"ConcreteDropout: init_rate is the initial drop probability and must be in "
                f"(0, 1) (its logit is learned); got {init_rate!r}"
            )
        logit = jnp.log(jnp.float32(init_rate)) - jnp.log1p(-jnp.float32(init_rate))
        self.rate_logit: nnx.Param[jax.Array] = nnx.Param(logit)
        self.temperature = temperature
        self.weight_regularizer = weight_regularizer
        self.dropout_regularizer = dropout_regularizer
        self._init_stochastic(deterministic, rng_collection, rngs)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Applies concrete dropout unless deterministic."""
        key = self._key(deterministic, rngs)
        if key is None:
            return inputs
        return dropjax.concrete_dropout(
            key, inputs, self.rate_logit[...], temperature=self.temperature
        )

    def regularizer(self, *, input_dim: int, weight: Any = None) -> jax.Array:
        """The layer's regulariser (weight term only when ``weight`` is given)."""
        return dropjax.concrete_dropout_regularizer(
            self.rate_logit[...],
            () if weight is None else weight,
            weight_regularizer=self.weight_regularizer,
            dropout_regularizer=self.dropout_regularizer,
            input_dim=input_dim,
        )


# --- Variational dropout with learned rates (Kingma et al. 2015; Molchanov et al. 2017) -----


class _Variational(_Stochastic):
    """Shared parameters and call of the sparse variational dropout layers."""

    def _init_variational(
        self,
        kernel: jax.Array,
        use_bias: bool,
        bias_init: Callable[..., Any],
        features: int,
        rngs: nnx.Rngs,
        cfg: dict[str, Any],
    ) -> None:
        self.kernel: nnx.Param[jax.Array] = nnx.Param(kernel)
        self.log_sigma2: nnx.Param[jax.Array] = nnx.Param(
            jnp.full(kernel.shape, cfg["log_sigma2_init"], kernel.dtype)
        )
        self.bias: nnx.Param[jax.Array] | None = (
            nnx.Param(bias_init(rngs.params(), (features,))) if use_bias else None
        )
        self.threshold: float = cfg["threshold"]
        self.clip: float = cfg["clip"]
        self.train_clip: bool = cfg["train_clip"]
        self._init_stochastic(cfg["deterministic"], cfg["rng_collection"], rngs)

    def log_alpha(self) -> jax.Array:
        """:math:`\\log\\alpha` per weight (:func:`dropjax.variational_log_alpha`, clipped)."""
        return dropjax.variational_log_alpha(self.kernel[...], self.log_sigma2[...], clip=self.clip)

    def kl(self) -> jax.Array:
        """This layer's KL term, :func:`dropjax.kl_molchanov` summed over the kernel."""
        return dropjax.kl_molchanov(self.log_alpha()).sum()

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Samples pre-activations (training) or applies the pruned mean layer."""
        bias = None if self.bias is None else self.bias[...]
        log_alpha = self.log_alpha()
        key = self._key(deterministic, rngs)
        if key is None:
            return self._op(None, inputs, log_alpha, bias, self.threshold, True)
        threshold = self.threshold if self.train_clip else None
        return self._op(key, inputs, log_alpha, bias, threshold, False)

    def _op(
        self,
        key: jax.Array | None,
        x: jax.Array,
        log_alpha: jax.Array,
        bias: jax.Array | None,
        threshold: float | None,
        det: bool,
    ) -> jax.Array:
        raise NotImplementedError  # the dense or the convolutional layer


def _variational_cfg(
    log_sigma2_init: float,
    threshold: float,
    clip: float,
    train_clip: bool,
    deterministic: bool | None,
    rng_collection: str,
) -> dict[str, Any]:
    return {
        "log_sigma2_init": log_sigma2_init,
        "threshold": threshold,
        "clip": clip,
        "train_clip": train_clip,
        "deterministic": deterministic,
        "rng_collection": rng_collection,
    }


class VariationalDense(_Variational):
    """Sparse variational dropout linear layer (Molchanov, Ashukha & Vetrov, ICML 2017).

    ``kernel`` (:math:`\\theta`), ``log_sigma2`` and ``bias`` are ``nnx.Param``;
    :meth:`log_alpha` is :func:`dropjax.variational_log_alpha`. Training: pre-activations
    by the local reparameterisation trick (:func:`dropjax.variational_dense`), the key from
    the call-time ``rngs`` or the constructor's stream, as :class:`Dropout`. Evaluation
    (``deterministic=True``, ``model.eval()``): the mean layer with every weight whose
    :math:`\\log\\alpha` exceeds ``threshold`` set to zero. Add :meth:`kl` (or
    :func:`total_kl` of the whole model), times a KL weight, to the data term; the ELBO per
    example is ``cross_entropy_mean + total_kl(model) / num_train``. :func:`sparsity`
    reports the pruning.

    Args:
      in_features: input size.
      out_features: output size.
      use_bias: whether to add a (noise-free, not pruned) bias.
      kernel_init: :math:`\\theta` initializer (lecun normal, as ``nnx.Linear``).
      bias_init: bias initializer.
      log_sigma2_init: initial :math:`\\log\\sigma^2` (-10, as the authors' code).
      threshold: :math:`\\log\\alpha` above which a weight is pruned (3).
      clip: :math:`\\log\\alpha` is clipped to ``[-clip, clip]`` (8).
      train_clip: also zero the pruned weights while training.
      deterministic: if True, the pruned mean layer.
      rng_collection: the rng stream the noise key is drawn from.
      rngs: an ``nnx.Rngs`` with a ``params`` stream (and a dropout stream).

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.VariationalDense(5, 3, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5))).shape, layer.kl().shape
      ((2, 3), ())
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        kernel_init: Callable[..., Any] = _LECUN_NORMAL,
        bias_init: Callable[..., Any] = _ZEROS,
        log_sigma2_init: float = -10.0,
        threshold: float = 3.0,
        clip: float = 8.0,
        train_clip: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        kernel = kernel_init(rngs.params(), (in_features, out_features))
        cfg = _variational_cfg(
            log_sigma2_init, threshold, clip, train_clip, deterministic, rng_collection
        )
        self._init_variational(kernel, use_bias, bias_init, out_features, rngs, cfg)

    def _op(
        self,
        key: jax.Array | None,
        x: jax.Array,
        log_alpha: jax.Array,
        bias: jax.Array | None,
        threshold: float | None,
        det: bool,
    ) -> jax.Array:
        return dropjax.variational_dense(
            key, x, self.kernel[...], log_alpha, bias, threshold=threshold, deterministic=det
        )


class VariationalConv(_Variational):
    """Sparse variational dropout convolution, channels last (as ``nnx.Conv``).

    As :class:`VariationalDense`, with :func:`dropjax.variational_conv`. The kernel is
    ``(*kernel_size, in_features // feature_group_count, out_features)``.

    Args:
      in_features: input channels.
      out_features: output channels.
      kernel_size: the window, one int per spatial axis; an int ``k`` means ``(k,)`` (a
        1-D convolution), as in ``nnx.Conv``.
      strides: an int or one per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs.
      kernel_dilation: an int or one per spatial axis.
      feature_group_count: grouped convolution.

    ``use_bias``, ``kernel_init``, ``bias_init``, ``log_sigma2_init``, ``threshold``, ``clip``,
    ``train_clip``, ``deterministic``, ``rng_collection`` and ``rngs`` are as in
    :class:`VariationalDense`.

    Examples:
      >>> import jax.numpy as jnp, dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.VariationalConv(3, 4, (3, 3), rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 6, 6, 3))).shape
      (2, 6, 6, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: str | Sequence[tuple[int, int]] = "SAME",
        kernel_dilation: int | Sequence[int] = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        kernel_init: Callable[..., Any] = _LECUN_NORMAL,
        bias_init: Callable[..., Any] = _ZEROS,
        log_sigma2_init: float = -10.0,
        threshold: float = 3.0,
        clip: float = 8.0,
        train_clip: bool = False,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
            kernel_size = (int(kernel_size),)  # as nnx.Conv: an int is a 1-D window
        # A bool is an int to mypy but not to the check above: tuple(True) raises TypeError.
        window = tuple(kernel_size)  # type: ignore[arg-type]
        shape = (*window, in_features // feature_group_count, out_features)
        kernel = kernel_init(rngs.params(), shape)
        self.strides: int | tuple[int, ...] = (
            strides if isinstance(strides, int) else tuple(strides)
        )
        self.padding: str | tuple[tuple[int, ...], ...] = (
            padding if isinstance(padding, str) else tuple(map(tuple, padding))
        )
        self.kernel_dilation: int | tuple[int, ...] = (
            kernel_dilation if isinstance(kernel_dilation, int) else tuple(kernel_dilation)
        )
        self.feature_group_count: int = feature_group_count
        cfg = _variational_cfg(
            log_sigma2_init, threshold, clip, train_clip, deterministic, rng_collection
        )
        self._init_variational(kernel, use_bias, bias_init, out_features, rngs, cfg)

    def _op(
        self,
        key: jax.Array | None,
        x: jax.Array,
        log_alpha: jax.Array,
        bias: jax.Array | None,
        threshold: float | None,
        det: bool,
    ) -> jax.Array:
        return dropjax.variational_conv(
            key,
            x,
            self.kernel[...],
            log_alpha,
            bias,
            strides=self.strides,
            padding=self.padding,
            kernel_dilation=self.kernel_dilation,
            feature_group_count=self.feature_group_count,
            threshold=threshold,
            deterministic=det,
        )


def total_kl(model: nnx.Module) -> jax.Array:
    """The sum of :meth:`VariationalDense.kl` over every variational layer of ``model``.

    Examples:
      >>> import dropjax.nnx
      >>> from flax import nnx
      >>> layer = dropjax.nnx.VariationalDense(4, 2, rngs=nnx.Rngs(0))
      >>> bool(dropjax.nnx.total_kl(layer) == layer.kl())
      True
    """
    total = jnp.zeros((), jnp.float32)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, _Variational):
            total = total + module.kl()
    return total


def sparsity(
    model: nnx.Module, threshold: float | None = None, *, clip: float | None = None
) -> dict[str, Any]:
    """Pruned fraction and compression of an NNX model's variational layers.

    Counts, per layer, the weights its deterministic pass keeps: ``kernel`` zeroed where
    :meth:`VariationalDense.log_alpha` (clipped to ``±clip``) exceeds ``threshold``, as
    :func:`dropjax.sparsity` does, with **each layer's own** ``threshold`` and ``clip``
    (its constructor arguments). Layer names are attribute paths, e.g. ``"fc1"``.

    Args:
      model: an NNX module holding :class:`VariationalDense`/:class:`VariationalConv`
        layers (or one such layer).
      threshold: if given, this pruning threshold for every layer instead of its own.
      clip: if given, this :math:`\\log\\alpha` clip for every layer instead of its own
        (``math.inf`` for no clip).

    Returns:
      As :func:`dropjax.sparsity`: ``{"layers": {path: stats}, "total": stats}``.

    Raises:
      ValueError: the model has no variational layer.

    Examples:
      >>> import dropjax.nnx
      >>> from flax import nnx
      >>> s = dropjax.nnx.sparsity(dropjax.nnx.VariationalDense(4, 2, rngs=nnx.Rngs(0)))
      >>> s["total"]["weights"], s["total"]["compression"]
      (8, 1.0)
      >>> pruned = dropjax.nnx.VariationalDense(4, 2, threshold=-20.0, rngs=nnx.Rngs(0))
      >>> dropjax.nnx.sparsity(pruned)["total"]["compression"]  # every weight pruned
      inf
    """
    found = [
        (tuple(str(part) for part in path), module)
        for path, module in nnx.iter_modules(model)
        if isinstance(module, _Variational)
    ]
    layers = sorted(found, key=lambda item: item[0])
    return _variational.layer_sparsity(
        (
            "/".join(path),
            module.kernel[...],
            module.log_sigma2[...],
            module.threshold if threshold is None else threshold,
            module.clip if clip is None else clip,
        )
        for path, module in layers
    )
