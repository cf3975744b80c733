"""Keep-mask generation: the one place in dropjax that draws dropout randomness.

Every op in dropjax derives its Bernoulli noise from :func:`keep_mask`, so a mask is a
deterministic function of ``(key, shape, rate, broadcast_dims)``: the same key gives the
same mask in every op, under ``jit`` or not, on one device or sharded over many. The
default sampler is a counter-based hash of the element index keyed by the PRNG key (see
:func:`keep_mask`); :func:`mask_impl` switches to ``jax.random.bits``.

The argument checks it applies (keys, rates, shapes, axes) live in
:mod:`dropjax._src.checks`, shared with every op.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src.checks import (
    as_f32,
    check_key,
    check_rate,
    check_shape,
    concrete_value,
    is_concrete,
    normalize_axes,
    rate_guard,
)

__all__ = ["get_mask_impl", "keep_mask", "mask_impl"]

# float32 just below 2**32: the largest threshold that still converts to uint32 exactly.
_MAX_THRESHOLD = float(np.nextafter(np.float32(2.0**32), np.float32(0)))


def mask_shape(shape: Sequence[int], broadcast_dims: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the drawn mask: ``shape`` with the broadcast axes set to 1."""
    return tuple(1 if i in broadcast_dims else int(d) for i, d in enumerate(shape))


MASK_IMPLS = ("hash", "bits")
_DEFAULT_IMPL = os.environ.get("DROPJAX_MASK_IMPL", "hash")
_IMPL = contextvars.ContextVar("dropjax_mask_impl", default=_DEFAULT_IMPL)


def get_mask_impl() -> str:
    """The mask sampler in effect: ``"hash"`` (default) or ``"bits"``. See :func:`keep_mask`."""
    impl = _IMPL.get()
    if impl not in MASK_IMPLS:
        raise ValueError(f"DROPJAX_MASK_IMPL must be one of {MASK_IMPLS}; got {impl!r}")
    return impl


@contextlib.contextmanager
def mask_impl(name: str) -> Iterator[None]:
    """Selects the mask sampler inside a ``with`` block (read when a function is traced).

    ``"hash"`` (the default) is a counter-based hash keyed by the PRNG key; ``"bits"`` uses
    ``jax.random.bits`` with the key's own implementation (threefry2x32, or ``rbg`` for
    ``jax.random.key(seed, impl="rbg")``). Both keep each element with probability
    ``1 - rate`` exactly to 2**-32, and both are deterministic per key under ``jit`` and
    sharding; they give *different* masks for the same key. The environment variable
    ``DROPJAX_MASK_IMPL`` sets the default. Functions already traced keep the sampler they
    were traced with.

    Examples:
      >>> import jax, dropjax
      >>> with dropjax.mask_impl("bits"):
      ...     m = dropjax.keep_mask(jax.random.key(0), (3,), 0.5)
      >>> m.shape
      (3,)
    """
    if name not in MASK_IMPLS:
        raise ValueError(f"mask_impl must be one of {MASK_IMPLS}; got {name!r}")
    token = _IMPL.set(name)
    try:
        yield
    finally:
        _IMPL.reset(token)


# Two rounds of a 32-bit xorshift-multiply mixer (the "lowbias32" constants found by
# C. Wellons' hash-prospector search). Each round is a bijection on uint32.
_MUL1, _MUL2 = 0x7FEB352D, 0x846CA68B
_GOLDEN = 0x9E3779B9


def _mix32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(_MUL1)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(_MUL2)
    return h ^ (h >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """32 pseudo-random bits per element of ``shape``: ``mix(mix(i ^ s0) ^ s1)``.

    ``i`` is the element's row-major index (uint32) and ``s0, s1`` are two words drawn from
    ``key`` with ``jax.random.bits``. Computed from iotas, so it is elementwise, fuses with
    the op that consumes it, and shards without communication. For more than 2**32
    elements the leading axes' index is mixed into ``s1``.
    """
    seeds = jax.random.bits(key, (2,), dtype=jnp.uint32)
    low = jnp.zeros(shape, jnp.uint32)
    high = None
    stride = 1
    for axis in reversed(range(len(shape))):
        if shape[axis] == 1:
            continue
        if stride * shape[axis] > 2**32:
            if shape[axis] > 2**32:
                raise ValueError(f"an axis of size {shape[axis]} > 2**32 is not supported")
            part = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
            high = part if high is None else high * jnp.uint32(shape[axis] % 2**32) + part
            continue
        low = low + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    s1 = seeds[1] if high is None else seeds[1] ^ _mix32(high * jnp.uint32(_GOLDEN) + 1)
    return _mix32(_mix32(low ^ seeds[0]) ^ s1)


def keeps_something(rate32: jax.Array) -> jax.Array:
    """``0 <= rate < 1``: False at rate 1 and for an invalid rate (outside ``[0, 1]``, NaN).

    The threshold alone would keep the all-ones word at rate 1 and everything at a
    negative rate (it is clipped to ``[0, 2**32)``); masks AND with this so that rate 1
    and every invalid traced rate keep nothing, one rule for all of them.
    """
    return (rate32 >= 0.0) & (rate32 < 1.0)


def _threshold(rate32: jax.Array) -> jax.Array:
    """``floor(rate * 2**32)`` as uint32 (clipped below 2**32)."""
    return jnp.clip(rate32 * 4294967296.0, 0.0, _MAX_THRESHOLD).astype(jnp.uint32)


def draw_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """32 mask bits per element from the sampler in effect (see :func:`mask_impl`)."""
    if get_mask_impl() == "hash":
        return hash_bits(key, shape)
    return jax.random.bits(key, shape, dtype=jnp.uint32)


def draw_keep(key: jax.Array, shape: tuple[int, ...], rate: ArrayLike) -> jax.Array:
    """Draws a keep-mask of exactly ``shape`` (no broadcasting): the core sampler.

    ``keep = bits >= threshold`` with 32 bits per element and ``threshold = rate * 2**32``
    rounded down, so the keep probability is exact to 2**-32 for a float32 rate. The bits
    come from :func:`hash_bits` (default) or ``jax.random.bits`` (see :func:`mask_impl`).
    A rate of 1 keeps nothing, and so does an invalid traced rate (see :func:`keep_mask`).
    """
    value = concrete_value(rate)
    if value == 0.0:
        return jnp.ones(shape, dtype=bool)
    if value == 1.0:
        return jnp.zeros(shape, dtype=bool)
    rate32 = as_f32(rate)
    keep = draw_bits(key, shape) >= _threshold(rate32)
    if value is None:  # traced (or array) rate: see keeps_something.
        keep = keep & keeps_something(rate32)
    return keep


def draw_nested_keep(
    key: jax.Array, shape: tuple[int, ...], rate: ArrayLike, extra_rate: ArrayLike
) -> jax.Array:
    """The keep-mask of ``rate`` further thinned by ``extra_rate``, from the same bits.

    With ``u`` the bits of ``draw_keep(key, shape, rate)`` (kept iff ``u >= t``, where
    ``t = floor(rate * 2**32)``), an element kept there is uniform on ``[t, 2**32)``, so

        keep = u >= t + floor(extra_rate * (2**32 - 1 - t))

    keeps a subset of that mask, each kept element surviving with probability
    ``1 - extra_rate`` independently of the others: the same joint law as
    ``draw_keep(key, ., rate) & draw_keep(other_key, ., extra_rate)``, for the cost of one
    draw. The threshold is integer arithmetic after one float32 product (no rounding that
    depends on the compiler).
    """
    rate32, extra32 = as_f32(rate), as_f32(extra_rate)
    t = _threshold(rate32)
    room = (jnp.uint32(0xFFFFFFFF) - t).astype(jnp.float32)
    extra = jnp.clip(extra32 * room, 0.0, _MAX_THRESHOLD).astype(jnp.uint32)
    keep = draw_bits(key, shape) >= t + extra
    return keep & keeps_something(rate32) & keeps_something(extra32)


def inverse_keep_prob(rate: ArrayLike) -> jax.Array:
    """``1 / (1 - rate)`` as float32, 0 where ``rate == 1``, NaN where ``rate`` is invalid.

    At rate 1 the scale is 0, so ``0 * scale`` is never NaN. A (traced) rate outside
    ``[0, 1]`` or NaN gives a NaN scale, which :func:`apply_mask` spreads to every element.
    """
    rate32 = as_f32(rate)
    keep = 1.0 - rate32
    scale = jnp.where(keep > 0.0, 1.0 / jnp.where(keep > 0.0, keep, 1.0), 0.0)
    if is_concrete(rate32):  # a concrete rate was validated by check_rate
        return scale
    return scale * rate_guard(rate32)


def apply_mask(x: jax.Array, keep: jax.Array | None, scale: ArrayLike) -> jax.Array:
    """``where(keep, x * scale, 0 * scale)`` in at least float32, returned in ``x.dtype``.

    The dropped entries are ``0 * scale``: zero for a finite scale, NaN for the NaN scale of
    an invalid traced rate (see :func:`inverse_keep_prob`), so such a rate is never silent.
    """
    if keep is None:
        return x
    compute = x.dtype if jnp.finfo(x.dtype).bits >= 32 else jnp.dtype(jnp.float32)
    scale = jnp.asarray(scale).astype(compute)
    y = jnp.where(keep, x.astype(compute) * scale, jnp.zeros((), compute) * scale)
    return y.astype(x.dtype)


def keep_mask(
    key: jax.Array,
    shape: Sequence[int],
    rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    r"""Draws a boolean keep-mask: ``True`` where an element survives dropout.

    Each mask entry is kept independently with probability :math:`1 - \text{rate}`:

    .. math::

        m_i = [u_i \ge \lfloor \text{rate} \cdot 2^{32} \rfloor], \qquad
        u_i = \operatorname{mix}(\operatorname{mix}(i \oplus s_0) \oplus s_1)

    where :math:`i` is the element's row-major index, :math:`s_0, s_1` are two 32-bit words
    drawn from ``key`` with ``jax.random.bits`` and :math:`\operatorname{mix}` is a 32-bit
    xorshift-multiply bijection, so :math:`P(m_i = 1) = 1 - \text{rate}` up to
    :math:`2^{-32}`: 32 bits per element, computed elementwise from the index. This counter
    hash fuses into the op that uses the mask and costs a few integer operations per
    element, where threefry's 20 rounds made the mask several times the cost of the
    dropout itself (see ``benchmarks/``). :math:`\operatorname{mix}` is
    ``h ^= h >> 16; h *= 0x7feb352d; h ^= h >> 15; h *= 0x846ca68b; h ^= h >> 16`` (C.
    Wellons' "lowbias32"), a bijection on 32 bits.

    It is a statistical generator, **not a cryptographic one**: from part of a mask one
    could in principle recover ``s0, s1`` and predict the rest, which does not matter for
    dropout but rules it out wherever unpredictability is the point. In the dieharder
    tests run on its raw words in three layouts (consecutive elements, a strided walk, one
    element across ``fold_in`` keys) and on the nested augmented masks, it fails only the
    test that threefry and Mersenne Twister fail as well in the same dieharder build; the
    summary and its command are in ``benchmarks/results/sampler_randomness.md``. Choose
    ``with dropjax.mask_impl("bits"):`` (or ``DROPJAX_MASK_IMPL=bits``) to draw the bits
    with ``jax.random.bits`` and the key's own implementation (threefry2x32, or ``rbg``)
    instead: when masks must match ones drawn with ``jax.random``, when a study must rest on
    threefry's published guarantees, or to rule the sampler out when debugging.

    The mask is a deterministic function of ``(key, shape, rate, broadcast_dims)`` under
    ``jit`` or not and on any sharding; every dropjax op draws its noise through here.

    **Invalid traced rates.** A concrete rate outside ``[0, 1]`` raises ``ValueError``. A
    traced rate cannot be checked, and a boolean mask cannot be NaN, so a traced rate
    outside ``[0, 1]`` or NaN gives the mask of rate 1: all ``False`` (nothing kept), for
    1.5, -0.1, NaN and inf alike. The ops that consume a mask (:func:`dropout` and every
    other op with a rate) scale by a NaN factor for such a rate, so *their* output is all
    NaN, never a silently wrong value; code that applies ``keep_mask`` itself should check
    a traced rate (``0 <= rate <= 1``) where a NaN would be wanted.

    Args:
      key: one PRNG key, ``jax.random.key(seed)`` (a legacy ``PRNGKey`` is accepted).
      shape: shape of the mask (the shape of the input it will be applied to).
      rate: probability of *dropping* (not the keep rate!). A Python float or a scalar (or
        broadcastable) array; it may be traced, so a rate schedule never recompiles.
      broadcast_dims: axes along which one mask entry is shared (negative allowed), as in
        ``flax.linen.Dropout``: the mask is drawn with size 1 there and broadcast.

    Returns:
      A ``bool`` array of shape ``shape``; all ``False`` for an invalid traced ``rate``.

    Raises:
      ValueError: if a concrete ``rate`` is outside ``[0, 1]``, an axis is out of range, or
        ``key`` is a batch of keys (use ``jax.vmap``).
      TypeError: if ``key`` is a raw integer (use ``jax.random.key``).

    Examples:
      >>> import jax, dropjax
      >>> m = dropjax.keep_mask(jax.random.key(0), (4, 3), 0.5, broadcast_dims=(0,))
      >>> m.shape, m.dtype
      ((4, 3), dtype('bool'))
      >>> bool((m == m[0]).all())  # one mask row shared along axis 0
      True
    """
    key = check_key(key, "keep_mask")
    rate = check_rate(rate)
    shape = check_shape(shape, "keep_mask")
    bdims = normalize_axes(broadcast_dims, len(shape))
    keep = draw_keep(key, mask_shape(shape, bdims), rate)
    return jnp.broadcast_to(keep, shape)


# ---------------------------------------------------------------- blocks of a mask
# Blockwise attention regenerates the mask one tile at a time; these helpers compute any
# tile of ``keep_mask(key, shape, rate, broadcast_dims=...)`` from global indices, without
# building the whole mask. Only the default "hash" sampler can be sliced like this.


def key_words(key: jax.Array) -> jax.Array:
    """The two uint32 words ``s0, s1`` that seed :func:`hash_bits` for ``key``."""
    return jax.random.bits(key, (2,), dtype=jnp.uint32)


def hash_bits_at(
    words: jax.Array | tuple[jax.Array, jax.Array], shape: tuple[int, ...], index: Sequence
) -> jax.Array:
    """``hash_bits(key, shape)[index]`` from the key's words and global per-axis indices.

    ``words`` is :func:`key_words` of the key; ``index`` holds one integer array per axis
    of ``shape`` (broadcastable against each other; a tile's ``start + iota``), and the
    result has their broadcast shape. Indices past the end of an axis give well-defined
    but meaningless bits (callers mask padding themselves). The index arithmetic follows
    :func:`hash_bits` step for step, including the > 2**32-element case.
    """
    low = jnp.uint32(0)
    high = None
    stride = 1
    for axis in reversed(range(len(shape))):
        if shape[axis] == 1:
            continue
        part = jnp.asarray(index[axis]).astype(jnp.uint32)
        if stride * shape[axis] > 2**32:
            if shape[axis] > 2**32:
                raise ValueError(f"an axis of size {shape[axis]} > 2**32 is not supported")
            high = part if high is None else high * jnp.uint32(shape[axis] % 2**32) + part
            continue
        low = low + part * jnp.uint32(stride)
        stride *= shape[axis]
    s1 = words[1] if high is None else words[1] ^ _mix32(high * jnp.uint32(_GOLDEN) + 1)
    return _mix32(_mix32(low ^ words[0]) ^ s1)


def keep_from_bits(bits: jax.Array, rate: ArrayLike) -> jax.Array:
    """``draw_keep``'s rule applied to given bits: ``bits >= floor(rate * 2**32)``.

    A concrete rate of 0 keeps everything and 1 keeps nothing; a traced rate of 1 or an
    invalid traced rate keeps nothing as well (see :func:`keeps_something`).
    """
    value = concrete_value(rate)
    if value == 0.0:
        return jnp.ones(bits.shape, dtype=bool)
    if value == 1.0:
        return jnp.zeros(bits.shape, dtype=bool)
    rate32 = as_f32(rate)
    keep = bits >= _threshold(rate32)
    if value is None:
        keep = keep & keeps_something(rate32)
    return keep


def block_index(
    shape: tuple[int, ...],
    starts: Sequence,
    block_shape: tuple[int, ...],
    broadcast_dims: tuple[int, ...] = (),
) -> tuple[jax.Array, ...]:
    """Global indices of a tile in the *drawn* mask (0 along broadcast axes), per axis."""
    index = []
    for axis, _size in enumerate(block_shape):
        if axis in broadcast_dims or shape[axis] == 1:
            index.append(jnp.zeros((), jnp.uint32))
            continue
        iota = jax.lax.broadcasted_iota(jnp.uint32, tuple(block_shape), axis)
        index.append(jnp.asarray(starts[axis]).astype(jnp.uint32) + iota)
    return tuple(index)


def _keep_block(
    key: jax.Array,
    shape: Sequence[int],
    rate: ArrayLike,
    starts: Sequence,
    block_shape: Sequence[int],
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """``keep_mask(key, shape, rate, broadcast_dims=...)[starts : starts + block_shape]``.

    Computed from the tile's global indices only (``starts`` may be traced), so no array
    of the full ``shape`` exists. Needs the default "hash" sampler: ``jax.random.bits``
    cannot be evaluated at an offset, so under ``mask_impl("bits")`` this raises.
    """
    if get_mask_impl() != "hash":
        raise ValueError(
            "a block of a keep-mask can only be computed with the default 'hash' sampler; "
            "under dropjax.mask_impl('bits') draw the whole mask with keep_mask instead"
        )
    shape = tuple(int(d) for d in shape)
    bdims = normalize_axes(broadcast_dims, len(shape))
    drawn = mask_shape(shape, bdims)
    index = block_index(drawn, starts, tuple(int(d) for d in block_shape), bdims)
    bits = hash_bits_at(key_words(key), drawn, index)
    bits = jnp.broadcast_to(bits, tuple(int(d) for d in block_shape))
    return keep_from_bits(bits, rate)
