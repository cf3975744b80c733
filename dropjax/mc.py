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
* :func:`sample_linen` / :func:`sample_nnx` -- the same for Flax models. They live with the
  Flax adapters (``dropjax.linen``, ``dropjax.nnx``) and are loaded from there on first
  access, so ``import dropjax.mc`` never imports Flax.

The metrics that consume the samples are in :mod:`dropjax.uncertainty`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
from jax.sharding import Mesh

from dropjax._src.sampling import BatchAxis as BatchAxis
from dropjax._src.sampling import PyTree as PyTree
from dropjax._src.sampling import check_common, sample_args

if TYPE_CHECKING:  # resolved lazily at run time (see __getattr__): Flax is optional
    from dropjax.linen import sample_linen as sample_linen
    from dropjax.nnx import sample_nnx as sample_nnx

__all__ = ["sample", "sample_head", "sample_linen", "sample_nnx"]


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
    return sample_args(
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
    check_common(head_fn, key, num_samples, chunk_size, fn_name)
    features = prefix_fn(*args)
    return sample_args(
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


# --------------------------------------------------------------------------- Flax samplers
# Framework glue lives in the adapters; these names load them on first access.
_FLAX_SAMPLERS = {"sample_linen": "dropjax.linen", "sample_nnx": "dropjax.nnx"}


def __getattr__(name: str) -> Any:
    if name in _FLAX_SAMPLERS:
        import importlib

        return getattr(importlib.import_module(_FLAX_SAMPLERS[name]), name)
    raise AttributeError(f"module 'dropjax.mc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FLAX_SAMPLERS))
