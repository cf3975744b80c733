"""Gao et al. (2019), Tables 1-2 and Figures 1-2: plain vs standard vs forward vs backward dropout.

The ablation of Section 4: dropout is split into its two passes. *Forward* dropout drops
features in the forward pass only (the gradient flows as if nothing were dropped);
*backward* dropout keeps every feature in the forward pass and drops features and
back-propagated errors in the backward pass only. Each is compared with standard dropout and
with the network without dropout ("plain") at rates 0.3, 0.2, 0.1, 0.05, 0.01 and 0.005.

Protocols (Section 4, four runs each, the mean reported):

* **Table 1, ConvNet-Quick on CIFAR-10** (Caffe's ``cifar10_quick``, dropout on the inputs
  of both fully connected layers): batch 100, SGD momentum 0.9, learning rate 0.001 divided
  by 10 at 4,000 iterations, 9,000 iterations, mean subtraction only, no augmentation. The
  paper gives no weight decay; we use Caffe's ``cifar10_quick_solver`` value 0.004 on every
  parameter (the harness has no per-layer multipliers, so Caffe's bias lr multiplier 2 is not
  modelled). Inputs are raw pixel values (0..255) minus the per-channel training mean, as
  Caffe's quick model sees them (its mean file is per pixel; ours per channel).
* **Table 2, ResNet-20 on CIFAR-10** (dropout between the two convolutions of every block):
  batch 128, Nesterov momentum 0.9, learning rate 0.1 times 0.1 at 320k and 480k iterations,
  640k iterations, weight decay 1e-3, pad-4 random crop + horizontal flip augmentation,
  applied per example on device by the harness (:class:`experiments.harness.augment.PadCropFlip`,
  drawn from the replica's data key and the step, so resumed runs augment identically).

The claims tested, each with paired 95% Student-t intervals over replicas that share seeds
(replica ``r`` of every arm has the same initial parameters, data order and dropout keys):

(a) standard dropout beats forward-only and backward-only dropout at the large rates
    (0.3 and 0.2): both differences ``standard - forward`` and ``standard - backward`` > 0;
(b) forward-only dropout degrades badly at large rates compared with the plain network:
    ``forward - plain`` < 0 at 0.3 and 0.2;
(c) backward-only dropout beats the plain network at a small rate (0.005):
    ``backward - plain`` > 0.

Each (rate, comparison) cell is decided by :func:`experiments.harness.stats.decide` against the
paper's difference for it (δ, Tables 1-2), and a claim's cells are combined by
:func:`experiments.harness.stats.combine_decisions` with ``every=True``: each claim asserts
all of its cells (both comparisons of (a), every large rate), so one refuted cell refutes the claim;
below the paper's 9,000 iterations, or on the
substitute dataset, the headline says so. Claims about rates a preset does not train are
*not tested*.

Presets:

* ``smoke``: scikit-learn's 8x8 digits, a small MLP (one hidden layer of 32 units, dropout
  on the input of the output layer) instead of ConvNet-Quick, 16 iterations in one segment,
  learning rate 0.05, batch 32, rates 0.3 and 0.005, 2 replicas. It exercises the whole
  code path in seconds (CI); the MLP stands in because XLA:CPU takes about ten seconds to
  compile each ConvNet-Quick arm.
* ``quick``: CIFAR-10 when it is available (``--dataset`` or auto-detected), otherwise
  **Fashion-MNIST as a substitute dataset** (28x28 grey images, clearly labelled as such):
  rates 0.3 and 0.005, 4 replicas, 120 iterations with the learning-rate step at 55 (about
  the paper's 4000/9000 ratio), evaluated on the first 2,000 test images. It is sized to finish
  in about ten minutes on a shared 2-core CPU, where ConvNet-Quick with 4 replicas runs at
  roughly half a second per step; that is far from convergence, so its verdicts say little
  about the paper's converged numbers.
* ``paper``: Table 1's protocol exactly (all six rates, 4 replicas in cells of 2 seeds, full
  test set) and Table 2's ResNet-20 protocol (with the pad-4/crop/flip augmentation; on a
  CPU-only machine this part is reported as not run). Without CIFAR-10 it trains Table 1 on
  the Fashion-MNIST substitute at the sub-claims' rates 0.3 and 0.005, then 0.05, labelled
  SUBSTITUTE.
"""

from __future__ import annotations

from typing import Any

import jax

from experiments.claims.gao_ablation._cells import (
    _part_results,
    _results,
    cells,
    evaluate_claims,
    measure,
    plan,
    resolve_dataset,
    spec_for,
    stages,
    summarise,
)
from experiments.claims.gao_ablation._protocol import (
    ALL_CLAIMS,
    CLAIM_TEXT,
    NAME,
    PAD_CROP_FLIP,
    PAPER,
    PRESETS,
    SOURCE,
    SPEC_SUBSET,
    SUBSET_FRESH_KEY,
    SUBSET_SMALL_KEY,
    Part,
)
from experiments.claims.gao_ablation._render import (
    _plot,
    render,
)
from experiments.harness import plots, recipes
from experiments.harness.cells import finished_cells, grid_for
from experiments.harness.claim import Claim, Outcome
from experiments.harness.results import RunContext, not_run_result


def _needs_an_accelerator(part: Part, replicas: int) -> dict[str, Any]:
    """A part a CPU backend does not train, with the reason."""
    return {
        "status": "not run",
        "table": part.table,
        "model": part.model,
        "reason": f"{part.model} for {part.train.iterations} iterations x "
        f"{replicas} replicas x {1 + 3 * len(part.rates)} arms needs an "
        "accelerator; this machine has only a CPU backend. Run the preset on a "
        "GPU/TPU host.",
    }


def _parts_needing_an_accelerator(parts: list[Part], replicas: int) -> dict[str, Any]:
    """The parts a CPU backend does not train, each with the reason."""
    if jax.default_backend() != "cpu":
        return {}
    return {
        part.id: _needs_an_accelerator(part, replicas) for part in parts if part.needs_accelerator
    }


def _run_stages(grid, part: Part, stages_: list, measure_, total: int) -> None:
    """A part's stages in order; after the first, a part with a positive control stops
    unless the control passed (the design cannot see the effect it dissects)."""
    for i, stage in enumerate(stages_):
        grid.run(stage, measure_, total=total)
        if i == 0 and spec_for(part).control is not None:
            records = {c.id: grid.done[c.id] for c in stage}
            decided = evaluate_claims(summarise(part, records)["finals"], spec_for(part))
            if decided["control_passed"] is not True:
                break


def run(ctx: RunContext) -> Outcome:
    """Trains plain and every (arm, rate) cell with the same seeds; decides the claims."""
    preset = PRESETS[ctx.preset]
    name, substitute, missing = resolve_dataset(ctx.dataset, preset)
    if name is None:
        reason = (
            f"the {ctx.preset} preset needs {preset.dataset}, which is not available here. "
            f"{missing}"
        )
        return Outcome(not_run_result(reason, CLAIM_TEXT, SOURCE, PAPER), None)
    seeds = ctx.seeds(preset.replicas)
    preset_parts = plan(preset, name, substitute is not None)
    parts = _parts_needing_an_accelerator(preset_parts, len(seeds))
    runnable = [p for p in preset_parts if p.id not in parts]
    datasets = {
        p.id: recipes.convnet_images(name, p.model, p.test_subset, p.train_subset) for p in runnable
    }

    def config_of(parts: list[Part]) -> dict[str, Any]:
        return {
            "parts": [p.config() for p in parts],
            "data": {p.id: [datasets[p.id].name, datasets[p.id].fingerprint()] for p in parts},
        }

    config = config_of(runnable)
    # The committed full-substitute cells ran before the over-fitting part existed: a file
    # of theirs is taken over (same cells, same fingerprints), not refused.
    legacy = [
        config_of([p for p in runnable if not p.train_subset]),
        config_of([p for p in runnable if p.key not in (SUBSET_SMALL_KEY, SUBSET_FRESH_KEY)]),
        config_of([p for p in runnable if p.key != SUBSET_FRESH_KEY]),  # before the fresh seeds
    ]
    all_cells = {p.id: stages(p, seeds) for p in runnable}
    total = sum(len(c) for stage in all_cells.values() for c in stage)
    grid = grid_for(ctx, config, extends=legacy)
    grid.specs = {  # recorded before a part's first cell trains, never over an older record
        p.id: spec_for(p).to_json()
        for p in runnable
        if not any(c.id in grid.done for st in all_cells[p.id] for c in st)
    }
    for part in runnable:  # one grid, parts in order
        _run_stages(
            grid, part, all_cells[part.id], measure(part, datasets[part.id], ctx.quiet), total
        )
    for part in runnable:
        ids = [c.id for st in all_cells[part.id] for c in st]
        records = {i: grid.done[i] for i in ids if i in grid.done}
        parts[part.id] = _part_results(
            part,
            datasets[part.id].describe(),
            records,
            substitute is not None,
            len(ids),
            grid.specs_at_start,
            run_seeds=seeds,
        )
    results = _results(parts, seeds, substitute, name, preset_parts)
    results["figure"] = plots.publish(_plot, results, ctx.out_dir, ctx.preset, "ablation")
    return Outcome(results, grid)


def partial(payload: dict[str, Any]) -> dict[str, Any] | None:
    """Results from the finished cells of an unfinished run (the report's view)."""
    if (finished := finished_cells(payload, PRESETS)) is None:
        return None
    preset, done, seeds = finished
    # The run's seeds: not those of a regime on its own fresh seeds (Part.seeds)
    own = {s for part in (*preset.parts, *preset.substitute_parts) for s in part.seeds}
    seeds = [s for s in seeds if s not in own] or seeds
    first = next(iter(done.values()))["result"]
    data = first.get("data", {"name": preset.dataset, "source": "?", "preprocessing": "?"})
    substitute = data["name"] != preset.dataset
    preset_parts = plan(preset, preset.substitute or preset.dataset, substitute)
    specs_at_start = payload["grid"].get("specs_at_start", {})
    on_cpu = next(iter(done.values())).get("environment", {}).get("platform", "cpu") == "cpu"
    parts = {}
    for part in preset_parts:
        records = {i: r for i, r in done.items() if i.startswith(f"{part.id}/")}
        if not records and part.needs_accelerator and on_cpu:  # as the run said
            parts[part.id] = _needs_an_accelerator(part, len(seeds))
            continue
        if not records:
            parts[part.id] = {
                "status": "not run",
                "table": part.table,
                "model": part.model,
                "reason": "no finished cell yet",
            }
            continue
        first_data = next(iter(records.values()))["result"].get("data", data)
        total = len(cells(part, seeds))
        parts[part.id] = _part_results(
            part, first_data, records, substitute, total, specs_at_start, run_seeds=seeds
        )
    note = (
        f"SUBSTITUTE DATASET: {preset.substitute} stands in for {preset.dataset}"
        if substitute
        else None
    )
    if parts[preset_parts[0].id].get("status") == "not run":
        return None
    return _results(parts, seeds, note, preset.dataset, preset_parts)


CLAIM = Claim(
    NAME,
    "Plain vs standard vs forward-only vs backward-only dropout (Gao et al. Tables 1-2)",
    PRESETS,
    run,
    render,
    partial,
    spec={p.id: spec_for(p) for p in (*PRESETS["paper"].parts, *PRESETS["paper"].substitute_parts)},
)


__all__ = [
    "ALL_CLAIMS",
    "CLAIM",
    "PAD_CROP_FLIP",
    "PAPER",
    "PRESETS",
    "SPEC_SUBSET",
    "cells",
    "evaluate_claims",
    "plan",
    "render",
    "stages",
]
