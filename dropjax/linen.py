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
mode the model was called with. No model code changes. :func:`dropjax.mc.sample_linen`
(defined here, with the other Flax glue) draws Monte Carlo samples of a linen model.

Modules contain no maths of their own; they call the functional ops.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

try:
    import flax.linen as nn
except ImportError as err:  # the optional extra is missing (or flax does not import)
    raise ImportError(
        "dropjax.linen needs Flax (flax.linen), which could not be imported: "
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

_MC_MODE = contextvars.ContextVar("dropjax_linen_mc_mode", default=False)


def _resolve(
    module: nn.Module, deterministic: bool | None, rng: jax.Array | None
) -> jax.Array | None:
    """The key to use, or None when the layer is deterministic for this call."""
    deterministic = nn.merge_param("deterministic", module.deterministic, deterministic)
    if _MC_MODE.get():
        deterministic = mc_mode.ATTRIBUTES[mc_mode.DETERMINISTIC]
    if deterministic:
        return None
    return rng if rng is not None else module.make_rng(module.rng_collection)


_RATE_FIELDS = ("rate", "max_rate", "forward_rate", "backward_rate")


def _check_rates(module: nn.Module) -> None:
    """Validates the module's concrete rates at construction; traced ones pass unchanged."""
    fields = getattr(type(module), "__dataclass_fields__", {})
    for name in _RATE_FIELDS:
        if name in fields:
            _checks.check_rate(getattr(module, name), f"{type(module).__name__}.{name}")


def _flax_dropout_interceptor(
    next_fun: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: nn.module.InterceptorContext,
) -> Any:
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
    **A function jitted before entering the context runs as it was compiled**: calling an
    already-compiled ``jax.jit(model.apply)`` inside ``mc_dropout()`` hits the jit cache,
    so no layer is traced and the context has no effect (dropout stays off). Jit the MC
    function inside the context (or pass a flag such as ``deterministic=False`` that is an
    argument of the jitted function), or use :func:`dropjax.mc.sample_linen`.

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


def sample_linen(
    model: nn.Module,
    variables: Mapping[str, Any],
    x: Any,
    key: jax.Array,
    num_samples: int,
    *,
    rng_collection: str = "dropout",
    chunk_size: int | None = None,
    method: str | Callable[..., Any] | None = None,
    consistent: bool = False,
    batch_axis: int = 0,
    out_batch_axis: int | None = None,
    mesh: Mesh | None = None,
    axis_name: str = "samples",
    **apply_kwargs: Any,
) -> Any:
    r"""MC samples of a ``flax.linen`` model: ``model.apply`` once per dropout key.

    Sample ``i`` is, with ``keys = jax.random.split(key, num_samples)``:

    .. code-block:: python

        model.apply(variables, x, rngs={rng_collection: keys[i]}, method=method, **apply_kwargs)

    Linen modules take their mode from call arguments or attributes, which this function
    cannot see, so **turn dropout on yourself** through ``apply_kwargs`` (e.g.
    ``deterministic=False`` or ``train=True``, whatever your ``__call__`` takes). For MC
    dropout, BatchNorm should use its running averages while dropout is on; give your model
    separate flags if one flag drives both. The variables are never updated: ``apply`` runs
    with ``mutable=False``, so a BatchNorm left in training mode raises instead of silently
    changing its statistics.

    Args:
      model: a ``flax.linen.Module``.
      variables: its variables, e.g. ``{"params": ..., "batch_stats": ...}``.
      x: the model input (any pytree); the batch with ``consistent=True``.
      key: one PRNG key.
      num_samples: number of samples, a static Python int >= 1.
      rng_collection: the rng name the model's dropout layers draw from.
      chunk_size: as in :func:`dropjax.mc.sample`.
      method: passed to ``model.apply`` (a method name or function), default ``__call__``.
      consistent: as in :func:`dropjax.mc.sample`: one dropout mask per sample for the whole batch.
      batch_axis: batch axis of ``x`` (with ``consistent=True``).
      out_batch_axis: batch axis of the outputs (with ``consistent=True``).
      mesh: as in :func:`dropjax.mc.sample`.
      axis_name: as in :func:`dropjax.mc.sample`.
      **apply_kwargs: more arguments of ``model.apply`` and the model, e.g. ``train=True``.

    Returns:
      The model output with a new leading axis of size ``num_samples``.

    Raises:
      ValueError: ``apply_kwargs`` holds ``rngs`` or a truthy ``mutable``, or as in
        :func:`dropjax.mc.sample`.
      TypeError: as in :func:`dropjax.mc.sample`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from dropjax import mc
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, *, mc_dropout: bool):
      ...         x = nn.Dropout(0.5, deterministic=not mc_dropout)(nn.Dense(8)(x))
      ...         return nn.Dense(2)(x)
      >>> net, x = Net(), jnp.ones((3, 4))
      >>> variables = net.init(jax.random.key(0), x, mc_dropout=False)
      >>> ys = mc.sample_linen(net, variables, x, jax.random.key(1), 5, mc_dropout=True)
      >>> ys.shape
      (5, 3, 2)
    """
    fn_name = "dropjax.mc.sample_linen"
    if "rngs" in apply_kwargs:
        raise ValueError(
            f"{fn_name} passes rngs={{rng_collection: key_i}} itself; drop rngs= and set "
            "rng_collection= to the name your dropout layers use"
        )
    if apply_kwargs.get("mutable", False):
        raise ValueError(
            f"{fn_name} never updates the variables (mutable=False); put BatchNorm in "
            "evaluation mode (use_running_average=True) through your model's flags instead"
        )
    apply_kwargs.pop("mutable", None)
    if not isinstance(rng_collection, str):
        raise TypeError(f"{fn_name}: rng_collection must be a str; got {rng_collection!r}")

    def fn(k, inputs, variables):
        rngs = {rng_collection: k}
        return model.apply(variables, inputs, rngs=rngs, method=method, **apply_kwargs)

    out = sample_args(
        fn,
        key,
        num_samples,
        (x, variables),
        {},
        chunk_size=chunk_size,
        consistent=consistent,
        batch_axis=(batch_axis, None),
        out_batch_axis=out_batch_axis,
        mesh=mesh,
        axis_name=axis_name,
        fn_name=fn_name,
    )
    if num_samples > 1 and _all_samples_identical(out):
        warnings.warn(
            f"{fn_name}: all {num_samples} samples are identical, so dropout was off in "
            "every sample. Linen layers take their mode from your call arguments: turn "
            "dropout on through apply_kwargs (e.g. deterministic=False or train=True, "
            "whatever your __call__ takes), or set rng_collection= to the rng name your "
            "dropout layers draw from",
            stacklevel=2,
        )
    return out


def _all_samples_identical(out) -> bool:
    """True when every floating leaf is concrete and equal along its sample axis."""
    leaves = [
        leaf
        for leaf in jax.tree.leaves(out)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    if not leaves or not all(
        isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) for leaf in leaves
    ):
        return False
    return all(bool(jnp.all(leaf == leaf[:1])) for leaf in leaves)


class Dropout(nn.Module):
    """Inverted dropout; a drop-in for ``flax.linen.Dropout`` built on :func:`dropjax.dropout`.

    Attributes:
      rate: the dropout probability (*not* the keep rate!). A Python number is validated
        when the module is built; a traced rate (e.g. a schedule inside ``jit``) is
        accepted and never recompiles, and a traced rate outside ``[0, 1]`` (or NaN) gives
        an all-NaN output.
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

    def __post_init__(self) -> None:
        _check_rates(self)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Drops inputs with probability ``rate`` and rescales the rest by 1/(1-rate)."""
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        rate = _checks.concrete_value(self.rate)  # None when traced: no Python branch on it
        if rate == 0.0 or (deterministic and not _MC_MODE.get()):
            return inputs
        if rate == 1.0:  # as flax: zeros, without drawing a key
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

    def __post_init__(self) -> None:
        _check_rates(self)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
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


def _dense(params: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
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

    def __post_init__(self) -> None:
        _check_rates(self)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies the decoupled-dropout dense layer."""
        params = {
            "kernel": self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features))
        }
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


class _Variant(nn.Module):
    """Shared call for the variant layers: resolve the key, then ``self._op(key, inputs)``."""

    def __post_init__(self) -> None:
        _check_rates(self)
        super().__post_init__()

    def _apply(
        self, inputs: jax.Array, deterministic: bool | None, rng: jax.Array | None
    ) -> jax.Array:
        key = _resolve(self, deterministic, rng)
        return inputs if key is None else self._op(key, inputs)


class RandomRateDropout(_Variant):
    """Bouthillier et al.'s random dropout: rate ``rho ~ U(0, max_rate)`` per call or example.

    See :func:`dropjax.random_rate_dropout`.

    Attributes:
      max_rate: upper end of the drop-rate range, in ``[0, 1]`` (a probability of
        *dropping*); validated at construction when it is a Python number.
      per_example: draw one rate per example along ``batch_axis``.
      batch_axis: the example axis used with ``per_example``.
      broadcast_dims: dimensions that share one mask entry.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.RandomRateDropout(0.5, deterministic=False)
      >>> layer.apply({}, jnp.ones(4), rngs={"dropout": jax.random.key(0)}).shape
      (4,)
    """

    max_rate: float
    per_example: bool = False
    batch_axis: int = 0
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _op(self, key, x):
        return dropjax.random_rate_dropout(
            key,
            x,
            self.max_rate,
            per_example=self.per_example,
            batch_axis=self.batch_axis,
            broadcast_dims=self.broadcast_dims,
        )

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies random-rate dropout unless deterministic."""
        return self._apply(inputs, deterministic, rng)


class GaussianDropout(_Variant):
    """Multiplicative ``N(1, rate/(1-rate))`` noise; see :func:`dropjax.gaussian_dropout`.

    Attributes:
      rate: the drop probability whose variance the noise matches, in ``[0, 1)``.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.GaussianDropout(0.2, deterministic=False)
      >>> layer.apply({}, jnp.ones(4), rngs={"dropout": jax.random.key(0)}).shape
      (4,)
    """

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _op(self, key, x):
        return dropjax.gaussian_dropout(key, x, self.rate)

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies Gaussian dropout unless deterministic."""
        return self._apply(inputs, deterministic, rng)


class AlphaDropout(_Variant):
    """SELU-preserving dropout (Klambauer et al. 2017); see :func:`dropjax.alpha_dropout`.

    Attributes:
      rate: the drop probability (*not* the keep rate!), in ``[0, 1]``.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.AlphaDropout(0.1, deterministic=False)
      >>> layer.apply({}, jnp.ones(4), rngs={"dropout": jax.random.key(0)}).shape
      (4,)
    """

    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _op(self, key, x):
        return dropjax.alpha_dropout(key, x, self.rate)

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies alpha dropout unless deterministic."""
        return self._apply(inputs, deterministic, rng)


class SpatialDropout(_Variant):
    """Drops whole feature maps (named axes); see :func:`dropjax.spatial_dropout`.

    Attributes:
      rate: probability of dropping a feature map (*not* the keep rate!).
      channel_axis: the channel axis (-1 for NHWC, 1 for NCHW).
      batch_axis: the example axis, or None for an unbatched input.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.SpatialDropout(0.5, deterministic=False)
      >>> layer.apply({}, jnp.ones((2, 4, 4, 3)), rngs={"dropout": jax.random.key(0)}).shape
      (2, 4, 4, 3)
    """

    rate: float
    channel_axis: int = -1
    batch_axis: int | None = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _op(self, key, x):
        return dropjax.spatial_dropout(
            key, x, self.rate, channel_axis=self.channel_axis, batch_axis=self.batch_axis
        )

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies spatial dropout unless deterministic."""
        return self._apply(inputs, deterministic, rng)


class DropBlock(_Variant):
    """DropBlock (Ghiasi et al. 2018) on NHWC; see :func:`dropjax.dropblock`.

    Attributes:
      rate: the expected fraction of activations to drop (*not* the keep rate!).
      block_size: the block's side, an int or one int per spatial axis.
      batch_axis: the example axis (renormalisation is per example), or None.
      channel_axis: the channel axis (-1 for NHWC; 1 for NCHW), or None.
      share_channels: one block mask per example, shared by all its channels.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.DropBlock(0.1, block_size=3, deterministic=False)
      >>> layer.apply({}, jnp.ones((2, 8, 8, 3)), rngs={"dropout": jax.random.key(0)}).shape
      (2, 8, 8, 3)
    """

    rate: float
    block_size: int | Sequence[int] = 7
    batch_axis: int | None = 0
    channel_axis: int | None = -1
    share_channels: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _op(self, key, x):
        return dropjax.dropblock(
            key,
            x,
            self.rate,
            block_size=self.block_size,
            batch_axis=self.batch_axis,
            channel_axis=self.channel_axis,
            share_channels=self.share_channels,
        )

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies DropBlock unless deterministic."""
        return self._apply(inputs, deterministic, rng)


class DropPath(_Variant):
    """Stochastic depth for a residual branch, per example; see :func:`dropjax.drop_path`.

    Attributes:
      rate: probability of dropping an example's branch (*not* the keep rate!).
      batch_axis: the example axis, or None to keep or drop the whole input at once.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.DropPath(0.2, deterministic=False)
      >>> layer.apply({}, jnp.ones((4, 3)), rngs={"dropout": jax.random.key(0)}).shape
      (4, 3)
    """

    rate: float
    batch_axis: int | None = 0
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def _op(self, key, x):
        return dropjax.drop_path(key, x, self.rate, batch_axis=self.batch_axis)

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Drops the whole branch per example unless deterministic."""
        return self._apply(inputs, deterministic, rng)


class DropConnectDense(nn.Module):
    """A dense layer whose weights are dropped (Wan et al. 2013); see
    :func:`dropjax.dropconnect_dense`. Deterministic: a plain dense layer.

    Attributes:
      features: output size.
      rate: probability of dropping a weight (*not* the keep rate!).
      per_example: one weight mask per example instead of one per call.
      use_bias: whether to add a (never dropped) bias.
      kernel_init: kernel initializer (``nn.initializers.lecun_normal()`` as in nn.Dense).
      bias_init: bias initializer.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.DropConnectDense(3, 0.5)
      >>> v = layer.init(jax.random.key(0), jnp.ones((2, 4)), deterministic=True)
      >>> layer.apply(v, jnp.ones((2, 4)), False, rngs={"dropout": jax.random.key(1)}).shape
      (2, 3)
    """

    features: int
    rate: float
    per_example: bool = False
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        _check_rates(self)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies the layer with a dropped kernel unless deterministic."""
        kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        key = _resolve(self, deterministic, rng)
        if key is None:
            return _dense({"kernel": kernel} | ({} if bias is None else {"bias": bias}), inputs)
        return dropjax.dropconnect_dense(
            key, inputs, kernel, bias, self.rate, per_example=self.per_example
        )


class ConcreteDropout(nn.Module):
    """Concrete dropout with a learned rate (Gal, Hron & Kendall 2017).

    The parameter ``rate_logit`` (initialised at ``logit(init_rate)``) is trained with the
    rest of the model. Each call sows the regulariser
    :func:`dropjax.concrete_dropout_regularizer` into the ``"losses"`` collection under
    ``"concrete_dropout"``: pass the following layer's kernel as ``weight`` to include the
    weight term :math:`\\lambda_w \\lVert W \\rVert^2 / (1-p)`; without it only the
    dropout-entropy term is sown. Deterministic: inputs pass unchanged (inverted scaling).
    Works under ``jax.jit`` in ``init`` and ``apply``.

    Attributes:
      init_rate: the initial drop probability, in ``(0, 1)``; the parameter starts at its
        logit.
      temperature: the relaxation temperature (the paper uses 0.1).
      weight_regularizer: :math:`\\lambda_w` of :func:`dropjax.concrete_dropout_regularizer`.
      dropout_regularizer: :math:`\\lambda_p` of the same.
      deterministic: if True, inputs pass unchanged; may be given here or at call time
        (exactly once).
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.ConcreteDropout()
      >>> v = layer.init(jax.random.key(0), jnp.ones((2, 4)), deterministic=True)
      >>> y, state = layer.apply(v, jnp.ones((2, 4)), deterministic=False,
      ...     rngs={"dropout": jax.random.key(1)}, mutable=["losses"])
      >>> y.shape, "concrete_dropout" in state["losses"]
      ((2, 4), True)
    """

    init_rate: float = 0.1
    temperature: float = 0.1
    weight_regularizer: float = 1e-6
    dropout_regularizer: float = 1e-5
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    def __post_init__(self) -> None:
        init = _checks.concrete_value(self.init_rate)
        if init is not None and not 0.0 < init < 1.0:
            raise ValueError(
                f"ConcreteDropout.init_rate is the initial drop probability and must be in "
                f"(0, 1) (its logit is learned); got {self.init_rate!r}"
            )
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        weight: Any = None,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Applies concrete dropout and sows its regulariser."""
        # jnp, not float(): under jax.jit even a constant's logit is a traced value.
        init_rate = jnp.asarray(self.init_rate, jnp.float32)
        init_logit = jnp.log(init_rate) - jnp.log1p(-init_rate)
        rate_logit = self.param("rate_logit", nn.initializers.constant(init_logit), ())
        key = _resolve(self, deterministic, rng)
        if key is None:
            return inputs
        self.sow(
            "losses",
            "concrete_dropout",
            dropjax.concrete_dropout_regularizer(
                rate_logit,
                () if weight is None else weight,
                weight_regularizer=self.weight_regularizer,
                dropout_regularizer=self.dropout_regularizer,
                input_dim=int(inputs.shape[-1]),
            ),
        )
        return dropjax.concrete_dropout(key, inputs, rate_logit, temperature=self.temperature)


# --- Variational dropout with learned rates (Kingma et al. 2015; Molchanov et al. 2017) -----


def _window(kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    """``kernel_size`` as a tuple; an int ``k`` is ``(k,)``, as ``nn.Conv`` reads it."""
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        return (kernel_size,)
    # A bool is an int to mypy but not to the check above: tuple(True) raises TypeError.
    return tuple(kernel_size)  # type: ignore[arg-type]


PRUNING = "pruning"
"""The collection where the variational layers record their ``threshold`` and ``clip``."""


class _VariationalLayer(nn.Module):
    """Shared call: log alpha from (kernel, log_sigma2), the KL and settings sown, the op."""

    def _variational(
        self,
        inputs: jax.Array,
        kernel: jax.Array,
        bias: jax.Array | None,
        deterministic: bool | None,
        rng: jax.Array | None,
        op: Callable[..., jax.Array],
    ) -> jax.Array:
        log_sigma2 = self.param(
            "log_sigma2", nn.initializers.constant(self.log_sigma2_init), kernel.shape
        )
        log_alpha = dropjax.variational_log_alpha(kernel, log_sigma2, clip=self.clip)
        self.sow("losses", "kl", dropjax.kl_molchanov(log_alpha).sum())
        # The pruning settings, for sparsity(variables): stored when the collection is
        # mutable (as in init), replaced rather than appended on later mutable applies.
        for name, value in (("threshold", self.threshold), ("clip", self.clip)):
            value = jnp.inf if value is None else value
            self.sow(
                PRUNING,
                name,
                jnp.asarray(value, jnp.float32),
                reduce_fn=lambda _, new: new,
                init_fn=lambda: None,
            )
        key = _resolve(self, deterministic, rng)
        if key is None:
            return op(None, inputs, kernel, log_alpha, bias, self.threshold, True)
        return op(
            key, inputs, kernel, log_alpha, bias, self.threshold if self.train_clip else None, False
        )


class VariationalDense(_VariationalLayer):
    """Sparse variational dropout dense layer (Molchanov, Ashukha & Vetrov, ICML 2017).

    Weights :math:`w \\sim \\mathcal{N}(\\theta, \\sigma^2)` with learned ``kernel``
    (:math:`\\theta`) and ``log_sigma2`` (the additive reparameterisation), so
    :math:`\\log\\alpha` = :func:`dropjax.variational_log_alpha` (clipped to ``±clip``) is
    learned per weight. Training (``deterministic=False``): pre-activations sampled by the
    local reparameterisation trick (:func:`dropjax.variational_dense`) with a key from
    ``rng`` or ``self.make_rng(rng_collection)``, as :class:`Dropout`. Evaluation: the
    mean network with every weight whose :math:`\\log\\alpha` exceeds ``threshold`` set to
    zero. In :func:`mc_dropout` mode the layer samples even when deterministic.

    The KL term: every call sows :func:`dropjax.kl_molchanov` summed over the kernel
    into the ``"losses"`` collection under ``"kl"`` (in both modes; it depends on the
    parameters only). Apply with ``mutable=["losses"]`` and add :func:`total_kl` of the
    collection, times a KL weight, to the data term; the ELBO per example is
    ``cross_entropy_mean + total_kl / num_train``. ``init`` returns the sown ``"losses"``
    too: pass only ``{"params": ...}`` to ``apply``, or the new KL is appended to the old.
    The layer also records its ``threshold`` and ``clip`` (``inf`` for None) in the
    ``"pruning"`` collection whenever that is mutable (as in ``init``), so that
    :func:`sparsity` of the variables reports the pruning this layer does.

    Attributes:
      features: output size.
      use_bias: whether to add a (noise-free, not pruned) bias.
      kernel_init: :math:`\\theta` initializer (lecun normal, as ``nn.Dense``).
      bias_init: bias initializer.
      log_sigma2_init: initial :math:`\\log\\sigma^2` (-10, as the authors' code).
      threshold: :math:`\\log\\alpha` above which a weight is pruned (3, i.e. a dropout rate
        above 0.95).
      clip: :math:`\\log\\alpha` is clipped to ``[-clip, clip]`` (8, as the authors).
      train_clip: also zero the pruned weights while training (the authors' ``train_clip``).
      deterministic: if True, the pruned mean network; may be given here or at call time.
      rng_collection: the rng collection the key is drawn from.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.VariationalDense(3)
      >>> x = jnp.ones((2, 5))
      >>> v = layer.init(jax.random.key(0), x, deterministic=True)
      >>> y, state = layer.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(1)},
      ...                        mutable=["losses"])
      >>> y.shape, dropjax.linen.total_kl(state["losses"]).shape
      ((2, 3), ())
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    log_sigma2_init: float = -10.0
    threshold: float = 3.0
    clip: float = 8.0
    train_clip: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Samples pre-activations (training) or applies the pruned mean layer."""
        kernel = self.param("kernel", self.kernel_init, (inputs.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None

        def op(key, x, w, log_alpha, b, threshold, det):
            return dropjax.variational_dense(
                key, x, w, log_alpha, b, threshold=threshold, deterministic=det
            )

        return self._variational(inputs, kernel, bias, deterministic, rng, op)


class VariationalConv(_VariationalLayer):
    """Sparse variational dropout convolution, channels last (as ``nn.Conv``).

    As :class:`VariationalDense`, with :func:`dropjax.variational_conv`: the mean is the
    convolution with :math:`\\theta`, the variance that of :math:`x^2` with
    :math:`\\alpha\\theta^2`. The kernel is ``(*kernel_size, in // feature_group_count,
    features)``; inputs are ``(batch, *spatial, in)``.

    Attributes:
      features: output channels.
      kernel_size: the window, one int per spatial axis; an int ``k`` means ``(k,)`` (a
        1-D convolution), as in ``nn.Conv``.
      strides: an int or one per spatial axis.
      padding: ``"SAME"``, ``"VALID"`` or ``(low, high)`` pairs.
      kernel_dilation: an int or one per spatial axis.
      feature_group_count: grouped convolution.

    ``use_bias``, ``kernel_init``, ``bias_init``, ``log_sigma2_init``, ``threshold``, ``clip``,
    ``train_clip``, ``deterministic`` and ``rng_collection`` are as in :class:`VariationalDense`.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> layer = dropjax.linen.VariationalConv(4, (3, 3))
      >>> x = jnp.ones((2, 6, 6, 3))
      >>> v = layer.init(jax.random.key(0), x, deterministic=True)
      >>> layer.apply(v, x, deterministic=False, rngs={"dropout": jax.random.key(1)}).shape
      (2, 6, 6, 4)
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: str | Sequence[tuple[int, int]] = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    log_sigma2_init: float = -10.0
    threshold: float = 3.0
    clip: float = 8.0
    train_clip: bool = False
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        deterministic: bool | None = None,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """Samples pre-activations (training) or applies the pruned mean convolution."""
        in_features = inputs.shape[-1] // self.feature_group_count
        shape = (*_window(self.kernel_size), in_features, self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None

        def op(key, x, w, log_alpha, b, threshold, det):
            return dropjax.variational_conv(
                key,
                x,
                w,
                log_alpha,
                b,
                strides=self.strides,
                padding=self.padding,
                kernel_dilation=self.kernel_dilation,
                feature_group_count=self.feature_group_count,
                threshold=threshold,
                deterministic=det,
            )

        return self._variational(inputs, kernel, bias, deterministic, rng, op)


def total_kl(losses: Any) -> jax.Array:
    """The sum of every ``"kl"`` entry sown by the variational layers.

    Args:
      losses: the ``"losses"`` collection returned by ``apply(..., mutable=["losses"])``
        (or the whole mutated state; other entries, e.g. ConcreteDropout's, are ignored).

    Returns:
      A float32 scalar (0 when nothing was sown).

    Examples:
      >>> import dropjax.linen, jax.numpy as jnp
      >>> dropjax.linen.total_kl({"fc1": {"kl": (jnp.float32(2.0),)}, "fc2": {"kl": (1.5,)}})
      Array(3.5, dtype=float32)
    """
    total = jnp.zeros((), jnp.float32)
    if isinstance(losses, Mapping):
        for name, value in losses.items():
            if name == "kl":
                for leaf in jax.tree.leaves(value):
                    total = total + jnp.asarray(leaf, jnp.float32).sum()
            else:
                total = total + total_kl(value)
    return total


def sparsity(
    variables: Any, threshold: float | None = None, *, clip: float | None = None
) -> dict[str, Any]:
    """Pruned fraction and compression of a linen model's variational layers.

    Counts, per layer, the weights its deterministic pass keeps: ``kernel`` zeroed where
    :func:`dropjax.variational_log_alpha` (clipped to ``±clip``) exceeds ``threshold``, as
    :func:`dropjax.sparsity` does, with **each layer's own** ``threshold`` and ``clip``.
    Linen keeps those on the module, not in the parameters, so the layers record them in
    the ``"pruning"`` collection that ``init`` returns: pass the whole ``variables`` (with
    their ``"pruning"`` entry). For a layer without a record (a bare ``params`` tree) the
    defaults 3 and 8 apply. Layer names are the module paths, e.g. ``"VariationalDense_0"``.

    Args:
      variables: the variables of a model (``init``'s output, ``"params"`` and
        ``"pruning"``), or its bare ``params``.
      threshold: if given, this pruning threshold for every layer instead of its own.
      clip: if given, this :math:`\\log\\alpha` clip for every layer instead of its own
        (``math.inf`` for no clip).

    Returns:
      As :func:`dropjax.sparsity`: ``{"layers": {path: stats}, "total": stats}``.

    Raises:
      ValueError: the variables hold no variational layer.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax.linen
      >>> v = dropjax.linen.VariationalDense(3).init(jax.random.key(0), jnp.ones((1, 4)), True)
      >>> s = dropjax.linen.sparsity(v)
      >>> s["total"]["weights"], s["total"]["zero_fraction"]
      (12, 0.0)
      >>> layer = dropjax.linen.VariationalDense(3, threshold=-20.0)  # prunes every weight
      >>> v = layer.init(jax.random.key(0), jnp.ones((1, 4)), True)
      >>> dropjax.linen.sparsity(v)["total"]["compression"]
      inf
    """
    recorded: Any = {}
    if isinstance(variables, Mapping) and "params" in variables:
        recorded = variables.get(PRUNING, {})
        variables = variables["params"]

    def setting(path: str, name: str, given, default: float):
        if given is not None:
            return given
        node = recorded
        for part in path.split("/") if path else ():
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        value = node.get(name) if isinstance(node, Mapping) else None
        return default if value is None else float(jnp.asarray(value))

    return _variational.layer_sparsity(
        (
            path,
            layer["kernel"],
            layer["log_sigma2"],
            setting(path, "threshold", threshold, 3.0),
            setting(path, "clip", clip, 8.0),
        )
        for path, layer in _variational.variational_layers(variables)
    )
