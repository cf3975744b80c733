"""Gao et al. (2019), Table 3: LeNet on MNIST, standard vs augmented dropout.

Protocol (Section 6.2): Caffe's LeNet with dropout on the input of the last fully connected
layer, SGD with momentum 0.9, batch 100, weight decay 5e-4, learning rate 0.01 divided by 10
at 6,000 iterations, 12,000 iterations; forward rates 0.1 .. 0.5, backward rate 1e-4; the
mean of four runs. The claim: augmented dropout beats standard dropout at every rate.

Arms, each trained with the same seeds (so replica ``r`` of every arm shares initial
parameters, data order and forward dropout masks, and the arms are *paired*):

* ``standard``: :class:`dropjax.linen.Dropout` at the rate;
* ``augmented``: Gao et al.'s augmented dropout as Algorithm 1 defines it, layer-exact
  (:class:`dropjax.linen.DecoupledDense`, Eq. 9): the backward mask (nested in the forward
  one, extra rate 1e-4) masks both the error and the last layer's weight-gradient input;
* ``augmented_elementwise`` (secondary, labelled): the elementwise form, whose weight
  gradient still sees the forward-masked input.

**Cells.** The run is a grid of cells, one per (seed group of 4, rate, arm), each trained
and written into the results file as soon as it finishes (:mod:`experiments.harness.cells`):
rerunning the command skips finished cells and resumes the unfinished one from its
checkpoint, and ``--time-budget`` stops cleanly. ``--replicas 8`` adds a second seed group
to a finished 4-replica run without retraining the first. The elementwise arm's cells come
last, after every primary cell, so a tight budget spends its time on the headline.

For each rate: per-arm mean ± std of the final test accuracy, and the paired difference
(arm − standard) with its 95% Student-t interval. The headline pools every (rate, seed) pair
and is decided by :func:`experiments.harness.stats.decide` against the paper's effect size
``DELTA`` (the mean of Table 3's augmented − standard differences, +0.0003), with the power
of the design for it and the protocol coverage (fraction of the paper's 12,000 iterations).


Presets: ``smoke`` uses scikit-learn's 8x8 digits (no download), each image upsampled 3x by
pixel repetition to 24x24 and zero-padded by 2 pixels to MNIST's 28x28 layout, 20
iterations, batch 16, one rate, 2 replicas. ``quick`` uses real MNIST with a shortened
schedule (600 iterations, learning-rate step at 300) at rate 0.5 only, 4 replicas (a few
minutes on a 2-core CPU): 5 % of the protocol, so its verdict is only indicative.
``paper`` is the protocol above. Inputs are scaled by 1/256 as in Caffe's LeNet.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from experiments.claims.lenet_mnist._cells import (
    _dropout,
    _results,
    _specs,
    cells,
    decide,
    measure,
)
from experiments.claims.lenet_mnist._protocol import (
    BACKWARD_RATE,
    CONTROLS,
    NAME,
    PAPER_TABLE3,
    PRESETS,
    PRIMARY,
    SPEC,
    _delta,
    load_data,
)
from experiments.claims.lenet_mnist._render import (
    _plot,
    render,
)
from experiments.harness import plots
from experiments.harness.cells import Grid, finished_cells, run_grid
from experiments.harness.claim import Claim, Outcome
from experiments.harness.results import RunContext


def run(ctx: RunContext) -> Outcome:
    """Trains every cell (seed group × rate × arm) with paired seeds; decides the claim."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    seeds = ctx.seeds(preset.replicas)
    config = {
        "train": dataclasses.asdict(preset.train),
        "data": [data.name, data.fingerprint()],
        "backward_rate": BACKWARD_RATE,
        "model": "LeNet",
    }
    grid_cells = cells(preset, seeds)

    def summarise_and_draw(records, grid: Grid) -> dict[str, Any]:
        specs = grid.specs_at_start
        results = _results(preset, data.describe(), records, seeds, len(grid_cells), specs)
        results["figure"] = plots.publish(_plot, results, ctx.out_dir, ctx.preset, "accuracy_loss")
        return results

    # A stopped run still draws the figure of its finished cells: the loss panels need only the
    # primary arms, which come first in the grid.
    run_cell = measure(preset, data, ctx.quiet)
    records, grid = run_grid(
        ctx, config, grid_cells, run_cell, on_stop=summarise_and_draw, specs=_specs(ctx)
    )
    return Outcome(summarise_and_draw(records, grid), grid)


def partial(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The results of an unfinished run, from the cells in its results file (the report)."""
    if (finished := finished_cells(payload, PRESETS)) is None:
        return None
    preset, records, seeds = finished
    total = payload.get("cells_total", len(records))
    first = next(iter(records.values()))
    data = first["result"].get("data") or {"name": preset.dataset, "source": "see cells"}
    specs = payload["grid"].get("specs_at_start", {})
    results = _results(preset, data, records, seeds, total, specs)
    # The headline rests on the paired primary arms only: once all their planned cells are
    # in, the verdict is final, whatever the secondary (elementwise) arm's cells.
    planned = cells(preset, [seeds[0] + r for r in range(preset.replicas)])
    results["interim"] = any(c.id not in records for c in planned if c.params["arm"] in PRIMARY)
    # The figure a stopped run drew from its finished cells, if it sits next to the file.
    figure = plots.figure_name(payload["preset"], "accuracy_loss")
    if "_path" in payload and (Path(payload["_path"]).parent / figure).exists():
        results["figure"] = figure
    return results


CLAIM = Claim(
    NAME,
    "LeNet on MNIST: standard vs augmented dropout (Gao et al. Table 3)",
    PRESETS,
    run,
    render,
    partial,
    spec=SPEC,
)


__all__ = ["CLAIM", "CONTROLS", "PAPER_TABLE3", "PRESETS", "_delta", "_dropout", "cells", "decide"]
