"""The protocol of :mod:`experiments.claims.mc_uncertainty`: presets, decision spec, paper
constants and the helpers they need."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from experiments.harness.train import TrainConfig, step_sgd

NAME = "mc_uncertainty"


SOURCE = (
    "explainer seed 000_181800e08f4700ac ('A Final Trick', 'The Oracle's Whisper'); "
    "protocol after Gal & Ghahramani (2016) and Gao et al. (2019) Sec. 6.2; baselines after "
    "Guo et al. (2017, temperature scaling) and Lakshminarayanan et al. (2017, deep ensembles)"
)


CLAIM_TEXT = (
    "MC dropout (dropout kept on at test time, T stochastic passes) gives useful uncertainty: "
    "its mutual information / predictive entropy detect out-of-distribution inputs better than "
    "the deterministic network's, and the MC average is better calibrated (lower NLL, ECE) "
    "than the deterministic prediction"
)


QUOTES = (
    "The mean of this distribution can serve as our final, more robust prediction. But far "
    "more exciting is the variance of this distribution. [...] If the predictions are "
    "scattered widely, the model is effectively communicating its uncertainty",
    "the variance of this distribution of answers can be interpreted as a measure of the "
    "model's epistemic uncertainty",
    "It allows us to estimate model uncertainty without resorting to more complex and "
    "computationally expensive methods.",
)


RATE = 0.5


NUM_BINS = 15


CURVE_POINTS = 101


TPR = 0.95


PAPER_ITERATIONS = 12000  # Gao et al.'s LeNet schedule: our "trained to convergence"


MEMBER_STRIDE = 1000  # ensemble member j of seed s trains with seed s + MEMBER_STRIDE * j


HOLDOUT_SEED = 0  # numpy seed of the fixed train / held-out permutation


DELTA_AUROC = 0.01


DELTA_NLL = 0.01


DELTA_ECE = 0.005


_TINY = float(np.finfo(np.float32).tiny)  # floor before log: log(0) would be -inf


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: data, OOD set, seeds, ensemble size, held-out split, protocol, T grid."""

    dataset: str
    ood: str
    replicas: int
    members: int
    holdout: int
    train: TrainConfig
    num_samples: tuple[int, ...]
    chunk: int = 100  # images per forward call: XLA:CPU runs LeNet 3x faster per image at


_protocol = functools.partial(step_sgd, learning_rate=0.01)


PRESETS = {
    "smoke": Preset(
        "digits",
        "noise",
        3,
        2,
        237,
        _protocol(30, 15, batch_size=16, eval_every=15, eval_batch_size=120),
        (1, 2, 8),
        chunk=120,
    ),
    "quick": Preset(
        "mnist",
        "fashion_mnist",
        3,
        5,
        5000,
        _protocol(500, 400, batch_size=100, eval_every=500, eval_batch_size=100),
        (1, 2, 5, 10, 20, 50),
        chunk=100,
    ),
    "paper": Preset(
        "mnist",
        "fashion_mnist",
        4,
        5,
        5000,
        _protocol(12000, 6000, batch_size=100, eval_every=2000, eval_batch_size=100),
        (1, 2, 5, 10, 20, 50, 100),
        chunk=100,
    ),
}


@dataclasses.dataclass
class SeedOutputs:
    """Everything one seed's arms are built from (numpy arrays).

    Attributes:
      labels: ``(N,)`` test labels.
      labels_holdout: ``(H,)`` held-out labels.
      logits: split -> ``(n, C)`` logits of the single network with dropout off, for the
        splits ``test``, ``ood`` and ``holdout``.
      mc: split -> ``(T_max, n, C)`` MC softmax samples of the single network, same splits.
      members: split -> ``(M, n, C)`` logits of the ensemble's members (member 0 is the
        single network), for ``test`` and ``ood``.
    """

    labels: np.ndarray
    labels_holdout: np.ndarray
    logits: dict[str, np.ndarray]
    mc: dict[str, np.ndarray]
    members: dict[str, np.ndarray]


# (key, label, arm path, baseline path, arm metric, baseline metric, claimed sign of
# arm - baseline, minimal effect delta, sub-claim); "T" in a path means the largest T.
DECISIONS = (
    (
        "ood_mi",
        "OOD AUROC: MC mutual information − det. 1 − max p",
        ("mc", "T"),
        ("deterministic",),
        "auroc_mi",
        "auroc_maxprob",
        +1,
        DELTA_AUROC,
        "ood_detection",
    ),
    (
        "ood_entropy",
        "OOD AUROC: MC entropy − det. entropy",
        ("mc", "T"),
        ("deterministic",),
        "auroc_entropy",
        "auroc_entropy",
        +1,
        DELTA_AUROC,
        "ood_detection",
    ),
    (
        "nll",
        "NLL: MC average − det.",
        ("mc", "T"),
        ("deterministic",),
        "nll",
        "nll",
        -1,
        DELTA_NLL,
        "calibration",
    ),
    (
        "ece",
        "ECE: MC average − det.",
        ("mc", "T"),
        ("deterministic",),
        "ece",
        "ece",
        -1,
        DELTA_ECE,
        "calibration",
    ),
)


CONTEXT_METRICS = (("auroc_entropy", +1), ("nll", -1), ("ece", -1), ("aece", -1))
