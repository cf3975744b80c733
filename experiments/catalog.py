"""The one list of experiments: claim number, source, title and experiment names.

The command line, REPORT.md and the tests all read this list. An experiment is a module
``experiments/<name>.py`` named as the experiment; it registers itself with
:func:`experiments.registry.register` when imported. A new claim is one new file plus one
entry here. Nothing in the harness (data, models, training, results, stats, plots, presets)
imports this module or any claim, so the import graph has no cycle.
"""

from __future__ import annotations

import importlib

from experiments.registry import Experiment, registered

__all__ = ["CLAIMS", "NAMES", "experiments"]

# (claim number, seed, short title, experiment names in the registry)
CLAIMS: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "1",
        "Gao et al. 2019, Table 3",
        "LeNet/MNIST: augmented vs standard dropout",
        ("lenet_mnist",),
    ),
    (
        "2",
        "Gao et al. 2019, Tables 1-2, Figs 1-2",
        "Forward/backward dropout ablation",
        ("gao_ablation",),
    ),
    (
        "3",
        "Gao et al. 2019, Tables 4-5",
        "ConvNet-Quick and ResNet-20 on SVHN/CIFAR",
        ("gao_tables45",),
    ),
    (
        "4",
        "Bouthillier et al. 2015, Fig. 6",
        "Random dropout vs dropout on an MLP",
        ("random_dropout_mlp",),
    ),
    (
        "5",
        "Bouthillier et al. 2015, Sec. 3.1, Figs 2, 4, 5",
        "Noise back-projection",
        ("backprojection",),
    ),
    (
        "6",
        "Explainer (seed 000)",
        "Input dropout on least squares = L2, lambda = p/(1-p)",
        ("linear_l2",),
    ),
    (
        "7",
        "Explainer (seed 000)",
        "Weight scaling vs ensemble mean; Jensen gap",
        ("ensemble_jensen",),
    ),
    ("8", "Explainer (seed 000)", "ReLU: expected gradient independent of p", ("relu_gradient",)),
    ("9", "Explainer (seed 000)", "Dropout-aware initialisation", ("init_variance",)),
    (
        "10",
        "Explainer (seed 000)",
        "MC dropout uncertainty (MNIST vs Fashion-MNIST OOD)",
        ("mc_uncertainty",),
    ),
    ("11", "Explainer (seed 000)", "Graph dropout and homophily", ("graph_homophily",)),
    (
        "12",
        "Explainer / glossary (seeds 000, 003)",
        "DropBlock vs dropout on a conv net",
        ("dropblock_conv",),
    ),
    (
        "13",
        "Molchanov, Ashukha & Vetrov 2017, Table 1 (the variant named in the glossary, seed 003)",
        "Sparse variational dropout: LeNet-300-100 error and compression",
        ("sparse_vd",),
    ),
    (
        "14",
        "Beyond the seeds: Gal, Islam & Ghahramani 2017, Fig. 1",
        "MC dropout active learning: BALD-type acquisition vs random",
        ("active_learning",),
    ),
]

NAMES: tuple[str, ...] = tuple(name for *_, names in CLAIMS for name in names)
"""Every experiment, in claim order."""


def experiments() -> dict[str, Experiment]:
    """All experiments, by name (imports each module of :data:`NAMES` first)."""
    for name in NAMES:
        importlib.import_module(f"experiments.{name}")
    table = registered()
    missing = [n for n in NAMES if n not in table]
    if missing:
        raise RuntimeError(f"experiment modules that did not register their name: {missing}")
    return {name: table[name] for name in sorted(table)}
