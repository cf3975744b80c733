"""dropjax: dropout for JAX and Flax, with explicit keys.

Functional ops take a PRNG key first, then the operand, then rates (``rate`` is always the
probability of dropping). Everything is pure and safe under ``jit``, ``vmap`` and ``grad``.
"""

from dropjax._src.decoupled import augmented_dropout as augmented_dropout
from dropjax._src.decoupled import backward_dropout as backward_dropout
from dropjax._src.decoupled import decoupled_call as decoupled_call
from dropjax._src.decoupled import decoupled_dropout as decoupled_dropout
from dropjax._src.decoupled import forward_dropout as forward_dropout
from dropjax._src.masks import keep_mask as keep_mask
from dropjax._src.ops import dropout as dropout

__version__ = "0.1.0"

__all__ = [
    "augmented_dropout",
    "backward_dropout",
    "decoupled_call",
    "decoupled_dropout",
    "dropout",
    "forward_dropout",
    "keep_mask",
]
