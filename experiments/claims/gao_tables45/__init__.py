"""Gao et al. (2019), Tables 4-5: standard vs augmented dropout, ConvNet-Quick and ResNet-20.

Augmented dropout (Algorithm 1, layer-exact: :class:`dropjax.linen.DecoupledDense` and the
conv form of :mod:`experiments.harness.models`) keeps standard dropout's forward mask (rate ``p``)
and drops a little more in the backward pass (a nested backward mask with the extra rate
``q``; the paper writes ``p/q``). The claim: augmented dropout has higher test accuracy than
standard dropout at the same forward rate, for every dataset and rate of the two tables.

* **Table 4, ConvNet-Quick** (Caffe ``cifar10_quick``, dropout on the inputs of both fully
  connected layers) on SVHN and CIFAR-10, ``q = 2e-4``; no augmentation, mean subtraction
  only; batch 100, SGD momentum 0.9, lr 0.001 divided by 10 at 4,000 iterations, 9,000
  iterations (Section 4's setting). Weight decay 0.004 (Caffe's ``cifar10_quick_solver``;
  the paper does not state one). Inputs: raw pixels minus the per-channel training mean.
* **Table 5, ResNet-20** (dropout between the two convolutions of every block) on SVHN
  (``q = 2e-4``, no augmentation), CIFAR-10 and CIFAR-100 (``q = 1e-4``, with "the simple
  data augmentation as Section 4": pad 4, random crop, horizontal flip, applied per example
  on device by :class:`experiments.harness.augment.PadCropFlip`); batch 128, Nesterov momentum 0.9,
  lr 0.1 times 0.1 at 320k and 480k iterations, 640k iterations, weight decay 1e-3. Inputs:
  pixels / 255 minus the per-channel training mean.

**640k iterations.** The paper states 640,000 iterations with steps at 320k and 480k, ten
times He et al.'s (2016) CIFAR schedule of 64k iterations with steps at 32k and 48k (batch
128, the same optimiser): very likely a typo for it. The ``paper`` preset runs what the paper
says, and coverage is counted against 640k; a 64k run would be 10 % coverage.

**Data.** SVHN, CIFAR-10 and CIFAR-100 have no offline source here (:mod:`experiments.harness.data`
says how to provide them). Where one is absent its cells run on a **SUBSTITUTE**: MNIST for
SVHN (digits), Fashion-MNIST for CIFAR-10 (ten classes of natural objects), both 28x28 grey
(ConvNet-Quick pools 28 -> 14 -> 7 -> 4, ResNet-20's stages see 28, 14, 7; the crop is
28x28). Their numbers are not comparable with the paper's, only the direction and size of
the differences are, and every such verdict says SUBSTITUTE. CIFAR-100 has no substitute
and is reported *not run*. ResNet-20 cells of the ``quick``/``paper`` presets need an
accelerator (about 1.8 s per step for 4 replicas on one CPU core); on a CPU-only machine
they are reported *not run* with the reason.

**Cells and verdicts.** The run is a grid of cells (:mod:`experiments.harness.cells`), one per
(dataset, seed group of 4, rate, arm), each written into the results file as soon as it is
done, resumable. Both arms of a rate train with the same seeds (paired replicas: same
initial parameters, data order, augmentation and forward masks). Per dataset and rate the
paired difference ``augmented - standard`` gets a 95 % Student-t interval, and the pool over
a dataset's rates is decided by :func:`experiments.harness.stats.decide` against the paper's
effect size δ (that table's augmented - standard, averaged over the rates trained; 1e-4 at
least), with the design's power and the protocol coverage (fraction of the paper's
iterations). The headline combines the datasets' pooled decisions
(:func:`experiments.harness.stats.combine_decisions`); below full coverage, or on substitute
data, it is *indicative* at best.

Presets:

* ``smoke``: tiny synthetic images (10 class templates plus noise, 8x8x1) and a small MLP
  standing in for both networks (XLA:CPU compiles it in seconds): a Table-4 stand-in and a
  Table-5 stand-in with the pad/crop/flip augmentation, rate 0.3, 16 iterations at lr 0.05,
  2 replicas. The code path in seconds (CI), no data needed.
* ``quick``: Table 4 on the real data or its substitute at one rate per dataset, the one
  with the paper's largest difference (SVHN 0.2: +0.0027; CIFAR-10 0.3: +0.0083), 4
  replicas, 400 iterations with the lr step at 180 (the paper's 4,000/9,000 ratio),
  evaluated on the first 2,000 test images: 11 minutes with one XLA thread on a shared
  2-core CPU (about 0.4 s per step of 4 replicas there), 4 % of the protocol. ResNet-20 at
  its largest-difference rates, 8,000 iterations (steps at 4,000 and 6,000), needs an
  accelerator.
* ``paper``: the protocols above, all three rates, 4 replicas, full test sets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from experiments.claims.gao_tables45._cells import (
    _load,
    _not_run,
    _part_results,
    _results,
    _select,
    cells,
    decide,
    measure,
    paper_delta,
    resolve,
)
from experiments.claims.gao_tables45._protocol import (
    ARMS,
    CLAIM_TEXT,
    NAME,
    PAPER,
    PRESETS,
    RATES,
    SOURCE,
)
from experiments.claims.gao_tables45._render import (
    _plot,
    render,
)
from experiments.harness import plots, stats
from experiments.harness.cells import finished_cells, grid_for
from experiments.harness.claim import Claim, Outcome
from experiments.harness.results import RunContext, not_run_result


def run(ctx: RunContext) -> Outcome:
    """Trains every part whose data (or substitute) and hardware are here, as grid cells."""
    preset = PRESETS[ctx.preset]
    parts = _select(preset, ctx.dataset)
    seeds = ctx.seeds(preset.replicas)
    cache: dict[str, str | None] = {}
    plan = {p.key: resolve(p, cache) for p in parts}
    runnable = [p for p in parts if plan[p.key][0] is not None]
    config = {
        "arms": list(ARMS),
        "replicas": len(seeds),
        "parts": [dataclasses.asdict(p) for p in runnable],
    }
    if not runnable:
        reason = f"no part of the {ctx.preset} preset can run here. " + " | ".join(
            dict.fromkeys(why for _, why in plan.values())
        )
        result = not_run_result(reason, CLAIM_TEXT, SOURCE, PAPER)
        result["config"] = config
        result["cells"] = {p.key: _not_run(p, plan[p.key][1]) for p in parts}
        return Outcome(result, None)
    datasets = {p.key: _load(p, plan[p.key][0]) for p in runnable}
    config["data"] = {k: [d.name, d.fingerprint()] for k, d in datasets.items()}
    grid = grid_for(ctx, config)
    all_cells = {p.key: cells(p, seeds) for p in runnable}
    measures = {p.key: measure(p, datasets[p.key], ctx.quiet) for p in runnable}
    grid.run(  # one grid, parts in order (Table 4 first)
        [c for p in runnable for c in all_cells[p.key]],
        lambda cell, ckpt, budget: measures[cell.params["part"]](cell, ckpt, budget),
    )
    out: dict[str, Any] = {}
    for part in parts:
        if plan[part.key][0] is None:
            out[part.key] = _not_run(part, plan[part.key][1])
            continue
        records = {c.id: grid.done[c.id] for c in all_cells[part.key]}
        total = len(all_cells[part.key])
        out[part.key] = _part_results(part, datasets[part.key].describe(), records, total)
    results = _results(out, seeds, config)
    results["figure"] = plots.publish(_plot, results, ctx.out_dir, ctx.preset, "tables45")
    return Outcome(results, grid)


def partial(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Results from the finished cells of an unfinished run (the report's view)."""
    if (finished := finished_cells(payload, PRESETS)) is None:
        return None
    preset, done, seeds = finished
    out: dict[str, Any] = {}
    for part in preset.parts:
        prefix = f"{part.table}/{part.dataset}/"
        records = {i: r for i, r in done.items() if i.startswith(prefix)}
        if not records:
            out[part.key] = _not_run(part, "no finished cell yet")
            continue
        data = next(iter(records.values()))["result"]["data"]
        out[part.key] = _part_results(part, data, records, len(cells(part, seeds)))
    return _results(out, seeds, {"replicas": len(seeds)})


def spec_for(preset: str) -> stats.DecisionSpec:
    """The decision, fixed before the data: augmented − standard at every (table, dataset,
    rate) cell against the paper's own difference there, and pooled over a part's rates
    against their mean (the part's verdict); the headline combines the parts' pooled
    verdicts."""
    p = PRESETS[preset]
    contrasts = []
    for part in p.parts:
        key = f"{part.table}/{part.dataset}"
        cells = [(f"{r:g}", [r]) for r in part.rates] + [("pooled", list(part.rates))]
        contrasts += [
            stats.Contrast(
                key,
                "augmented",
                "standard",
                cell,
                +1,
                paper_delta(part.table, part.dataset, rates),
                SOURCE,
            )
            for cell, rates in cells
        ]
    return stats.DecisionSpec(
        claims={f"{q.table}/{q.dataset}": (CLAIM_TEXT, "all") for q in p.parts},
        contrasts=tuple(contrasts),
        pairs=p.replicas,
        pooling="per part: (rate, seed) pairs pooled over the part's rates, δ = the mean of "
        "the paper's differences there",
    )


CLAIM = Claim(
    NAME,
    "Standard vs augmented dropout, ConvNet-Quick and ResNet-20 (Gao et al. Tables 4-5)",
    PRESETS,
    run,
    render,
    partial,
    spec=spec_for,
)


__all__ = [
    "paper_delta",
    "ARMS",
    "CLAIM",
    "NAME",
    "PRESETS",
    "RATES",
    "cells",
    "decide",
    "render",
    "resolve",
]
