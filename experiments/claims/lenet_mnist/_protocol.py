"""The protocol of :mod:`experiments.claims.lenet_mnist`: presets, decision spec, paper
constants and the helpers they need."""

from __future__ import annotations

import dataclasses
import functools

from experiments.harness import recipes, stats
from experiments.harness.train import TrainConfig, step_sgd

NAME = "lenet_mnist"


BACKWARD_RATE = 1e-4


ARMS = ("standard", "augmented", "augmented_elementwise")


PRIMARY = ("standard", "augmented")


GROUP = 4  # seeds per cell


PAPER_ITERATIONS = 12000


DELTA = 0.0003  # mean of Table 3's augmented - standard over the five rates


PAPER_TABLE3 = {
    "standard": {0.1: 0.9916, 0.2: 0.9922, 0.3: 0.9918, 0.4: 0.9917, 0.5: 0.9922},
    "augmented": {0.1: 0.9918, 0.2: 0.9923, 0.3: 0.9925, 0.4: 0.9920, 0.5: 0.9925},
}


SOURCE = "Gao, Pei & Huang, Demystifying Dropout, ICML 2019, Table 3"


CONTROL_RATE = 0.5


CONTROLS = {
    # arm: (dropout kind, extra backward rate, dropout salt)
    "standard_fresh": ("standard", 0.0, 1),  # null control: the same arm, fresh masks
    "augmented_b0.01": ("augmented", 0.01, 0),  # positive controls: backward dynamics that
    "augmented_b0.1": ("augmented", 0.1, 0),  # must differ from standard dropout's
}
"""The controls at forward rate 0.5, 4 seeds each, after every other cell: the noise floor
of the pairing (a second standard arm with fresh dropout masks) and two backward rates far
above the paper's 1e-4, where the training dynamics must differ from standard dropout's."""


def _delta(rate: float) -> float:
    """Table 3's own augmented - standard difference at ``rate`` (the per-cell δ)."""
    return round(PAPER_TABLE3["augmented"][rate] - PAPER_TABLE3["standard"][rate], 6)


SPEC = stats.DecisionSpec(
    claims={
        "pooled": ("augmented beats standard, pooled over rates 0.1-0.5 (headline)", "all"),
        "per-rate": ("augmented beats standard at every rate (Table 3's words)", "every"),
        "null": ("null control: standard with fresh masks - standard is below δ", "all"),
    },
    contrasts=(
        stats.Contrast("pooled", "augmented", "standard", "pooled", +1, DELTA, "Table 3 mean"),
        *(
            stats.Contrast("per-rate", "augmented", "standard", f"{r:g}", +1, _delta(r), "Table 3")
            for r in (0.1, 0.2, 0.3, 0.4, 0.5)
        ),
        stats.Contrast("null", "standard_fresh", "standard", "0.5", +1, DELTA, "null control"),
    ),
    pairs=20,
    pooling="all (rate, seed) pairs of rates 0.1-0.5, δ = the mean of Table 3's differences",
    control=stats.Contrast("control", "augmented_b0.1", "standard", "0.5", +1, DELTA, "control"),
    control_needs=("reproduced", "reproduced-smaller", "contradicted"),
    headline=("pooled",),
)
"""Claim 1's decision (fixed 2026-12-07, after its 15 cells: their first decision was under
:data:`SPEC_AT_290B182`, rendered beside it). The positive control passes when the design
separates backward rate 0.1 from standard dropout in either direction."""


SPEC_AT_290B182 = dataclasses.replace(
    SPEC,
    claims={
        "pooled": SPEC.claims["pooled"],
        "per-rate": ("augmented beats standard at each rate", "all"),
    },
    contrasts=(
        SPEC.contrasts[0],
        *(dataclasses.replace(c, delta=DELTA) for c in SPEC.contrasts[1:6]),
    ),
    control=None,
    rule="gap-2026-11",
)
"""The rule the 15 cells were decided under when they ran (code at 290b182, reconstructed:
no hash was recorded then): the gap rule, the pooled δ for every rate, no controls."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: the data, the rates, the replica count and the optimisation protocol."""

    dataset: str
    rates: tuple[float, ...]
    replicas: int
    train: TrainConfig
    arms: tuple[str, ...] = ARMS
    controls: tuple[str, ...] = ()


_protocol = functools.partial(step_sgd, learning_rate=0.01)


PRESETS = {
    "smoke": Preset(
        "digits", (0.5,), 2, _protocol(20, 10, batch_size=16, eval_every=10, eval_batch_size=120)
    ),
    # eval_batch_size=100: LeNet's activations for 100 test images stay in a core's cache;
    # 1000 at a time makes an evaluation about 2x slower on a CPU (same numbers up to the
    # order of the test-loss sum)
    "quick": Preset(
        "mnist",
        (0.5,),
        4,
        _protocol(600, 300, batch_size=100, eval_every=300, eval_batch_size=100),
    ),
    "paper": Preset(
        "mnist",
        (0.5, 0.1, 0.2, 0.3, 0.4),  # 0.5 first: the pilot that measures the paired SD
        4,
        _protocol(12000, 6000, batch_size=100, eval_every=500),
        controls=tuple(CONTROLS),
    ),
}


load_data = recipes.lenet_images
