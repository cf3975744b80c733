"""The one list of experiments: claim number, source, title and experiment names.

The command line, REPORT.md and the tests all read this list, and it is the only way to
find a claim. A claim is a module ``experiments/claims/<name>.py`` named as its experiment
that ends with ``CLAIM = Claim(...)`` (the contract, :mod:`experiments.harness.claim`). A
new claim is one new file plus one entry here (in :data:`CLAIMS`, and its one-line
description in :data:`DESCRIPTIONS`, which ``python -m experiments list`` prints without
importing any claim). Nothing in ``experiments/harness/`` imports this module or any claim,
so the import graph has no cycle and no upward arrow.
"""

from __future__ import annotations

import importlib

from experiments.harness.claim import Claim

__all__ = ["ACCELERATOR", "CLAIMS", "DESCRIPTIONS", "NAMES", "SCALED", "claim", "claims"]

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

ACCELERATOR: dict[str, str] = {
    "lenet_mnist": "nothing the verdict needs: the paper's protocol runs here; more seeds "
    "would narrow the per-rate intervals",
    "gao_ablation": "Table 2 (ResNet-20, 640k iterations x 19 cells x 4 seeds) and real "
    "CIFAR-10: `--preset paper` on a GPU host with the data trains it (the part is reported "
    "not run on a CPU)",
    "gao_tables45": "Table 5 (ResNet-20 on SVHN, CIFAR-10, CIFAR-100) and the real datasets",
    "random_dropout_mlp": "the paper's protocol, out of reach of one core: one GPU runs it; "
    "here the declared scaled protocol (`--preset scaled`: 512-256 MLP, 10k images, 100 "
    "epochs, 15 arms x 4 seeds, about 1 core-hour: 3.5 min per arm here)",
    "backprojection": "the paper's 1500-1500 MLP for 501 epochs, out of reach of one core; "
    "here the declared scaled protocol (`--preset scaled`: 512-256 MLP, 5k images, 100 "
    "epochs, 3 arms x 4 seeds, about 2 core-hours estimated from the quick run)",
    "linear_l2": "nothing: analytic, complete here",
    "ensemble_jensen": "nothing: complete here",
    "relu_gradient": "nothing: complete here",
    "init_variance": "nothing: complete here",
    "mc_uncertainty": "nothing the verdict needs (the full schedule is CPU-feasible); seeds "
    "and larger T",
    "graph_homophily": "nothing the claim needs (no source protocol; the paper preset is "
    "CPU-feasible)",
    "dropblock_conv": "nothing: the full schedule is CPU-feasible",
    "sparse_vd": "nothing: the paper's 200 epochs run here",
    "active_learning": "nothing the verdict needs (1,000 labels are CPU-feasible; the cost "
    "grows faster than the labels, so the estimate is a lower bound); seeds",
}
"""What an accelerator (the same command on a GPU/TPU host) would add, per experiment."""

NAMES: tuple[str, ...] = tuple(name for *_, names in CLAIMS for name in names)
"""Every experiment, in claim order."""

DESCRIPTIONS: dict[str, str] = {
    "lenet_mnist": "LeNet on MNIST: standard vs augmented dropout (Gao et al. Table 3)",
    "gao_ablation": "Plain vs standard vs forward-only vs backward-only dropout "
    "(Gao et al. Tables 1-2)",
    "gao_tables45": "Standard vs augmented dropout, ConvNet-Quick and ResNet-20 "
    "(Gao et al. Tables 4-5)",
    "random_dropout_mlp": "Random dropout vs dropout on an MNIST MLP (Bouthillier et al. Fig. 6)",
    "backprojection": "Dropout noise back-projected to the input (Bouthillier et al. Fig. 2/4/5)",
    "linear_l2": "Input dropout on least squares vs ridge with lambda = p/(1-p)",
    "ensemble_jensen": "Weight scaling vs exact dropout-ensemble mean (Jensen gap)",
    "relu_gradient": "Expected backprop gradient of ReLU nets with inverted dropout vs p",
    "init_variance": "Signal variance in deep ReLU/residual nets vs dropout-aware init",
    "mc_uncertainty": "MC dropout uncertainty vs temperature scaling and a deep ensemble "
    "(explainer claim)",
    "graph_homophily": "GCN on K-class CSBMs: none/feature/edge/node dropout across homophily",
    "dropblock_conv": "DropBlock vs standard dropout on conv feature maps, over-fitting regime "
    "(explainer)",
    "sparse_vd": "Sparse VD on LeNet-300-100: error and compression (Molchanov et al. Table 1)",
    "active_learning": "MC dropout active learning on MNIST: BALD/BatchBALD/entropy/var-ratio "
    "vs random (Gal et al. 2017, Fig. 1; beyond the seeds)",
}
"""Each experiment's one-line description, as ``python -m experiments list`` prints it
without importing any experiment (they import Flax and SciPy: seconds). Each is the
description its module registers; :func:`experiments` checks that they agree."""


SCALED: tuple[str, ...] = ("random_dropout_mlp", "backprojection")
"""The experiments with a ``scaled`` preset: a protocol scaled down to train to convergence
on a CPU, declared (with its decision spec) before its runs, for claims whose paper protocol
cannot run here. :func:`claim` checks that they agree with the modules."""


def claim(name: str) -> Claim:
    """The claim called ``name``: the ``CLAIM`` of module ``experiments.claims.<name>``.

    Raises:
      KeyError: no such experiment (the message says how to list them).

    Examples:
      >>> from experiments import catalog
      >>> catalog.claim("linear_l2").description == catalog.DESCRIPTIONS["linear_l2"]
      True
    """
    if name not in NAMES:
        raise KeyError(f"unknown experiment {name!r}; `python -m experiments list` lists them")
    found = getattr(importlib.import_module(f"experiments.claims.{name}"), "CLAIM", None)
    if not isinstance(found, Claim) or found.name != name:
        raise RuntimeError(
            f"experiments/claims/{name}.py must end with CLAIM = Claim({name!r}, ...)"
        )
    if ("scaled" in found.presets) != (name in SCALED):
        raise RuntimeError(
            f"SCALED in experiments/catalog.py and experiments/claims/{name} disagree on "
            "whether it has a scaled preset"
        )
    if found.description != DESCRIPTIONS[name]:
        raise RuntimeError(
            f"DESCRIPTIONS[{name!r}] in experiments/catalog.py differs from the description "
            f"experiments/claims/{name}.py declares: copy it here"
        )
    return found


def claims() -> dict[str, Claim]:
    """Every claim, by name, in claim order."""
    return {name: claim(name) for name in NAMES}
