"""The protocol of :mod:`experiments.claims.gao_ablation`: presets, decision spec, paper
constants and the helpers they need."""

from __future__ import annotations

import dataclasses
from typing import Any

from experiments.harness import stats
from experiments.harness.protocols import RESNET_PAPER, quick_protocol
from experiments.harness.train import TrainConfig

NAME = "gao_ablation"


SOURCE = "Gao, Pei & Huang, Demystifying Dropout, ICML 2019, Section 4, Tables 1-2, Figures 1-2"


ALL_RATES = (0.3, 0.2, 0.1, 0.05, 0.01, 0.005)


ARMS = ("plain", "standard", "forward", "backward")


DROPOUT_ARMS = ARMS[1:]


LARGE_RATES = (0.3, 0.2)


SMALL_RATE = 0.005


FIGURE_RATES = (0.2, 0.05, 0.005)


def _row(*values: float) -> dict[str, float]:
    return {f"{r:g}": v for r, v in zip(ALL_RATES, values, strict=True)}


PAPER = {
    "table1": {
        "title": "Table 1: ConvNet-Quick, CIFAR-10",
        "plain": 0.7579,
        "standard": _row(0.7523, 0.7617, 0.7657, 0.7647, 0.7626, 0.7608),
        "forward": _row(0.6908, 0.7211, 0.7482, 0.7627, 0.7612, 0.7578),
        "backward": _row(0.7433, 0.7557, 0.7585, 0.7593, 0.7583, 0.7599),
    },
    "table2": {
        "title": "Table 2: ResNet-20, CIFAR-10",
        "plain": 0.9143,
        "standard": _row(0.9163, 0.9176, 0.9193, 0.9174, 0.9141, 0.9154),
        "forward": _row(0.9007, 0.9093, 0.9169, 0.9171, 0.9141, 0.9142),
        "backward": _row(0.9109, 0.9130, 0.9140, 0.9142, 0.9147, 0.9146),
    },
}


CLAIMS = {
    "a": "standard dropout beats forward-only and backward-only dropout at large rates (0.3, 0.2)",
    "b": "forward-only dropout degrades badly at large rates (0.3, 0.2) compared with plain",
    "c": "backward-only dropout beats the plain network at a small rate (0.005)",
}


# ------------------------------------------------------------------------------- protocol
@dataclasses.dataclass(frozen=True)
class Part:
    """One network's ablation (one of the paper's tables).

    Attributes:
      table: ``table1`` or ``table2`` (the key into :data:`PAPER`).
      model: ``convnet_quick`` or ``resnet20`` (or ``resnet8`` for smoke runs).
      rates: the dropout rates trained.
      train: the optimisation protocol.
      test_subset: evaluate on the first ``test_subset`` test images (None: all).
      augmentation: the paper's augmentation for this table ("" for none); a non-empty value
        trains with :class:`experiments.harness.augment.PadCropFlip` (pad 4, crop, flip).
      needs_accelerator: on a CPU-only machine the part is reported as not run.
      train_subset: train on the first ``train_subset`` training images (None: all).
      key: the part's name in the results and its cells' id prefix (default: ``table``).
      seeds: the part's own seeds (empty: the preset's), for a regime that must not reuse
        the seeds another regime's data were seen at.
    """

    table: str
    model: str
    rates: tuple[float, ...]
    train: TrainConfig
    test_subset: int | None = None
    augmentation: str = ""
    needs_accelerator: bool = False
    train_subset: int | None = None
    key: str = ""
    seeds: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        return self.key or self.table

    def config(self) -> dict[str, Any]:
        """The part as the grid's configuration records it (the fields added later only
        when set, so that the committed cells of older parts keep their fingerprint)."""
        out = dataclasses.asdict(self)
        for extra in ("train_subset", "key", "seeds"):
            if not out[extra]:
                del out[extra]
        return out


@dataclasses.dataclass(frozen=True)
class Preset:
    """A preset: the dataset (and its substitute when missing), replicas, the parts.

    ``substitute_rates``: the rates trained on the substitute dataset (the three the
    sub-claims name, 0.05 last) instead of the part's rates; None keeps the part's.
    ``substitute_parts``: parts trained only on the substitute dataset, after the others.
    """

    dataset: str
    substitute: str | None
    replicas: int
    parts: tuple[Part, ...]
    substitute_rates: tuple[float, ...] | None = (0.3, 0.005, 0.05)
    substitute_parts: tuple[Part, ...] = ()


PAD_CROP_FLIP = "pad 4 + random 32x32 crop + horizontal flip"


SUBSET = 5000
"""The over-fitting substitute regime: the first 5,000 Fashion-MNIST training images."""


SUBSET_KEY = "table1_fmnist5k"


SUBSET_SMALL = 2000
"""The second over-fitting regime, declared on 2026-12-07 after the first (5,000 images)
failed its positive control at 4 pairs (+0.0042 [-0.0022, +0.0106] against δ = 0.0068) and
before any cell of its own: the first 2,000 Fashion-MNIST training images, where the plain
network over-fits more, with the same spec (:data:`SPEC_SUBSET`), rates and schedule."""


SUBSET_SMALL_KEY = "table1_fmnist2k"


SUBSET_FRESH_KEY = "table1_fmnist2k_fresh"


FRESH_SEEDS = tuple(range(100, 112))
"""The third over-fitting regime's seeds, declared on 2026-12-07 after the 2,000-image
regime's control came out inconclusive at 4 pairs (+0.0069 [-0.0041, +0.0178] against
δ = 0.0068) and before any cell of its own. The same 2,000 images, rates and schedule, but
12 *fresh* paired seeds (100-111), so that its control is an independent replication, not
more pairs added to a look already taken (which would inflate its error rates). 12 pairs
from the 2k pilot's paired SD (0.0069, used for planning only): P(reproduced | δ) = 0.88,
P(refuted | 0) = 0.84, P(refuted | δ) = 0.02 (:func:`experiments.harness.stats.error_rates`);
4 pairs had 0.28. Its spec is the substitute's (:data:`SPEC_SUBSET`) with ``pairs=12``."""


OVERFIT_KEYS = (SUBSET_KEY, SUBSET_SMALL_KEY, SUBSET_FRESH_KEY)
"""The over-fitting regimes, in the order they were declared and run: the headline rests on
the first whose positive control passes."""


SUBSET_RATES = (0.05, 0.3, 0.2, 0.005, 0.1, 0.01)
"""The rates of the over-fitting substitute, in the order their cells run: the control's
0.05 first, then the sub-claims' 0.3, 0.2 and 0.005, then the other rates of Table 1."""


def _overfit_part(subset: int, key: str, seeds: tuple[int, ...] = ()) -> Part:
    """An over-fitting regime of Table 1: ConvNet-Quick at the paper's schedule on the first
    ``subset`` training images, the control's rate first (:data:`SUBSET_RATES`)."""
    train = quick_protocol(9000, 4000, eval_every=500)
    return Part(
        "table1", "convnet_quick", SUBSET_RATES, train, train_subset=subset, key=key, seeds=seeds
    )


PRESETS = {
    "smoke": Preset(
        "digits",
        None,
        2,
        (
            Part(
                "table1",
                "mlp",
                (0.3, 0.005),
                quick_protocol(
                    16, 8, batch_size=32, eval_every=16, eval_batch_size=120, learning_rate=0.05
                ),
            ),
        ),
    ),
    "quick": Preset(
        "cifar10",
        "fashion_mnist",
        4,
        (
            Part(
                "table1",
                "convnet_quick",
                (0.3, 0.005),
                quick_protocol(120, 55, eval_every=40),
                test_subset=2000,
            ),
        ),
    ),
    "paper": Preset(
        "cifar10",
        "fashion_mnist",
        4,
        (
            Part("table1", "convnet_quick", ALL_RATES, quick_protocol(9000, 4000, eval_every=500)),
            Part(
                "table2",
                "resnet20",
                ALL_RATES,
                RESNET_PAPER,
                augmentation=PAD_CROP_FLIP,
                needs_accelerator=True,
            ),
        ),
        substitute_parts=(
            _overfit_part(SUBSET, SUBSET_KEY),
            _overfit_part(SUBSET_SMALL, SUBSET_SMALL_KEY),
            _overfit_part(SUBSET_SMALL, SUBSET_FRESH_KEY, FRESH_SEEDS),
        ),
    ),
}


# ------------------------------------------------------------------------------- decision
def _value(table: str, arm: str, rate: str) -> float:
    paper = PAPER[table]
    return paper["plain"] if arm == "plain" else paper[arm][rate]


def _contrast(claim: str, other: str, base: str, rate: float, sign: int, source: str):
    """``other - base`` at ``rate``, δ = Table 1's own difference (at least 1e-4)."""
    k = f"{rate:g}"
    delta = max(abs(_value("table1", other, k) - _value("table1", base, k)), 1e-4)
    return stats.Contrast(claim, other, base, k, sign, round(delta, 6), source)


SEC4 = "Sec. 4.2, observations on Tables 1-2"


ALL_CLAIMS = {
    **{k: (v, "every") for k, v in CLAIMS.items()},
    "d": ("at p = 0.3 both forward and backward dropout degrade the plain network", "every"),
    "e": ("at p = 0.05 both forward and backward dropout improve on the plain network", "every"),
    "f": ("at p = 0.05 forward dropout outperforms backward dropout", "every"),
    "g": (
        "standard dropout improves on the plain network in almost all cases (Table 1 itself "
        "has it below plain at 0.3, so 0.3 is left out)",
        "almost-all",
    ),
    "h": (
        "forward and backward dropout are inferior to standard dropout in almost all cases",
        "almost-all",
    ),
}


def _contrasts() -> tuple[stats.Contrast, ...]:
    """Every comparison Section 4.2 states for Table 1, with its sign and Table 1's δ."""
    out = []
    for r in LARGE_RATES:
        out += [_contrast("a", "standard", arm, r, +1, SEC4) for arm in ("forward", "backward")]
        out.append(_contrast("b", "forward", "plain", r, -1, SEC4))
    out.append(_contrast("c", "backward", "plain", SMALL_RATE, +1, SEC4))
    out += [_contrast("d", arm, "plain", 0.3, -1, SEC4) for arm in ("forward", "backward")]
    out += [_contrast("e", arm, "plain", 0.05, +1, SEC4) for arm in ("forward", "backward")]
    out.append(_contrast("f", "forward", "backward", 0.05, +1, SEC4))
    out += [_contrast("g", "standard", "plain", r, +1, SEC4) for r in ALL_RATES if r != 0.3]
    for r in ALL_RATES:
        out += [_contrast("h", "standard", arm, r, +1, SEC4) for arm in ("forward", "backward")]
    return tuple(out)


SPEC = stats.DecisionSpec(
    claims=ALL_CLAIMS,
    contrasts=_contrasts(),
    pairs=4,
    pooling="none: sub-claims (a), (b), (c) make the headline, each asserting all its cells",
    headline=("a", "b", "c"),
)
"""Claim 2's decision on real CIFAR-10 and on the full Fashion-MNIST substitute (fixed
2026-12-07: the first decision of the full-substitute cells under it is this re-summary)."""


SPEC_SUBSET = dataclasses.replace(
    SPEC,
    control=_contrast("control", "standard", "plain", 0.05, +1, "Table 1: best rate"),
    control_needs=("reproduced",),
)
"""The over-fitting substitute's decision, fixed before its first cell: the same contrasts,
gated by a positive control: standard - plain at 0.05 (Table 1's best rate, +0.0068) must be
*reproduced* at 4 paired seeds, else nothing is decided from this substitute."""


SPEC_AT_CB17A82 = dataclasses.replace(
    SPEC,
    claims={k: (v, "all") for k, v in CLAIMS.items()},
    contrasts=tuple(c for c in _contrasts() if c.claim in CLAIMS),
    rule="gap-2026-11",
)
"""The rule in force when the full-substitute cells started (code at cb17a82; no hash was
recorded then, so this is reconstructed from that code): the gap rule, sub-claims (a)-(c)
only, each reproduced or refuted only when all its cells are."""


# ------------------------------------------------------------------------------- run
CLAIM_TEXT = (
    "(a) standard dropout beats forward-only and backward-only dropout at large rates "
    "(0.3, 0.2); (b) forward-only dropout degrades badly at large rates vs the plain "
    "network; (c) backward-only dropout beats the plain network at rate 0.005"
)


PAPER_ITERATIONS = {"table1": 9000, "table2": 640_000}


GROUP = 2  # seeds per cell


TABLE_CELLS = 1 + len(DROPOUT_ARMS) * len(ALL_RATES)
"""Table 1's cells: plain and three arms at six rates."""
