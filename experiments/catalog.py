"""Imports every experiment module so that each registers itself (one import per module)."""

import experiments.active_learning  # noqa: F401
import experiments.backprojection  # noqa: F401
import experiments.dropblock_conv  # noqa: F401
import experiments.explainer_ensemble  # noqa: F401
import experiments.explainer_gradient  # noqa: F401
import experiments.explainer_init  # noqa: F401
import experiments.explainer_linear  # noqa: F401
import experiments.gao_ablation  # noqa: F401
import experiments.gao_tables45  # noqa: F401
import experiments.graph_homophily  # noqa: F401
import experiments.lenet_mnist  # noqa: F401
import experiments.mc_uncertainty  # noqa: F401
import experiments.random_dropout_mlp  # noqa: F401
import experiments.sparse_vd  # noqa: F401
