"""Command line for the experiment registry.

``python -m experiments list`` prints one experiment a line, its name first, then a short
description; ``python -m experiments report`` renders ``experiments/REPORT.md`` from the
results files. ``python -m experiments NAME --preset {smoke,quick,paper}`` runs one through
:func:`experiments.registry.execute`, which writes ``<out>/<name>/<preset>.json``, and prints
the experiment's markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.registry import DEFAULT_OUT, PRESETS, RunContext, execute, experiments


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Run a registered dropout experiment, or `list` them.",
    )
    parser.add_argument(
        "name", help="an experiment name, `list`, or `report` (renders experiments/REPORT.md)"
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="smoke",
        help="smoke: seconds, no download (CI); quick: minutes on a CPU; paper: the "
        "paper's protocol (default: smoke)",
    )
    parser.add_argument("--dataset", help="override the preset's dataset")
    parser.add_argument("--replicas", type=int, help="override the preset's replica count")
    parser.add_argument("--seed", type=int, default=0, help="base seed; replica r uses seed + r")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (default when CI is set)"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host TPU/GPU)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.distributed:
        import jax

        jax.distributed.initialize()
    table = experiments()
    if args.name == "list":
        width = max((len(name) for name in table), default=0)
        for name, exp in table.items():
            print(f"{name:<{width}}  {exp.description}")
        return 0
    if args.name == "report":
        from experiments.report import write_report

        print(f"wrote {write_report(Path(args.out))}")
        return 0
    if args.name not in table:
        parser.error(f"unknown experiment {args.name!r}; `python -m experiments list` lists them")
    if args.replicas is not None and args.replicas < 1:
        parser.error("--replicas must be at least 1")
    ctx = RunContext(
        name=args.name,
        preset=args.preset,
        out_dir=Path(args.out) / args.name,
        dataset=args.dataset,
        replicas=args.replicas,
        quiet=args.quiet or bool(os.environ.get("CI")),
        seed=args.seed,
    )
    payload, path = execute(args.name, ctx)
    render = table[args.name].render
    if render is not None:
        print(render(payload["results"]))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
