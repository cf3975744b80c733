r"""Monte Carlo sampling over dropout keys: T stochastic forward passes, stacked.

MC dropout (Gal & Ghahramani, 2016) keeps dropout on at test time and averages ``T``
stochastic forward passes. Every sampler here follows one **key rule**:

.. code-block:: python

    keys = jax.random.split(key, num_samples)
    out[i] == fn(keys[i], *args, **kwargs)  # for every i, every chunk_size, every mesh

so sample ``i`` can always be reproduced on its own, and the result does not depend on how
the work is split: ``chunk_size`` (memory), ``jax.jit``, or ``mesh`` (devices) change the
schedule, never which key drives which sample, so every dropout mask is the same bit for
bit (a batched matmul may still round differently in the last bits for another batch
size). Outputs are any pytree; each leaf gets a new leading sample axis of size
``num_samples``.

* :func:`sample` -- the core: ``jax.vmap`` over keys, chunked with ``jax.lax.map`` when
  ``chunk_size`` is given, sharded over a mesh axis with ``jax.shard_map`` when ``mesh`` is
  given; ``consistent=True`` shares one mask per sample across the examples of a batch.
* :func:`sample_head` -- runs a deterministic prefix once and samples only the head.
* :func:`sample_linen` / :func:`sample_nnx` -- the same for Flax models (Flax is imported
  only when they are called).

The metrics that consume the samples are in :mod:`dropjax.uncertainty`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dropjax._src.masks import check_key

if TYPE_CHECKING:  # Flax is optional: imported only when sample_linen / sample_nnx run
    import flax.linen
    from flax import nnx

__all__ = ["sample", "sample_head", "sample_linen", "sample_nnx"]

PyTree = Any
BatchAxis = int | Sequence[int | None] | None


# --------------------------------------------------------------------------- validation


def _check_count(value, name: str, fn_name: str) -> int:
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{fn_name}: {name} must be a static Python int, got a traced value; under jax.jit "
            f"mark it static, e.g. jax.jit(f, static_argnames='{name}')"
        )
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn_name}: {name} must be a Python int >= 1; got {value!r}")
    if value < 1:
        raise ValueError(f"{fn_name}: {name} must be >= 1; got {value!r}")
    return int(value)


def _check_common(fn, key, num_samples, chunk_size, fn_name):
    if not callable(fn):
        raise TypeError(f"{fn_name} needs a callable fn(key, *args, **kwargs); got {fn!r}")
    key = check_key(key, fn_name)
    num_samples = _check_count(num_samples, "num_samples", fn_name)
    if chunk_size is not None:
        chunk_size = _check_count(chunk_size, "chunk_size", fn_name)
    return key, num_samples, chunk_size


def _check_batch_axes(batch_axis: BatchAxis, num_args: int, fn_name: str) -> tuple:
    """One batch axis (an int, or None for "shared") per positional argument."""
    if batch_axis is None or isinstance(batch_axis, (int, np.integer)):
        axes = (batch_axis,) * num_args
    else:
        axes = tuple(batch_axis)
        if len(axes) != num_args:
            raise ValueError(
                f"{fn_name}: batch_axis has {len(axes)} entries but fn gets {num_args} "
                "positional args; give one axis (or None for an unbatched arg) per arg"
            )
    for ax in axes:
        if ax is not None and (isinstance(ax, bool) or not isinstance(ax, (int, np.integer))):
            raise TypeError(f"{fn_name}: batch_axis entries must be ints or None; got {ax!r}")
    if all(ax is None for ax in axes):
        raise ValueError(
            f"{fn_name}: consistent=True needs a batched positional arg to share masks over; "
            "pass batch_axis=0 (or one axis per arg, None for the unbatched ones)"
        )
    return tuple(None if ax is None else int(ax) for ax in axes)


# --------------------------------------------------------------------------- core


def _operands(args: tuple, kwargs: dict, arg_axes: tuple):
    """Splits ``(args, kwargs)`` into array leaves (operands) and everything else.

    Arrays travel through ``vmap``/``shard_map`` as explicit operands, so each transform
    level rebuilds the pytree from its own values (Flax NNX needs this to let a merged
    module reseed its RNG streams); other leaves (Python flags, strings) are closed over.
    Returns the operands, their batch axes and a function that rebuilds ``(args, kwargs)``.
    """
    leaves, treedef = jax.tree.flatten((args, kwargs))
    axes = [ax for arg, ax in zip(args, arg_axes, strict=True) for _ in jax.tree.leaves(arg)]
    axes += [None] * (len(leaves) - len(axes))  # kwargs are never batched
    is_op = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]
    ops = [leaf for leaf, o in zip(leaves, is_op, strict=True) if o]
    op_axes = [ax for ax, o in zip(axes, is_op, strict=True) if o]

    def rebuild(new_ops):
        it = iter(new_ops)
        return jax.tree.unflatten(
            treedef, [next(it) if o else leaf for leaf, o in zip(leaves, is_op, strict=True)]
        )

    return ops, op_axes, rebuild


def _per_sample(fn, rebuild, op_axes, consistent: bool, out_axis: int, fn_name: str):
    """``(key, operands) -> output`` for one sample."""
    if not consistent:

        def plain(k, ops):
            args, kwargs = rebuild(ops)
            return fn(k, *args, **kwargs)

        return plain

    def squeeze(o):
        o = jnp.asarray(o)
        if o.ndim == 0 or not -o.ndim <= out_axis < o.ndim or o.shape[out_axis] != 1:
            raise ValueError(
                f"{fn_name}: consistent=True calls fn on batches of one example and needs every "
                f"output leaf to keep that batch axis (out_batch_axis={out_axis}) with size 1; "
                f"got an output of shape {o.shape}. Set out_batch_axis to the output's batch "
                "axis, or use consistent=False"
            )
        return jnp.squeeze(o, out_axis)

    def one(k, ops):
        def per_example(ex_ops):
            batch_of_one = [
                o if ax is None else jnp.expand_dims(o, ax)
                for o, ax in zip(ex_ops, op_axes, strict=True)
            ]
            args, kwargs = rebuild(batch_of_one)
            return jax.tree.map(squeeze, fn(k, *args, **kwargs))

        return jax.vmap(per_example, in_axes=(op_axes,), out_axes=out_axis)(ops)

    return one


def _run_keys(one, keys: jax.Array, ops: list, chunk_size: int | None) -> PyTree:
    """Stacks ``one(keys[i], ops)``: one vmap, or ``lax.map`` over chunks of ``chunk_size``."""
    n = keys.shape[0]
    batched = lambda ks: jax.vmap(one, in_axes=(0, None))(ks, ops)
    if chunk_size is None or chunk_size >= n:
        return batched(keys)
    num_chunks = -(-n // chunk_size)
    padded = num_chunks * chunk_size
    # Pad with valid (repeated) keys; their samples are computed and sliced off.
    keys = keys[np.arange(padded) % n].reshape(num_chunks, chunk_size)
    out = jax.lax.map(batched, keys)
    return jax.tree.map(lambda o: o.reshape((padded, *o.shape[2:]))[:n], out)


def _drop_axis(entry, axis_name: str):
    if isinstance(entry, tuple):
        rest = tuple(name for name in entry if name != axis_name)
        return rest if len(rest) > 1 else (rest[0] if rest else None)
    return None if entry == axis_name else entry


def _replicate_over(x, axis_name: str):
    """Reshards an array explicitly sharded over ``axis_name`` to be whole along it."""
    if not isinstance(x, jax.Array):
        return x
    sharding = jax.typeof(x).sharding
    spec = getattr(sharding, "spec", None)
    if spec is None:
        return x
    new_spec = P(*(_drop_axis(entry, axis_name) for entry in spec))
    if new_spec == spec:
        return x
    return jax.reshard(x, NamedSharding(sharding.mesh, new_spec))


def _sample(
    fn,
    key,
    num_samples,
    args: tuple,
    kwargs: dict,
    *,
    chunk_size,
    consistent: bool,
    batch_axis: BatchAxis,
    out_batch_axis: int | None,
    mesh: Mesh | None,
    axis_name: str,
    fn_name: str,
) -> PyTree:
    key, num_samples, chunk_size = _check_common(fn, key, num_samples, chunk_size, fn_name)
    if not isinstance(consistent, bool):
        raise TypeError(f"{fn_name}: consistent must be True or False; got {consistent!r}")
    if consistent:
        arg_axes = _check_batch_axes(batch_axis, len(args), fn_name)
        if out_batch_axis is None:
            out_batch_axis = next(ax for ax in arg_axes if ax is not None)
        elif isinstance(out_batch_axis, bool) or not isinstance(out_batch_axis, (int, np.integer)):
            raise TypeError(f"{fn_name}: out_batch_axis must be an int; got {out_batch_axis!r}")
    else:
        arg_axes = (None,) * len(args)
    ops, op_axes, rebuild = _operands(args, kwargs, arg_axes)
    one = _per_sample(fn, rebuild, op_axes, consistent, int(out_batch_axis or 0), fn_name)
    keys = jax.random.split(key, num_samples)
    if mesh is None:
        return _run_keys(one, keys, ops, chunk_size)

    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn_name}: mesh must be a jax.sharding.Mesh; got {mesh!r}")
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"{fn_name}: mesh has axes {mesh.axis_names}, not axis_name={axis_name!r}; pass the "
            "name of the mesh axis to spread the samples over"
        )
    num_devices = mesh.shape[axis_name]
    padded = -(-num_samples // num_devices) * num_devices
    if padded != num_samples:
        keys = keys[np.arange(padded) % num_samples]
    keys = jax.device_put(keys, NamedSharding(mesh, P(axis_name)))
    ops = [_replicate_over(o, axis_name) for o in ops]
    local = lambda ks, local_ops: _run_keys(one, ks, local_ops, chunk_size)
    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(axis_name), P()),
        out_specs=P(axis_name),
        axis_names=frozenset({axis_name}),
    )
    # Outside jit, shard_map would run the body primitive by primitive on every device.
    out = jax.jit(sharded)(keys, ops)
    if padded != num_samples:
        # An explicitly sharded axis cannot be cut to a non-multiple: gather it first.
        out = jax.tree.map(lambda o: _replicate_over(o, axis_name)[:num_samples], out)
    return out


def sample(
    fn: Callable[..., PyTree],
    key: jax.Array,
    num_samples: int,
    *args: Any,
    chunk_size: int | None = None,
    consistent: bool = False,
    batch_axis: BatchAxis = 0,
    out_batch_axis: int | None = None,
    mesh: Mesh | None = None,
    axis_name: str = "samples",
    **kwargs: Any,
) -> PyTree:
    r"""Evaluates ``fn`` once per sampled key and stacks the outputs on a new leading axis.

    **Key rule.** With ``keys = jax.random.split(key, num_samples)``, sample ``i`` is

    .. math::

        \texttt{out}[i] = \texttt{fn}(\texttt{keys}[i], *\texttt{args}, **\texttt{kwargs})

    whatever ``chunk_size``, ``mesh`` or ``jax.jit`` is used (up to floating-point
    reassociation in batched matmuls, which XLA may order differently for a different
    batch size). The MC estimate of a predictive mean is then ``out.mean(axis=0)``.

    **Memory.** ``chunk_size=None`` evaluates all samples in one ``jax.vmap``. An int
    evaluates ``chunk_size`` samples at a time (``jax.vmap`` within a chunk, ``jax.lax.map``
    across chunks), so peak memory scales with ``chunk_size`` instead of ``num_samples``.
    When ``chunk_size`` does not divide ``num_samples`` the last chunk is padded with
    repeated keys and the extra samples are sliced off.

    **Devices.** With ``mesh``, the keys are sharded over the mesh axis ``axis_name`` with
    ``jax.shard_map``: each device evaluates (chunks of) its own samples, and every output
    leaf comes back sharded over that axis along its sample dimension. Positional array
    arguments are made whole along ``axis_name`` (the other mesh axes keep their sharding,
    e.g. a batch sharded over a ``"data"`` axis of a 2-D mesh stays sharded). If
    ``num_samples`` is not a multiple of the axis size, keys are padded and the extra
    samples sliced off, which gathers the output along ``axis_name`` on an explicit mesh
    (``jax.make_mesh``'s default): use a multiple to keep it sharded. Call ``sample``
    inside ``jax.jit`` to compile it once.

    **Masks across a batch.** By default ``fn`` sees the whole batch with one key per
    sample, so every example gets its own mask entries (per-example masks). With
    ``consistent=True``, ``fn`` is ``jax.vmap``-ed over the examples with the *same* key:
    every example sees the mask a batch of one would see, so all examples share one mask
    per sample (like ``dropjax.dropout(k, x, rate, broadcast_dims=(0,))``, but for any
    ``fn``). Concretely, for example ``j`` along ``batch_axis``:

    .. code-block:: python

        x_j = x.take([j], axis=batch_axis)  # a batch of one example
        out[i].take(j, out_batch_axis) == fn(keys[i], x_j).take(0, out_batch_axis)

    Args:
      fn: ``fn(key, *args, **kwargs) -> pytree`` drawing all its randomness from ``key``.
      key: one PRNG key, e.g. ``jax.random.key(0)`` (a legacy ``PRNGKey`` is accepted).
      num_samples: number of samples ``T``, a static Python int >= 1.
      *args: positional arguments of ``fn``; arrays are passed through the transforms as
        unbatched operands (computed once, shared by every sample).
      chunk_size: static int >= 1 bounding the samples evaluated at once (per device with
        ``mesh``), or None for all.
      consistent: share one mask per sample across the examples of the batch (see above).
      batch_axis: with ``consistent=True``, the batch axis of the positional args: one int
        for all of them, or one entry per arg with None for unbatched args (e.g. params).
        Keyword arguments are never batched.
      out_batch_axis: with ``consistent=True``, the batch axis of ``fn``'s outputs;
        defaults to the first non-None ``batch_axis``.
      mesh: a ``jax.sharding.Mesh`` to spread the samples over, or None for one device.
      axis_name: the mesh axis that the samples are sharded over.
      **kwargs: keyword arguments of ``fn`` (names above are taken by ``sample``; bind such
        arguments of ``fn`` with ``functools.partial``).

    Returns:
      The output pytree of ``fn`` with a new leading axis of size ``num_samples``.

    Raises:
      TypeError: ``fn`` is not callable; ``key`` is a raw integer; ``num_samples`` or
        ``chunk_size`` is not a static int; ``mesh`` is not a ``Mesh``.
      ValueError: ``num_samples`` or ``chunk_size`` < 1; ``key`` is a batch of keys;
        ``axis_name`` is not a mesh axis; with ``consistent=True``, no batched arg, or an
        output without a size-1 batch axis.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> from dropjax import mc
      >>> fn = lambda k, x: dropjax.dropout(k, x, 0.5)
      >>> key, x = jax.random.key(0), jnp.ones((3, 4))
      >>> ys = mc.sample(fn, key, 8, x, chunk_size=3)
      >>> ys.shape
      (8, 3, 4)
      >>> bool((ys[5] == fn(jax.random.split(key, 8)[5], x)).all())  # the key rule
      True
      >>> zs = mc.sample(fn, key, 8, x, consistent=True)  # one mask per sample, all rows
      >>> bool((zs == zs[:, :1]).all())
      True
    """
    return _sample(
        fn,
        key,
        num_samples,
        args,
        kwargs,
        chunk_size=chunk_size,
        consistent=consistent,
        batch_axis=batch_axis,
        out_batch_axis=out_batch_axis,
        mesh=mesh,
        axis_name=axis_name,
        fn_name="dropjax.mc.sample",
    )


def sample_head(
    prefix_fn: Callable[..., PyTree],
    head_fn: Callable[..., PyTree],
    key: jax.Array,
    num_samples: int,
    *args: Any,
    chunk_size: int | None = None,
    consistent: bool = False,
    batch_axis: int = 0,
    out_batch_axis: int | None = None,
    mesh: Mesh | None = None,
    axis_name: str = "samples",
) -> PyTree:
    r"""MC sampling with a cached deterministic prefix: ``prefix_fn`` runs once.

    When dropout is only in the last layers (a "Bayesian head" over a frozen or
    deterministic backbone), the backbone's features are the same for every sample:

    .. math::

        \texttt{out}[i] = \texttt{head\_fn}(\texttt{keys}[i],\ \texttt{prefix\_fn}(*\texttt{args}))

    with ``keys = jax.random.split(key, num_samples)``, so the result equals
    ``sample(lambda k, *a: head_fn(k, prefix_fn(*a)), key, num_samples, *args)``, but the
    prefix is guaranteed to run exactly once, outside every loop: in the unfactored form a
    single ``jax.vmap`` already leaves key-independent work unbatched, but the prefix is
    re-run in every chunk of ``chunk_size``, per example with ``consistent=True``, and on
    every device of ``mesh``.

    Args:
      prefix_fn: deterministic ``prefix_fn(*args) -> features`` (no key).
      head_fn: stochastic ``head_fn(key, features) -> pytree``.
      key: one PRNG key.
      num_samples: number of samples, a static Python int >= 1.
      *args: arguments of ``prefix_fn``.
      chunk_size: as in :func:`sample`.
      consistent: as in :func:`sample`; the batch axis is that of the features.
      batch_axis: batch axis of the features (with ``consistent=True``).
      out_batch_axis: batch axis of ``head_fn``'s outputs (with ``consistent=True``).
      mesh: as in :func:`sample`; the prefix is computed once, before sharding the head.
      axis_name: as in :func:`sample`.

    Returns:
      The output pytree of ``head_fn`` with a new leading axis of size ``num_samples``.

    Raises:
      TypeError: ``prefix_fn`` or ``head_fn`` is not callable, or as in :func:`sample`.
      ValueError: as in :func:`sample`.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> from dropjax import mc
      >>> prefix = lambda x: jnp.tanh(x @ jnp.ones((4, 5)))
      >>> head = lambda k, h: dropjax.dropout(k, h, 0.5).sum(-1)
      >>> key, x = jax.random.key(0), jnp.ones((2, 4))
      >>> ys = mc.sample_head(prefix, head, key, 6, x)
      >>> full = mc.sample(lambda k, x: head(k, prefix(x)), key, 6, x)
      >>> ys.shape, bool(jnp.allclose(ys, full))
      ((6, 2), True)
    """
    fn_name = "dropjax.mc.sample_head"
    if not callable(prefix_fn):
        raise TypeError(f"{fn_name} needs a callable prefix_fn; got {prefix_fn!r}")
    _check_common(head_fn, key, num_samples, chunk_size, fn_name)
    features = prefix_fn(*args)
    return _sample(
        head_fn,
        key,
        num_samples,
        (features,),
        {},
        chunk_size=chunk_size,
        consistent=consistent,
        batch_axis=batch_axis,
        out_batch_axis=out_batch_axis,
        mesh=mesh,
        axis_name=axis_name,
        fn_name=fn_name,
    )


# --------------------------------------------------------------------------- Flax adapters


def sample_linen(
    model: flax.linen.Module,
    variables: Mapping[str, Any],
    x: PyTree,
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
) -> PyTree:
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
      chunk_size: as in :func:`sample`.
      method: passed to ``model.apply`` (a method name or function), default ``__call__``.
      consistent: as in :func:`sample`: one dropout mask per sample for the whole batch.
      batch_axis: batch axis of ``x`` (with ``consistent=True``).
      out_batch_axis: batch axis of the outputs (with ``consistent=True``).
      mesh: as in :func:`sample`.
      axis_name: as in :func:`sample`.
      **apply_kwargs: more arguments of ``model.apply`` and the model, e.g. ``train=True``.

    Returns:
      The model output with a new leading axis of size ``num_samples``.

    Raises:
      ValueError: ``apply_kwargs`` holds ``rngs`` or a truthy ``mutable``, or as in
        :func:`sample`.
      TypeError: as in :func:`sample`.

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

    out = _sample(
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


_MC_ATTRIBUTES = {"deterministic": False, "use_running_average": True}


def sample_nnx(
    model: nnx.Module,
    x: PyTree,
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
) -> PyTree:
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
    take ``rngs`` at call time, use :func:`sample` with your own ``fn``.

    Args:
      model: a ``flax.nnx.Module``.
      x: the model input (any pytree); the batch with ``consistent=True``.
      key: one PRNG key.
      num_samples: number of samples, a static Python int >= 1.
      rng_collection: the tag of the RNG streams to reseed per sample.
      chunk_size: as in :func:`sample`.
      method: name of the method to call, or ``method(module, x, **call_kwargs)``; default
        ``__call__``.
      attributes: module attributes set on the copy, merged over the defaults
        ``{"deterministic": False, "use_running_average": True}`` (e.g.
        ``{"deterministic": True}`` gives the deterministic evaluation-mode output).
      consistent: as in :func:`sample`: one dropout mask per sample for the whole batch.
      batch_axis: batch axis of ``x`` (with ``consistent=True``).
      out_batch_axis: batch axis of the outputs (with ``consistent=True``).
      mesh: as in :func:`sample`.
      axis_name: as in :func:`sample`.
      **call_kwargs: more keyword arguments of the call.

    Returns:
      The model output with a new leading axis of size ``num_samples``.

    Raises:
      ValueError: the model has no RNG stream tagged ``rng_collection``, or as in
        :func:`sample`.
      TypeError: as in :func:`sample`.

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
    from flax import nnx

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
    attrs = {**_MC_ATTRIBUTES, **(attributes or {})}
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

    return _sample(
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
