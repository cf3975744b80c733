"""Training-set augmentation drawn on device: He et al.'s pad-4, random crop, horizontal flip.

Gao et al. (2019, Section 4) train ResNet-20 on CIFAR with "a simple data augmentation ...
each image is padded by 4 pixels on each side. Then, a 32x32 patch is randomly cropped from
the augmented image or its corresponding horizontal flip" (He et al., 2016). :class:`PadCropFlip`
does that for every example of a batch, inside the harness's training scan
(:class:`experiments.harness.train.Trainer` with ``augment=PadCropFlip()``), so no host loop feeds
the device.

**Keys.** The draws are a function of the replica's data key and the step alone:
:func:`augment_key` is ``fold_in(fold_in(data_key, AUGMENT_STREAM), step)`` (the data key
of :func:`experiments.harness.train.replica_keys`; epoch permutations fold in epoch numbers, which
never reach ``AUGMENT_STREAM``). A run resumed from a checkpoint therefore crops and flips
exactly as the uninterrupted run, and replica ``r`` of every arm sees the same augmented
images (the arms stay paired). From that key, ``k_row, k_col, k_flip = split(key, 3)``;
example ``i`` is cut at row ``randint(k_row, (B,), 0, 2 pad + 1)[i]`` and column
``randint(k_col, ...)[i]`` of its zero-padded image, then mirrored left-right when
``bernoulli(k_flip, 0.5, (B,))[i]``.

Padding is with zeros of the model's input, i.e. after mean subtraction (the padded border
is the training mean), as the common CIFAR ResNet implementations do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["AUGMENT_STREAM", "PadCropFlip", "augment_key"]

AUGMENT_STREAM = 0x7FFFFFFF
"""The ``fold_in`` constant that separates the augmentation stream from the epoch orders."""


def augment_key(data_key: jax.Array, step: jax.Array | int) -> jax.Array:
    """The augmentation key of one replica at one step (see the module doc).

    Examples:
      >>> import jax
      >>> from experiments.harness.augment import augment_key
      >>> same = [jax.random.key_data(augment_key(jax.random.key(0), 3)) for _ in range(2)]
      >>> bool((same[0] == same[1]).all()), augment_key(jax.random.key(0), 3).shape
      (True, ())
    """
    return jax.random.fold_in(jax.random.fold_in(data_key, AUGMENT_STREAM), step)


@dataclasses.dataclass(frozen=True)
class PadCropFlip:
    """Zero-pad by ``pad`` pixels, crop back to the input size at a random offset, flip.

    Attributes:
      pad: pixels of zero padding on each side (4 in He et al. and Gao et al.).
      flip: mirror each example left-right with probability 1/2.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from experiments.harness.augment import PadCropFlip
      >>> x = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1)
      >>> PadCropFlip(pad=2)(jax.random.key(0), x).shape
      (2, 6, 6, 1)
    """

    pad: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"PadCropFlip.pad must be >= 0; got {self.pad}")

    def draws(self, key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Per-example row offsets, column offsets (int32 in ``[0, 2 pad]``) and flips."""
        k_row, k_col, k_flip = jax.random.split(key, 3)
        high = 2 * self.pad + 1
        rows = jax.random.randint(k_row, (batch,), 0, high, jnp.int32)
        cols = jax.random.randint(k_col, (batch,), 0, high, jnp.int32)
        flips = jax.random.bernoulli(k_flip, 0.5, (batch,)) & self.flip
        return rows, cols, flips

    def __call__(self, key: jax.Array, x: jax.Array) -> jax.Array:
        """Augments an NHWC batch ``x``; returns a batch of the same shape and dtype."""
        if x.ndim != 4:
            raise ValueError(f"PadCropFlip needs an NHWC batch; got shape {x.shape}")
        n, h, w, c = x.shape
        rows, cols, flips = self.draws(key, n)
        p = self.pad
        padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        zero = jnp.zeros((), jnp.int32)
        crop = lambda img, r, q: lax.dynamic_slice(img, (r, q, zero), (h, w, c))
        out = jax.vmap(crop)(padded, rows, cols)
        return jnp.where(flips[:, None, None, None], out[:, :, ::-1, :], out)

    def describe(self) -> dict[str, Any]:
        """A JSON-able record (also the checkpoint fingerprint's entry)."""
        return {"kind": "pad_crop_flip", "pad": self.pad, "flip": self.flip}

    def text(self, size: tuple[int, int] | None = None) -> str:
        """In words, e.g. ``pad 4 + random 32x32 crop + horizontal flip``."""
        crop = "random crop" if size is None else f"random {size[0]}x{size[1]} crop"
        return f"pad {self.pad} + {crop}" + (" + horizontal flip" if self.flip else "")
