"""The cells of :mod:`experiments.claims.gao_ablation`: what each measures, and how they are
summarised and decided."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from experiments.claims.gao_ablation._drift import drift
from experiments.claims.gao_ablation._protocol import (
    ALL_RATES,
    ARMS,
    CLAIM_TEXT,
    DROPOUT_ARMS,
    GROUP,
    LARGE_RATES,
    OVERFIT_KEYS,
    PAPER,
    PAPER_ITERATIONS,
    SMALL_RATE,
    SOURCE,
    SPEC,
    SPEC_AT_CB17A82,
    SPEC_SUBSET,
    TABLE_CELLS,
    Part,
    Preset,
)
from experiments.harness import data as data_lib
from experiments.harness import stats
from experiments.harness.augment import PadCropFlip
from experiments.harness.cells import Cell, merge_seed_groups
from experiments.harness.models import DropoutConfig, build_model
from experiments.harness.stats import fmt_diff
from experiments.harness.train import ArrayData, train_cell


# ------------------------------------------------------------------------------- data
def resolve_dataset(
    requested: str | None, preset: Preset
) -> tuple[str | None, str | None, str | None]:
    """Which dataset to use: ``(name, substitute_note, missing_reason)``.

    An explicit ``requested`` dataset is used as is. Otherwise the preset's dataset when it
    loads, else its substitute (with a note saying so), else ``missing_reason`` says why.
    """
    if requested:
        return requested, None, None
    try:
        data_lib.load(preset.dataset)
        return preset.dataset, None, None
    except data_lib.DatasetNotFoundError as err:
        if preset.substitute is None:
            return None, None, str(err)
        note = (
            f"SUBSTITUTE DATASET: {preset.dataset} is not available here, so this run uses "
            f"{preset.substitute} instead; its numbers are not comparable with the paper's "
            f"{preset.dataset} figures, only the direction of the differences is."
        )
        return preset.substitute, note, None


def _dropout(arm: str, rate: float) -> DropoutConfig:
    return DropoutConfig("none") if arm == "plain" else DropoutConfig(arm, rate)


def spec_for(part: Part) -> stats.DecisionSpec:
    if part.seeds:  # a regime on its own fresh seeds plans its own number of pairs
        return dataclasses.replace(SPEC_SUBSET, pairs=len(part.seeds))
    return SPEC_SUBSET if part.train_subset else SPEC


def _paired(finals: dict[str, Any]):
    def get(arm: str, rate: str) -> tuple[list[float], list[int]]:
        entry = finals["plain"] if arm == "plain" else finals.get(arm, {}).get(rate)
        entry = dict(entry or {})
        seeds = sorted(entry)
        return [entry[x] for x in seeds], seeds

    return get


def evaluate_claims(
    finals: dict[str, Any],
    spec: stats.DecisionSpec = SPEC,
    *,
    coverage: float = 1.0,
    substitute: bool = False,
) -> dict[str, Any]:
    """Every stated contrast decided against the paper's effect (:func:`stats.decide_contrasts`).

    ``finals["plain"]`` maps seed -> final test accuracy; ``finals[arm][rate_key]`` likewise.
    Only seeds both sides of a comparison have are paired; a comparison with fewer than two
    pairs is left out (not tested yet).
    """
    return stats.decide_contrasts(spec, _paired(finals), coverage=coverage, substitute=substitute)


def overall(decided: dict[str, Any], spec: stats.DecisionSpec = SPEC) -> str:
    """One headline over the headline sub-claims (as :func:`stats.combine_decisions`);
    a failed positive control decides nothing."""
    if decided.get("control_passed") is False:
        return "not decided: positive control failed"
    claims = {k: decided["claims"][k] for k in (spec.headline or decided["claims"])}
    tested = [c for c in claims.values() if c["verdict"] != "not tested"]
    if not tested:
        return "not tested"
    cells = [
        {"verdict": c["verdict"], "coverage": c["coverage"], "substitute": c["substitute"]}
        for claim in tested
        for c in claim["cells"]
    ]
    verdicts = [c["verdict"] for c in tested]
    if len(set(verdicts)) > 1:  # sub-claims disagree: say so rather than average them
        heads = ", ".join(f"({k}) {c['headline']}" for k, c in claims.items())
        return f"mixed: {heads}"
    return stats.combine_decisions(cells)["headline"]


# ------------------------------------------------------------------------------- figures
def _ran(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(k, p) for k, p in results["parts"].items() if p.get("status") != "not run"]


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.2f}"


def _decision_rows(claims: dict[str, Any], holm: bool) -> list[str]:
    rows = [
        "| claim | comparison | paired difference [95% CI] | Holm [95%] | n | δ (paper) "
        "| P(reproduce \\| δ) | P(refute \\| 0) | P(refute \\| δ) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, claim in claims.items():
        cells = claim["cells"]
        adjusted = stats.holm([c["difference"] for c in cells]) if holm and cells else []
        for i, cell in enumerate(cells):
            h = f"[{adjusted[i][0]:+.4f}, {adjusted[i][1]:+.4f}]" if adjusted else "–"
            rows.append(
                f"| ({key}) | {cell['comparison']} | {fmt_diff(cell['difference'])} | {h} "
                f"| {cell['difference']['n']} | {cell['delta']:.4f} "
                f"| {_pct(cell.get('p_reproduce_delta', cell.get('power')))} "
                f"| {_pct(cell.get('p_refute_zero'))} | {_pct(cell.get('p_refute_delta'))} "
                f"| {stats.shown(cell)} |"
            )
    return rows


def plan(preset: Preset, name: str, substitute: bool) -> list[Part]:
    """The parts to train: on a substitute dataset, the sub-claims' rates, then the
    substitute-only parts."""
    parts = []
    for part in preset.parts:
        if substitute and preset.substitute_rates is not None:
            part = dataclasses.replace(part, rates=preset.substitute_rates)
        parts.append(part)
    return parts + list(preset.substitute_parts if substitute else ())


def _cell(part: Part, group: list[int], arm: str, rate: float | None) -> Cell:
    name = "plain" if rate is None else f"{arm}@{rate:g}"
    tag = f"seeds={group[0]}-{group[-1]}"
    return Cell(f"{part.id}/{name}/{tag}", {"arm": arm, "rate": rate, "seeds": group})


def stages(part: Part, seeds: list[int]) -> list[list[Cell]]:
    """The part's cells in the order they run, in stages (over ``part.seeds`` when the part
    has its own, else ``seeds``).

    A part with a positive control (the over-fitting substitute) runs the control's cells
    first (plain and standard at its rate, every seed group), then the sub-claims' rates,
    then the rest. Otherwise: for every seed group, plain and the first two rates' three
    dropout arms (the rates the sub-claims name), then the other rates. Cells of two seeds
    finish in well under an hour on one CPU core.
    """
    seeds = list(part.seeds) or seeds
    groups = [seeds[i : i + GROUP] for i in range(0, len(seeds), GROUP)]
    control = spec_for(part).control
    if control is None:
        first = [("plain", None)] + [(a, r) for r in part.rates[:2] for a in DROPOUT_ARMS]
        later = [(a, r) for r in part.rates[2:] for a in DROPOUT_ARMS]
        plan_ = [first, later]
    else:
        rate = float(control.cell)
        head = [("plain", None), ("standard", rate)]
        named = [r for r in part.rates if r in (*LARGE_RATES, SMALL_RATE, rate)]
        rest = [(a, r) for r in named for a in DROPOUT_ARMS if (a, r) not in head]
        others = [(a, r) for r in part.rates if r not in named for a in DROPOUT_ARMS]
        plan_ = [head, rest, others]
    return [[_cell(part, g, a, r) for g in groups for a, r in stage] for stage in plan_]


def cells(part: Part, seeds: list[int]) -> list[Cell]:
    """Every cell of the part, in the order they run (:func:`stages`)."""
    return [c for stage in stages(part, seeds) for c in stage]


def measure(part: Part, data: ArrayData, quiet: bool):
    """``measure(cell, checkpoint_dir, budget)``: trains one cell's replicas."""

    def run_cell(cell: Cell, checkpoint_dir: Path, budget) -> dict[str, Any]:
        p = cell.params
        arm = "plain" if p["rate"] is None else f"{p['arm']} {p['rate']:g}"
        model = build_model(part.model, _dropout(p["arm"], p["rate"] or 0.0))
        augment = PadCropFlip() if part.augmentation else None
        label = f"{part.model} {arm}"
        args = (model, data, part.train, cell, checkpoint_dir, budget)
        result = train_cell(*args, quiet=quiet, label=label, augment=augment)
        return result.to_json() | {"data": data.describe()}

    return run_cell


def summarise(part: Part, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Runs, per-arm mean ± std and per-seed finals of one part, from its finished cells."""
    groups: dict[tuple[str, str | None], list] = {}
    for record in records.values():
        p = record["params"]
        rate = None if p["rate"] is None else f"{p['rate']:g}"
        groups.setdefault((p["arm"], rate), []).append({**record["result"], "seeds": p["seeds"]})
    runs: dict[str, Any] = {arm: {} for arm in DROPOUT_ARMS}
    for (arm, rate), recs in groups.items():
        if arm == "plain":
            runs["plain"] = merge_seed_groups(recs)
        else:
            runs[arm][rate] = merge_seed_groups(recs)
    finals: dict[str, Any] = {arm: {} for arm in DROPOUT_ARMS}
    summary: dict[str, Any] = {arm: {} for arm in DROPOUT_ARMS}
    by_seed = lambda run: dict(zip(run["seeds"], run["final"]["test_acc"], strict=True))
    finals["plain"] = by_seed(runs["plain"]) if "plain" in runs else {}
    summary["plain"] = stats.mean_std(list(finals["plain"].values())) if finals["plain"] else None
    for arm in DROPOUT_ARMS:
        for k, run in runs[arm].items():
            finals[arm][k] = by_seed(run)
            summary[arm][k] = stats.mean_std(run["final"]["test_acc"])
    return {"runs": runs, "finals": finals, "summary": summary}


def _spec_at_start(part: Part, specs_at_start: dict[str, Any]) -> tuple[dict, bool]:
    """The spec recorded when the part's first cell started, and whether it was recorded
    then (False: reconstructed from the code its first cells ran at)."""
    if part.id in specs_at_start:
        return specs_at_start[part.id]["spec"], True
    if part.id == "table1" and not part.train_subset:
        return SPEC_AT_CB17A82.to_json(), False
    return spec_for(part).to_json(), True


def _part_results(
    part: Part,
    data: dict,
    records,
    substitute: bool,
    total: int,
    specs_at_start: dict[str, Any] | None = None,
    *,
    run_seeds: list[int],
) -> dict:
    """One part's results; its seeds are its own (``Part.seeds``) or else the run's."""
    iterations = min(1.0, part.train.iterations / PAPER_ITERATIONS[part.table])
    measured = summarise(part, records)
    ran = {"plain"} if measured["finals"].get("plain") else set()
    ran |= {f"{a}@{k}" for a in DROPOUT_ARMS for k in measured["finals"][a]}
    every = ["plain"] + [f"{a}@{r:g}" for r in ALL_RATES for a in DROPOUT_ARMS]
    missing = [c for c in every if c not in ran]
    spec = spec_for(part)
    decided = evaluate_claims(measured["finals"], spec, coverage=iterations, substitute=substitute)
    start_json, recorded = _spec_at_start(part, specs_at_start or {})
    out = {
        "table": part.table,
        "key": part.id,
        "model": part.model,
        "data": data,
        "rates": list(part.rates),
        "train": dataclasses.asdict(part.train),
        "train_subset": part.train_subset,
        "seeds": list(part.seeds) or list(run_seeds),
        "coverage": iterations,
        "coverage_cells": len(ran) / TABLE_CELLS,
        "missing_cells": missing,
        "cells_done": len(records),
        "cells_total": total,
        "augmentation_paper": part.augmentation or "none",
        "augmentation_applied": part.augmentation or "none",
        "summary": measured["summary"],
        "claims": decided["claims"],
        "control": decided["control"],
        "control_passed": decided["control_passed"],
        "spec": {
            "hash": stats.spec_hash(spec),
            "at_start": stats.spec_hash(start_json),
            "at_start_recorded": recorded,
            "rule": spec.rule,
        },
        "runs": measured["runs"],
        "drift": drift(measured["runs"], dataclasses.asdict(part.train), spec),
    }
    if out["spec"]["hash"] != out["spec"]["at_start"]:  # the rule changed after the data
        old = stats.DecisionSpec.from_json(start_json)
        before = evaluate_claims(
            measured["finals"], old, coverage=iterations, substitute=substitute
        )
        out["at_start"] = {
            "rule": old.rule,
            "claims": before["claims"],
            "verdict": overall(before, old),
        }
    return out


def _main_part(parts: dict[str, Any]) -> dict[str, Any]:
    """The part the headline rests on: the first over-fitting regime whose control passed;
    while none has, the latest one whose control is decided (a failure says so), else the
    first part."""
    ran = [parts[k] for k in OVERFIT_KEYS if k in parts and parts[k].get("status") != "not run"]
    passed = [p for p in ran if p.get("control_passed") is True]
    decided = [p for p in ran if p.get("control_passed") is not None]
    if passed or decided:
        return (passed or decided)[0] if passed else decided[-1]
    return next(p for p in parts.values() if p.get("status") != "not run")


def _regimes_note(parts: dict[str, Any]) -> str | None:
    """Which over-fitting regimes ran, each with its positive control's outcome."""
    said = {True: "passed", False: "failed", None: "pending"}
    lines = []
    for key in OVERFIT_KEYS:
        part = parts.get(key)
        if part is None or part.get("status") == "not run":
            continue
        control = part.get("control")
        shown = "" if control is None else f" ({stats.fmt_diff(control['difference'])})"
        lines.append(
            f"`{key}` (first {part['train_subset']} training images): positive control "
            f"**{said[part.get('control_passed')]}**{shown}"
        )
    if not lines:
        return None
    return (
        "Over-fitting regimes, in the order they were declared (each before its own data; "
        "the headline rests on the first whose control passes): " + "; ".join(lines) + "."
    )


def missing_summary(missing: list[str]) -> str:
    """Table cells not run, grouped by the arms missing at each rate.

    Examples:
      >>> missing_summary(["standard@0.3", "forward@0.3", "forward@0.05", "standard@0.2",
      ...                  "forward@0.2"])
      'standard/forward @ 0.3, 0.2; forward @ 0.05'
    """
    by_rate: dict[str, list[str]] = {}
    for cell in missing:
        arm, _, rate = cell.partition("@")
        by_rate.setdefault(rate or "-", []).append(arm)
    groups: dict[str, list[str]] = {}
    for rate, arms in by_rate.items():
        groups.setdefault("/".join(arms), []).append(rate)
    return "; ".join(
        arms if rates == ["-"] else f"{arms} @ {', '.join(rates)}" for arms, rates in groups.items()
    )


def _results(parts: dict[str, Any], seeds, substitute_note, name, preset_parts) -> dict:
    main = _main_part(parts)
    ran = {k: p for k, p in parts.items() if p.get("status") != "not run"}
    heads = SPEC.headline
    head_cells = [c for k in heads for c in main["claims"][k]["cells"]]
    rates = [
        c["p_refute_zero"] for c in head_cells if c.get("p_refute_zero") == c.get("p_refute_zero")
    ]
    power = [c["power"] for c in head_cells if c["power"] == c["power"]]
    spec = spec_for(next(p for p in preset_parts if p.id == main["key"]))
    verdict = overall({"claims": main["claims"], "control_passed": main["control_passed"]}, spec)
    if "at_start" in main:
        before = main["at_start"]["verdict"]
        verdict += f" (rule changed after data; under the rule at the start: {before})"
    return {
        "source": SOURCE,
        "claim": CLAIM_TEXT + (f". {substitute_note}" if substitute_note else f", on {name}"),
        "substitute": substitute_note,
        "config": {
            "arms": list(ARMS),
            "replicas": len(seeds),
            "parts": [p.config() for p in preset_parts],
            "dropout_placement": "ConvNet-Quick: inputs of both fully connected layers "
            "(layer-exact forward/backward forms); ResNet: between the two convolutions of "
            "every block",
        },
        "data": main["data"],
        "seeds": seeds,
        "paper": PAPER,
        "parts": parts,
        "summary": {k: p["summary"] for k, p in ran.items()},
        "comparisons": {k: p["claims"] for k, p in ran.items()},
        "claims": {k: c["headline"] for k, c in main["claims"].items()},
        "main_part": main["key"],
        "spec": {"by": "claim", "parts": {k: p["spec"] for k, p in ran.items() if "spec" in p}},
        "notes": _regimes_note(parts),
        "verdict": verdict,
        "evidence": {
            "coverage": main["coverage"] * main["coverage_cells"],
            "data": "SUBSTITUTE" if substitute_note else "real",
            "power": min(power) if power else None,  # the weakest headline cell's
            "p_reproduce_delta": min(power) if power else None,
            "p_refute_zero": min(rates) if rates else None,
            "delta": None,
            "pairs": min((c["difference"]["n"] for c in head_cells), default=0),
            "missing": f"{len(main['missing_cells'])} of {TABLE_CELLS} Table 1 cells not run: "
            + missing_summary(main["missing_cells"])
            if main["missing_cells"]
            else None,
        },
    }
