"""Argument checks shared by every dropjax function: keys, rates, axes, dtypes, probabilities.

Validate what is concrete, tolerate what is traced: a concrete rate outside ``[0, 1]``
raises ``ValueError`` here, while a traced one passes unchanged and the ops scale by
:func:`rate_guard` so that it shows up as NaN output. Every op checks each argument once,
through these functions, so the error messages read the same everywhere. This module
imports nothing else from dropjax: everything else builds on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

# ------------------------------------------------------------------ op arguments


def is_concrete(value: object) -> bool:
    """True when ``value`` can be inspected in Python (not a tracer under jit/vmap/grad)."""
    return not isinstance(value, jax.core.Tracer)


def check_key(key: Any, name: str = "dropout", *, order: str = "key, x, rate") -> jax.Array:
    """Returns ``key`` as one typed PRNG key, or raises an error that names the fix.

    Accepts a typed key (``jax.random.key``) of shape ``()`` or a legacy raw key
    (``jax.random.PRNGKey``: uint32 of shape ``(2,)``), which is wrapped. ``order`` is the
    caller's leading arguments, named in the error for a float array in the key's place.
    """
    if key is None:
        raise ValueError(
            f"{name} needs a PRNG key when deterministic=False; pass key=jax.random.key(0)"
        )
    if isinstance(key, (int, np.integer)) or (
        hasattr(key, "dtype")
        and not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        and jnp.issubdtype(key.dtype, jnp.integer)
        and jnp.ndim(key) == 0
    ):
        raise TypeError(
            f"{name} got a raw integer {key!r} as its key; pass a PRNG key such as "
            "jax.random.key(0) (or jax.random.key(seed) for your seed)"
        )
    if not hasattr(key, "dtype"):
        raise TypeError(
            f"{name} expects a PRNG key made by jax.random.key(seed); got {type(key).__name__}"
        )
    if jnp.issubdtype(key.dtype, jnp.floating):
        raise TypeError(
            f"{name} got a floating-point array of shape {key.shape} where the PRNG key goes: "
            f"the argument order is ({order}), with key=jax.random.key(seed)"
        )
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.ndim != 0:
            raise ValueError(
                f"{name} got a batch of keys of shape {key.shape}; it takes one key. To apply "
                f"it once per key, use jax.vmap over the keys, e.g. "
                f"jax.vmap(lambda k: {name}(k, ...))(keys)"
            )
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    if key.dtype == jnp.uint32 and key.ndim >= 2 and key.shape[-1] == 2:
        raise ValueError(
            f"{name} got a batch of raw keys of shape {key.shape}; it takes one key. To apply "
            f"it once per key, use jax.vmap over the keys, e.g. "
            f"jax.vmap(lambda k: {name}(k, ...))(keys)"
        )
    raise TypeError(
        f"{name} expects a PRNG key made by jax.random.key(seed); got an array of dtype "
        f"{key.dtype} and shape {key.shape}"
    )


def check_rate(rate: ArrayLike, name: str = "rate") -> ArrayLike:
    """Validates a drop probability when it is concrete; a traced rate passes unchanged.

    Raises:
      ValueError: if a concrete ``rate`` has a value outside ``[0, 1]`` (or is NaN).
      TypeError: if ``rate`` is not a real number or a floating/integer array.
    """
    if isinstance(rate, bool) or rate is None:
        raise TypeError(f"{name} must be a float in [0, 1]; got {rate!r}")
    if isinstance(rate, (int, float, np.integer, np.floating)):
        value = float(rate)
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"{name} is the probability of dropping and must be in [0, 1]; got {rate!r}"
            )
        return value
    if not hasattr(rate, "dtype") or not (
        jnp.issubdtype(rate.dtype, jnp.floating) or jnp.issubdtype(rate.dtype, jnp.integer)
    ):
        raise TypeError(f"{name} must be a float or a floating array; got {rate!r}")
    if is_concrete(rate):
        values = np.asarray(rate, dtype=np.float64)
        bad = ~((values >= 0.0) & (values <= 1.0))
        if bad.any():
            raise ValueError(
                f"{name} is the probability of dropping and must be in [0, 1]; got "
                f"{values[bad].ravel()[:5].tolist()}"
            )
    return rate


def concrete_value(rate: Any) -> float | None:
    """The rate as a Python float when it is a concrete scalar, else None."""
    if isinstance(rate, float):
        return rate
    if is_concrete(rate) and jnp.ndim(rate) == 0:
        return float(rate)
    return None


def normalize_axes(
    axes: Sequence[int] | int, ndim: int, name: str = "broadcast_dims"
) -> tuple[int, ...]:
    """Normalises (possibly negative) axes to a sorted tuple of non-negative ints."""
    if isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    out = []
    for axis in axes:
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise TypeError(f"{name} must hold integer axes; got {axes!r}")
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"{name} has axis {axis}, out of range for an input with {ndim} dimensions "
                f"(valid axes are {-ndim} .. {ndim - 1})"
            )
        out.append(int(axis) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} repeats an axis: {axes!r}")
    return tuple(sorted(out))


def _is_key_array(x: object) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def check_floating(
    x: Any,
    name: str = "dropout",
    *,
    key: Any = None,
    order: str = "key, x, rate",
    example: str | None = None,
) -> jax.Array:
    """Returns ``x`` as an array, raising TypeError if it is not floating point.

    A PRNG key in ``x``'s place (or a float array in ``key``'s place) means the arguments
    were swapped: the error then names the argument order ``order`` and a call that works,
    ``example`` (default ``name(jax.random.key(0), x, 0.5)``, right for ops whose third
    argument is a rate; ops with other arguments pass their own).
    """
    if _is_key_array(x) or (
        key is not None and hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jnp.floating)
    ):
        example = example or f"{name}(jax.random.key(0), x, 0.5)"
        raise TypeError(
            f"{name} got a PRNG key where the input x goes (or x where the key goes): the "
            f"argument order is ({order}), e.g. {example}"
        )
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} needs a floating-point input; got dtype {x.dtype}. Cast first, e.g. "
            "x.astype(jnp.float32)"
        )
    return x


def check_shape(shape: Any, name: str = "keep_mask") -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints; an int ``n`` means ``(n,)`` (as jax.random)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(
            f"{name}: shape must be a tuple of ints such as (4, 3), or an int; got {shape!r}"
        ) from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise TypeError(
                f"{name}: shape must be a tuple of non-negative ints such as (4, 3); got {shape!r}"
            )
    return tuple(int(d) for d in dims)


def as_f32(rate: ArrayLike) -> jax.Array:
    """``rate`` as a float32 array."""
    return jnp.asarray(rate).astype(jnp.float32)


def rate_guard(rate: ArrayLike) -> jax.Array:
    """1.0 where ``rate`` is a valid probability, NaN where it is not (a traced 1.5, -0.1, NaN).

    A concrete rate is checked by :func:`check_rate`; a traced one cannot be, so the ops
    multiply their scale by this factor and an invalid rate shows up as NaN output.
    """
    rate32 = as_f32(rate)
    return jnp.where((rate32 >= 0.0) & (rate32 <= 1.0), jnp.float32(1.0), jnp.float32(jnp.nan))


def check_call(
    name: str,
    key: Any,
    x: Any,
    rate: ArrayLike,
    rate_name: str = "rate",
    *,
    order: str = "key, x, rate",
    example: str | None = None,
) -> tuple[jax.Array, jax.Array, ArrayLike, float | None]:
    """The checks of an op ``name(key, x, rate)``, each argument once.

    A floating ``x``, a valid rate, and a key unless the rate is a concrete 0. ``order`` and
    ``example`` name the signature and a working call in the error for swapped arguments
    (see :func:`check_floating`).

    Returns:
      ``(key, x, rate, value)`` with ``value`` the rate as a Python float when it is a
      concrete scalar, else None (see :func:`concrete_value`).
    """
    x = check_floating(x, name, order=order, example=example)
    rate = check_rate(rate, rate_name)
    value = concrete_value(rate)
    if value != 0.0:
        key = check_key(key, name, order=order)
    return key, x, rate, value


def check_axis(axis: int | None, ndim: int, name: str) -> int | None:
    """A (possibly negative) axis as a non-negative int, or None."""
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an integer axis or None; got {axis!r}")
    return normalize_axes((int(axis),), ndim, name)[0]


def check_scalar_rate(name: str, rate: ArrayLike, rate_name: str = "rate") -> None:
    """Raises unless ``rate`` is a scalar (0-d)."""
    if jnp.ndim(rate) != 0:
        raise ValueError(
            f"{name} takes one scalar {rate_name}; got an array of shape {jnp.shape(rate)}"
        )


# ------------------------------------------------------------------ metric inputs
# Probabilities, labels and scores of dropjax.uncertainty and dropjax.acquisition: shapes are
# always checked (they are static), values only when concrete. The ranking metrics turn an
# invalid traced input into NaN with nan_unless_valid instead.


def as_float(x: ArrayLike) -> jax.Array:
    """Converts to a JAX array with a floating dtype (integers/bools -> default float)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _sum_tolerance(dtype) -> float:
    return 1e-2 if jnp.finfo(dtype).bits <= 16 else 1e-4


def check_finite(x: jax.Array, name: str) -> None:
    """Raises for a concrete ``x`` holding NaN or an infinity; a traced one passes."""
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or infinite values.")


def check_probs(probs: ArrayLike, name: str, layout: str) -> jax.Array:
    """Validates probabilities with the given layout, e.g. ``"(T, N, C)"``."""
    p = as_float(probs)
    ndim = layout.count(",") + 1
    if p.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got shape {p.shape}.")
    if any(s == 0 for s in p.shape):
        raise ValueError(f"{name} must not have an empty axis, got shape {p.shape}.")
    if is_concrete(p):
        v = np.asarray(p, dtype=np.float64)
        check_finite(p, name)
        if np.any(v < 0):
            raise ValueError(
                f"{name} must be non-negative probabilities; min value is {v.min():.4g}."
            )
        tol = _sum_tolerance(p.dtype)
        dev = float(np.max(np.abs(v.sum(axis=-1) - 1.0)))
        if dev > tol:
            raise ValueError(
                f"{name} must sum to 1 over the last (class) axis within {tol:g}; largest "
                f"deviation is {dev:.4g}. Pass probabilities (e.g. jax.nn.softmax(logits)), "
                "not logits."
            )
    return p


def check_labels(labels: ArrayLike, n: int, num_classes: int) -> jax.Array:
    """Validates ``(n,)`` integer (or boolean) class indices in ``[0, num_classes)``."""
    y = jnp.asarray(labels)
    if y.dtype == jnp.bool_:
        y = y.astype(jnp.int32)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {y.dtype}.")
    if y.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},), got shape {y.shape}.")
    if is_concrete(y):
        v = np.asarray(y)
        if np.any(v < 0) or np.any(v >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}) for {num_classes} classes; "
                f"got values in [{v.min()}, {v.max()}]."
            )
    return y


def check_binary(x: ArrayLike, name: str, n: int) -> jax.Array:
    """Validates a (N,) array of 0/1 (or boolean) values and returns it as bool."""
    x = jnp.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape (N,) = ({n},), got shape {x.shape}.")
    if is_concrete(x) and x.dtype != jnp.bool_:
        v = np.asarray(x)
        if not np.all((v == 0) | (v == 1)):
            raise ValueError(f"{name} must be boolean or contain only 0 and 1.")
    return x if x.dtype == jnp.bool_ else x != 0


def check_scores(scores: ArrayLike, name: str) -> jax.Array:
    """Validates a non-empty ``(N,)`` array of finite scores, returned as floats."""
    s = as_float(scores)
    if s.ndim != 1 or s.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array (N,), got shape {s.shape}.")
    check_finite(s, name)
    return s


def nan_unless_valid(value: jax.Array, scores: jax.Array, labels=None, tpr=None) -> jax.Array:
    """``value``, or NaN when traced inputs are invalid (concrete ones were checked).

    Invalid: a non-finite score, a label other than 0/1 (booleans are always valid), or a
    ``tpr`` outside ``(0, 1]``. Mirrors the checks that raise on concrete inputs, so one
    rule holds under :func:`jax.jit`: an invalid input gives NaN, never a plausible score.
    """
    checks = []
    if not is_concrete(scores):
        checks.append(jnp.all(jnp.isfinite(scores)))
    if labels is not None and not is_concrete(labels):
        labels = jnp.asarray(labels)
        if labels.dtype != jnp.bool_:
            checks.append(jnp.all((labels == 0) | (labels == 1)))
    if tpr is not None and not is_concrete(tpr):
        checks.append((tpr > 0) & (tpr <= 1))
    if not checks:
        return value
    ok = checks[0]
    for check in checks[1:]:
        ok = ok & check
    return jnp.where(ok, value, jnp.asarray(jnp.nan, value.dtype))


def check_num_bins(num_bins: int) -> int:
    """``num_bins`` as a Python int >= 1 (it must be static under jit)."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive Python int, got {num_bins!r}.")
    return int(num_bins)
