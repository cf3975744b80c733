"""dropjax: dropout for JAX and Flax, with explicit keys.

Functional ops take a PRNG key first, then the operand, then rates (``rate`` is always the
probability of dropping). Everything is pure and safe under ``jit``, ``vmap`` and ``grad``.
"""

from types import ModuleType

from dropjax import mc as mc
from dropjax._src.attention import dot_product_attention as dot_product_attention
from dropjax._src.backproject import BackprojectResult as BackprojectResult
from dropjax._src.backproject import backproject as backproject
from dropjax._src.decoupled import augmented_dropout as augmented_dropout
from dropjax._src.decoupled import backward_dropout as backward_dropout
from dropjax._src.decoupled import decoupled_call as decoupled_call
from dropjax._src.decoupled import decoupled_dropout as decoupled_dropout
from dropjax._src.decoupled import forward_dropout as forward_dropout
from dropjax._src.graph import EdgeDropoutResult as EdgeDropoutResult
from dropjax._src.graph import GCNEdges as GCNEdges
from dropjax._src.graph import NodeDropoutResult as NodeDropoutResult
from dropjax._src.graph import edge_dropout as edge_dropout
from dropjax._src.graph import gcn_normalize as gcn_normalize
from dropjax._src.graph import node_dropout as node_dropout
from dropjax._src.init import dropout_he_normal as dropout_he_normal
from dropjax._src.init import dropout_variance_scaling as dropout_variance_scaling
from dropjax._src.masks import get_mask_impl as get_mask_impl
from dropjax._src.masks import keep_mask as keep_mask
from dropjax._src.masks import mask_impl as mask_impl
from dropjax._src.ops import dropout as dropout
from dropjax._src.schedules import constant_rate as constant_rate
from dropjax._src.schedules import curriculum_rate as curriculum_rate
from dropjax._src.schedules import depth_rates as depth_rates
from dropjax._src.schedules import linear_rate as linear_rate
from dropjax._src.variants import alpha_dropout as alpha_dropout
from dropjax._src.variants import concrete_dropout as concrete_dropout
from dropjax._src.variants import concrete_dropout_regularizer as concrete_dropout_regularizer
from dropjax._src.variants import drop_path as drop_path
from dropjax._src.variants import dropblock as dropblock
from dropjax._src.variants import dropconnect as dropconnect
from dropjax._src.variants import dropconnect_dense as dropconnect_dense
from dropjax._src.variants import gaussian_dropout as gaussian_dropout
from dropjax._src.variants import random_rate_dropout as random_rate_dropout
from dropjax._src.variants import spatial_dropout as spatial_dropout
from dropjax._src.variational import kl_kingma as kl_kingma
from dropjax._src.variational import kl_molchanov as kl_molchanov
from dropjax._src.variational import sparsify as sparsify
from dropjax._src.variational import sparsity as sparsity
from dropjax._src.variational import variational_conv as variational_conv
from dropjax._src.variational import variational_dense as variational_dense
from dropjax._src.variational import variational_dropout as variational_dropout
from dropjax._src.variational import variational_log_alpha as variational_log_alpha

__version__ = "0.1.0"

__all__ = [
    "alpha_dropout",
    "augmented_dropout",
    "backproject",
    "BackprojectResult",
    "backward_dropout",
    "concrete_dropout",
    "concrete_dropout_regularizer",
    "constant_rate",
    "curriculum_rate",
    "decoupled_call",
    "decoupled_dropout",
    "depth_rates",
    "dot_product_attention",
    "drop_path",
    "dropblock",
    "dropconnect",
    "dropconnect_dense",
    "dropout",
    "dropout_he_normal",
    "dropout_variance_scaling",
    "edge_dropout",
    "EdgeDropoutResult",
    "forward_dropout",
    "gaussian_dropout",
    "gcn_normalize",
    "GCNEdges",
    "get_mask_impl",
    "keep_mask",
    "linear_rate",
    "mask_impl",
    "mc",
    "node_dropout",
    "NodeDropoutResult",
    "random_rate_dropout",
    "spatial_dropout",
    "kl_kingma",
    "kl_molchanov",
    "sparsify",
    "sparsity",
    "variational_conv",
    "variational_dense",
    "variational_dropout",
    "variational_log_alpha",
]


# Submodules that need Flax (or are heavier) load on first attribute access, so that
# `import dropjax` stays light while `dropjax.linen` etc. work without their own import.
_LAZY_SUBMODULES = ("acquisition", "equinox", "linen", "nnx", "uncertainty")


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"dropjax.{name}")
    raise AttributeError(f"module 'dropjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))
