"""The cells of :mod:`experiments.claims.lenet_mnist`: what each measures, and how they are
summarised and decided."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any

from experiments.claims.lenet_mnist._protocol import (
    BACKWARD_RATE,
    CONTROL_RATE,
    CONTROLS,
    DELTA,
    GROUP,
    NAME,
    PAPER_ITERATIONS,
    PAPER_TABLE3,
    PRIMARY,
    SOURCE,
    SPEC,
    SPEC_AT_290B182,
    Preset,
    _delta,
)
from experiments.harness import stats
from experiments.harness.cells import Cell, merge_seed_groups
from experiments.harness.models import DropoutConfig, LeNet
from experiments.harness.results import RunContext
from experiments.harness.train import ArrayData, train_cell


def _dropout(arm: str, rate: float) -> DropoutConfig:
    if arm in CONTROLS:
        kind, backward, _ = CONTROLS[arm]
        return DropoutConfig(kind, rate, backward)
    backward = 0.0 if arm == "standard" else BACKWARD_RATE
    return DropoutConfig(arm, rate, backward)


def cells(preset: Preset, seeds: list[int]) -> list[Cell]:
    """The grid: (seed group, rate, arm), primary arms first, the elementwise arm last."""
    groups = [seeds[i : i + GROUP] for i in range(0, len(seeds), GROUP)]
    out = []
    for arms in (
        tuple(a for a in preset.arms if a in PRIMARY),
        tuple(a for a in preset.arms if a not in PRIMARY),
    ):
        for group in groups:
            for rate in preset.rates:
                for arm in arms:
                    cell_id = f"rate={rate:g}/arm={arm}/seeds={group[0]}-{group[-1]}"
                    out.append(Cell(cell_id, {"rate": rate, "arm": arm, "seeds": group}))
    for group in groups:  # the controls last: the headline's cells come first
        for arm in preset.controls:
            cell_id = f"rate={CONTROL_RATE:g}/arm={arm}/seeds={group[0]}-{group[-1]}"
            out.append(Cell(cell_id, {"rate": CONTROL_RATE, "arm": arm, "seeds": group}))
    return out


def measure(preset: Preset, data: ArrayData, quiet: bool):
    """``measure(cell, checkpoint_dir, budget)``: trains one cell's replicas."""

    def run_cell(cell: Cell, checkpoint_dir: Path, budget) -> dict[str, Any]:
        p = cell.params
        model = LeNet(num_classes=10, dropout=_dropout(p["arm"], p["rate"]))
        label = f"{p['arm']} {p['rate']:g}"
        salt = CONTROLS[p["arm"]][2] if p["arm"] in CONTROLS else 0
        result = train_cell(
            model,
            data,
            preset.train,
            cell,
            checkpoint_dir,
            budget,
            quiet=quiet,
            label=label,
            dropout_salt=salt,
        )
        return {**result.to_json(), "data": data.describe()}

    return run_cell


def summarise(done: dict[str, dict[str, Any]], preset: Preset) -> dict[str, Any]:
    """Per arm and rate: the seeds present, mean ± std; only seeds every arm has are paired."""
    by = collections.defaultdict(list)
    for record in done.values():
        p = record["params"]
        by[(p["arm"], f"{p['rate']:g}")].append({**record["result"], "seeds": p["seeds"]})
    arms = {arm: {} for arm in (*preset.arms, *preset.controls)}
    summary = {arm: {} for arm in (*preset.arms, *preset.controls)}
    for (arm, rate), records in by.items():
        if arm in arms:
            arms[arm][rate] = merge_seed_groups(records)
            summary[arm][rate] = stats.mean_std(arms[arm][rate]["final"]["test_acc"])
    return {"arms": arms, "summary": summary}


def _paired(arms, arm: str, rate: str) -> tuple[list[float], list[float]]:
    """Final test accuracies of standard and ``arm`` at ``rate`` on their common seeds."""
    base, other = arms["standard"].get(rate), arms[arm].get(rate)
    if base is None or other is None:
        return [], []
    b = dict(zip(base["seeds"], base["final"]["test_acc"], strict=True))
    o = dict(zip(other["seeds"], other["final"]["test_acc"], strict=True))
    common = sorted(set(b) & set(o))
    return [b[s] for s in common], [o[s] for s in common]


def _spec_paired(arms: dict[str, Any], rates: tuple[float, ...]):
    """``paired(arm, cell)`` for :func:`stats.decide_contrasts`; cell ``"pooled"`` joins the
    rates, each (rate, seed) pair keyed ``(rate, seed)``."""

    def get(arm: str, cell: str) -> tuple[list[float], list]:
        keys = [f"{r:g}" for r in rates] if cell == "pooled" else [cell]
        values, seeds = [], []
        for k in keys:
            entry = arms.get(arm, {}).get(k)
            if entry is None or arms.get("standard", {}).get(k) is None:
                continue  # pooled: only rates both sides have
            for seed, v in zip(entry["seeds"], entry["final"]["test_acc"], strict=True):
                values.append(v)
                seeds.append(f"{k}/{seed}")
        return values, seeds

    return get


def _per_rate_and_pooled(summary, preset: Preset, coverage: float, substitute: bool):
    """Each arm against standard: per rate (δ = Table 3's difference there) and pooled over
    the rates (δ = their mean)."""
    comparisons: dict[str, dict] = {}
    pooled: dict[str, dict] = {}
    for arm in preset.arms[1:]:
        comparisons[arm] = {}
        base_all, arm_all = [], []
        for rate in preset.rates:
            key = f"{rate:g}"
            base, other = _paired(summary["arms"], arm, key)
            if len(base) < 2:
                continue
            diff = stats.paired_difference(base, other)
            delta = _delta(rate) if rate in PAPER_TABLE3["standard"] else DELTA
            comparisons[arm][key] = {
                "difference": diff,
                **stats.decide(diff, +1, delta, coverage=coverage, substitute=substitute),
            }
            base_all += base
            arm_all += other
        if len(base_all) >= 2:
            diff = stats.paired_difference(base_all, arm_all)
            pooled[arm] = {
                "difference": diff,
                **stats.decide(diff, +1, DELTA, coverage=coverage, substitute=substitute),
            }
    return comparisons, pooled


def _controls(spec: dict, paired, coverage: float, substitute: bool) -> dict[str, Any]:
    """The null control (a second standard arm) and each positive control, decided alone."""
    null_cells = spec["claims"]["null"]["cells"]
    return {
        "null": null_cells[0] if null_cells else None,
        "positive": [  # only each arm's control is decided (no claims, no contrasts)
            stats.decide_contrasts(
                dataclasses.replace(
                    SPEC,
                    claims={},
                    contrasts=(),
                    control=dataclasses.replace(SPEC.control, other=arm),
                ),
                paired,
                coverage=coverage,
                substitute=substitute,
            )["control"]
            for arm in ("augmented_b0.01", "augmented_b0.1")
        ],
        "passed": spec["control_passed"],
    }


def decide(
    summary: dict[str, Any],
    preset: Preset,
    data_name: str,
    specs_at_start: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-rate and pooled paired differences, decided by :data:`SPEC` (per-rate δ from
    Table 3, pooled δ = their mean); the controls; the verdict under the spec in force when
    the cells ran, when it differs."""
    coverage = min(1.0, preset.train.iterations / PAPER_ITERATIONS)
    substitute = data_name != "mnist"
    comparisons, pooled = _per_rate_and_pooled(summary, preset, coverage, substitute)
    paired = _spec_paired(summary["arms"], preset.rates)
    spec = stats.decide_contrasts(
        SPEC, paired, coverage=coverage, substitute=substitute, control_pairs=GROUP
    )
    # The spec recorded when the grid's first cell trained; a file from before specs were
    # recorded ran under SPEC_AT_290B182 (reconstructed).
    recorded = (specs_at_start or {}).get(NAME)
    start = stats.DecisionSpec.from_json(recorded["spec"]) if recorded else SPEC_AT_290B182
    changed = stats.spec_hash(start) != stats.spec_hash(SPEC)
    before = stats.decide_contrasts(start, paired, coverage=coverage, substitute=substitute)
    controls = _controls(spec, paired, coverage, substitute)
    head = pooled.get("augmented")
    verdict = head["headline"] if head else "not run"
    old = before["claims"]["pooled"]
    if head and changed:  # the spec changed after these cells ran: both verdicts, always
        same = old["headline"] == head["headline"]
        verdict += " (rule changed after data; " + (
            "the same under the rule at the start)"
            if same
            else f"under the rule at the start: {old['headline']})"
        )
    return {
        "comparisons": comparisons,
        "pooled": pooled,
        "coverage": coverage,
        "controls": controls,
        "spec": {
            "hash": stats.spec_hash(SPEC),
            "at_start": stats.spec_hash(start),
            "at_start_recorded": recorded is not None,
            "rule": SPEC.rule,
        },
        "at_start": {"rule": start.rule, "claims": before["claims"]},
        "verdict": verdict,
        "evidence": stats.evidence(head, coverage=coverage, substitute=substitute, delta=DELTA),
    }


def _specs(ctx: RunContext) -> dict[str, Any] | None:
    """The spec to record before the first cell, for a new grid only: a results file whose
    cells ran before specs were recorded keeps no record (they ran under
    :data:`SPEC_AT_290B182`)."""
    path = ctx.results_file
    if path.exists() and json.loads(path.read_text()).get("grid", {}).get("cells"):
        return None
    return {NAME: SPEC.to_json()}


def _results(
    preset, data: dict, records, seeds, total: int, specs_at_start: dict | None = None
) -> dict[str, Any]:
    summary = summarise(records, preset)
    results = {
        "source": SOURCE,
        "claim": "augmented dropout (forward rate p, backward rate 1e-4) has higher test "
        "accuracy than standard dropout at rate p, for p = 0.1 .. 0.5",
        "config": {
            "model": "LeNet (Caffe MNIST), dropout on the input of the last dense layer",
            "rates": list(preset.rates),
            "backward_rate": BACKWARD_RATE,
            "arms": list(preset.arms),
            "replicas": len(seeds),
            "train": dataclasses.asdict(preset.train),
        },
        "data": data,
        "seeds": seeds,
        "cells_done": len(records),
        "cells_total": total,
        "paper": {arm: {f"{r:g}": v for r, v in t.items()} for arm, t in PAPER_TABLE3.items()},
        **summary,
        **decide(summary, preset, data["name"], specs_at_start),
    }
    return results
