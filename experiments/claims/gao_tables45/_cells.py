"""The cells of :mod:`experiments.claims.gao_tables45`: what each measures, and how they are
summarised and decided."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.claims.gao_tables45._protocol import (
    ARMS,
    CLAIM_TEXT,
    GROUP,
    ITERATIONS_NOTE,
    NAME,
    PAPER,
    SOURCE,
    SUBSTITUTES,
    Part,
    Preset,
)
from experiments.harness import data as data_lib
from experiments.harness import recipes, stats
from experiments.harness.augment import PadCropFlip
from experiments.harness.cells import Cell, merge_seed_groups
from experiments.harness.models import DropoutConfig, build_model
from experiments.harness.train import ArrayData, train_cell


def paper_delta(table: str, dataset: str, rates) -> float:
    """The paper's augmented - standard for ``dataset`` averaged over ``rates`` (>= 1e-4).

    Examples:
      >>> from experiments.claims.gao_tables45 import paper_delta
      >>> round(paper_delta("table4", "cifar10", [0.3]), 4)
      0.0083
    """
    entry = PAPER[table].get(dataset)
    if entry is None:  # a smoke stand-in: the table's smallest positive difference
        entries = [e for k, e in PAPER[table].items() if k != "title"]
        diffs = [e["augmented"][k] - e["standard"][k] for e in entries for k in e["standard"]]
        return max(min(d for d in diffs if d > 0), 1e-4)
    diffs = [entry["augmented"][f"{r:g}"] - entry["standard"][f"{r:g}"] for r in rates]
    return max(float(np.mean(diffs)), 1e-4)


# ------------------------------------------------------------------------------- data
def synthetic_data(seed: int = 0, train_size: int = 1440, test_size: int = 360) -> ArrayData:
    """Tiny images: 10 class templates (uniform pixels) plus Gaussian noise, 8x8x1.

    Scaled by 1/255 and mean-subtracted like the ResNet inputs; 360 test images like the
    other Gao smoke runs (scikit-learn's digits), so a test session compiles the shared
    evaluation programs once.
    """
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, size=(10, 8, 8, 1))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (np.arange(n) % 10).astype(np.int32)
        x = np.clip(templates[y] + rng.normal(0, 80, size=(n, 8, 8, 1)), 0, 255)
        return (x / 255).astype(np.float32), y

    x_train, y_train = draw(train_size)
    x_test, y_test = draw(test_size)
    mean = x_train.mean(axis=(0, 1, 2)).astype(np.float32)
    return ArrayData(
        x_train - mean,
        y_train,
        x_test - mean,
        y_test,
        "synthetic",
        "generated (numpy, seed 0)",
        "10 class templates + N(0, 80) pixel noise, clipped, / 255, minus the channel mean",
    )


def resolve(part: Part, cache: dict[str, str | None]) -> tuple[str | None, str | None]:
    """``(dataset to load, reason it cannot run)``: the paper's dataset when it loads, else
    its substitute (:data:`SUBSTITUTES`), else None with the reason. ``cache`` memoises
    the load checks (dataset -> error text or None)."""

    def error(name: str) -> str | None:
        if name == "synthetic":
            return None
        if name not in cache:
            try:
                data_lib.load(name)
                cache[name] = None
            except data_lib.DatasetNotFoundError as err:
                cache[name] = f"{name}: {err}"
        return cache[name]

    substitute = SUBSTITUTES.get(part.dataset)
    name = part.dataset if error(part.dataset) is None else None
    if name is None and substitute is not None and error(substitute) is None:
        name = substitute
    if name is not None and part.needs_accelerator and jax.default_backend() == "cpu":
        return None, (
            f"{part.key}: ResNet-20 for {part.train.iterations} iterations x "
            f"{2 * len(part.rates)} arm-rates x 4 replicas needs an accelerator (about 1.8 s "
            "per step of 4 replicas on one CPU core); this machine has only a CPU backend. "
            "Run this preset on a GPU/TPU host."
        )
    if name is not None:
        return name, None
    why = error(part.dataset)
    if substitute is not None:
        why += f"\n(and its substitute {error(substitute)})"
    else:
        why += "\n(no substitute dataset is defined for it)"
    return None, why


def _num_classes(dataset: str) -> int:
    return 100 if dataset == "cifar100" else 10


def _load(part: Part, name: str) -> ArrayData:
    if name == "synthetic":
        return synthetic_data()
    return recipes.convnet_images(name, part.model, part.test_subset)


# ------------------------------------------------------------------------------- measure
def cells(part: Part, seeds: list[int]) -> list[Cell]:
    """(seed group, rate, arm) cells of one part, standard before augmented."""
    out = []
    for i in range(0, len(seeds), GROUP):
        group = seeds[i : i + GROUP]
        for rate in part.rates:
            for arm in ARMS:
                tag = f"{arm}@{rate:g}/seeds={group[0]}-{group[-1]}"
                params = {"part": part.key, "arm": arm, "rate": rate, "seeds": group}
                out.append(Cell(f"{part.table}/{part.dataset}/{tag}", params))
    return out


def measure(part: Part, data: ArrayData, quiet: bool):
    """``measure(cell, checkpoint_dir, budget)``: trains one cell's replicas."""

    def run_cell(cell: Cell, checkpoint_dir: Path, budget) -> dict[str, Any]:
        p = cell.params
        q = part.backward_rate if p["arm"] == "augmented" else 0.0
        model = build_model(
            part.model, DropoutConfig(p["arm"], p["rate"], q), _num_classes(part.dataset)
        )
        augment = PadCropFlip() if part.augment else None
        label = f"{part.key} {p['arm']} {p['rate']:g}"
        args = (model, data, part.train, cell, checkpoint_dir, budget)
        result = train_cell(*args, quiet=quiet, label=label, augment=augment)
        return result.to_json() | {"data": data.describe()}

    return run_cell


# ------------------------------------------------------------------------------- summarise
def summarise(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per arm and rate of one part: merged runs, per-seed finals and mean ± std."""
    groups = collections.defaultdict(list)
    for record in records.values():
        p = record["params"]
        groups[(p["arm"], f"{p['rate']:g}")].append({**record["result"], "seeds": p["seeds"]})
    runs: dict[str, Any] = {arm: {} for arm in ARMS}
    finals: dict[str, Any] = {arm: {} for arm in ARMS}
    summary: dict[str, Any] = {arm: {} for arm in ARMS}
    for (arm, rate), recs in sorted(groups.items()):
        run = merge_seed_groups(recs)
        runs[arm][rate] = run
        finals[arm][rate] = dict(zip(run["seeds"], run["final"]["test_acc"], strict=True))
        summary[arm][rate] = stats.mean_std(run["final"]["test_acc"])
    return {"runs": runs, "finals": finals, "summary": summary}


# ------------------------------------------------------------------------------- decide
def decide(
    part: Part, finals: dict[str, Any], *, coverage: float, substitute: bool
) -> dict[str, Any]:
    """Per-rate and pooled ``augmented - standard`` decided against the paper's δ.

    ``finals[arm][rate_key]`` maps seed -> final test accuracy; only seeds both arms have
    are paired, and a rate with fewer than two pairs is left out.
    """
    comparisons, base_all, aug_all, rates = {}, [], [], []
    for rate in part.rates:
        k = f"{rate:g}"
        b, a = finals["standard"].get(k, {}), finals["augmented"].get(k, {})
        common = sorted(set(b) & set(a))
        if len(common) < 2:
            continue
        base, aug = [b[s] for s in common], [a[s] for s in common]
        diff = stats.paired_difference(base, aug)
        delta = paper_delta(part.table, part.dataset, [rate])
        comparisons[k] = {
            "difference": diff,
            **stats.decide(diff, +1, delta, coverage=coverage, substitute=substitute),
        }
        base_all += base
        aug_all += aug
        rates.append(rate)
    if len(base_all) < 2:
        return {"comparisons": comparisons, "pooled": None, "verdict": "not tested"}
    diff = stats.paired_difference(base_all, aug_all)
    delta = paper_delta(part.table, part.dataset, rates)
    pooled = {
        "difference": diff,
        **stats.decide(diff, +1, delta, coverage=coverage, substitute=substitute),
    }
    return {"comparisons": comparisons, "pooled": pooled, "verdict": pooled["verdict"]}


def _part_results(part: Part, data: dict[str, Any], records, total: int) -> dict[str, Any]:
    substitute = data["name"] not in PAPER[part.table]  # a substitute or a smoke stand-in
    measured = summarise(records)
    decision = decide(part, measured["finals"], coverage=part.coverage, substitute=substitute)
    shape = data.get("input_shape") or [0, 0]
    return {
        "status": "run",
        "table": part.table,
        "dataset": part.dataset,
        "data_used": data["name"],
        "substitute": substitute,
        "model": part.model,
        "rates": list(part.rates),
        "backward_rate": part.backward_rate,
        "train": dataclasses.asdict(part.train),
        "coverage": part.coverage,
        "cells_done": len(records),
        "cells_total": total,
        "augmentation_applied": PadCropFlip().text(tuple(shape[:2])) if part.augment else "none",
        "data": data,
        "summary": measured["summary"],
        **decision,
        "runs": measured["runs"],
    }


def _results(parts: dict[str, Any], seeds: list[int], config: dict[str, Any]) -> dict[str, Any]:
    """The whole results dict: the datasets' pooled decisions combined, and the evidence."""
    ran = [p for p in parts.values() if p["status"] == "run" and p["pooled"] is not None]
    pooled = [p["pooled"] for p in ran]
    combined = stats.combine_decisions(pooled)
    used = lambda p: p["dataset"] if p["data_used"] == p["dataset"] else f"{p['data_used']} for"
    substitutes = sorted({f"{used(p)} {p['dataset']}" for p in ran if p["substitute"]})
    weakest = min(ran, key=lambda p: _nan_low(p["pooled"]["power"]), default=None)
    coverage = min((p["coverage"] for p in ran), default=0.0)
    note = None
    if substitutes:
        note = (
            f"SUBSTITUTE DATA: {', '.join(substitutes)} (the paper's datasets are not "
            "available here); only the direction and size of the differences compare with the "
            "paper's."
        )
    return {
        "source": SOURCE,
        "claim": CLAIM_TEXT + (f". {note}" if note else ""),
        "substitute": note,
        "config": config,
        "seeds": seeds,
        "paper": PAPER,
        "iterations_note": ITERATIONS_NOTE,
        "cells": parts,
        "verdict": combined["headline"],
        "verdict_rule": combined["verdict"],
        "not_run_cells": [k for k, p in parts.items() if p["status"] != "run"],
        "evidence": stats.evidence(
            weakest["pooled"] if weakest else None,
            coverage=coverage,
            substitute=bool(substitutes),
            delta=weakest["pooled"]["delta"] if weakest else None,
        ),
    }


def _nan_low(x: float) -> float:
    return -1.0 if x != x else x


# ------------------------------------------------------------------------------- run
def _select(preset: Preset, dataset: str | None) -> tuple[Part, ...]:
    if not dataset:
        return preset.parts
    parts = tuple(p for p in preset.parts if dataset in (p.dataset, SUBSTITUTES.get(p.dataset)))
    if not parts:
        raise ValueError(
            f"{NAME} has no part for dataset {dataset!r}; choose one of "
            f"{sorted({p.dataset for p in preset.parts})} (or a substitute: {SUBSTITUTES})"
        )
    return parts


def _not_run(part: Part, reason: str) -> dict[str, Any]:
    return {"status": "not run", "table": part.table, "dataset": part.dataset, "reason": reason}
