"""The Monte Carlo sampling core: ``fn(keys[i], ...)`` for ``keys = split(key, T)``, stacked.

:mod:`dropjax.mc` (``sample``, ``sample_head``) and the Flax adapters' samplers all run
through :func:`sample_args`: ``jax.vmap`` over keys, chunked with ``jax.lax.map``, sharded
over a mesh axis with ``jax.shard_map``, one mask per sample with ``consistent=True``.
Framework-free: the adapters bring the model call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from dropjax._src.checks import check_key

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


def check_common(fn, key, num_samples, chunk_size, fn_name):
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


def sample_args(
    fn: Callable[..., PyTree],
    key: jax.Array,
    num_samples: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    chunk_size: int | None,
    consistent: bool,
    batch_axis: BatchAxis,
    out_batch_axis: int | None,
    mesh: Mesh | None,
    axis_name: str,
    fn_name: str,
) -> PyTree:
    """The core of every sampler: ``fn(keys[i], *args, **kwargs)`` stacked, errors as ``fn_name``.

    :func:`dropjax.mc.sample` and :func:`dropjax.mc.sample_head`, and the Flax adapters'
    samplers (``dropjax.linen.sample_linen``, ``dropjax.nnx.sample_nnx``), call it with their
    own ``fn_name``, so each error names the function the user called. See
    :func:`dropjax.mc.sample` for the arguments and the key rule.
    """
    key, num_samples, chunk_size = check_common(fn, key, num_samples, chunk_size, fn_name)
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
