"""Command line for the experiment registry.

``python -m experiments list`` prints one experiment a line, its name first, then a short
description; ``python -m experiments report`` renders ``experiments/REPORT.md`` from the
results files. ``python -m experiments NAME --preset {smoke,quick,paper}`` runs one through
:func:`experiments.registry.execute`, which writes ``<out>/<name>/<preset>.json``, and prints
the experiment's markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.catalog import experiments
from experiments.cells import BudgetExhausted
from experiments.registry import DEFAULT_OUT, PRESETS, PUBLISHED, RunContext, execute

EXIT_INCOMPLETE = 75
"""Exit status of a run stopped by ``--time-budget`` (resumable; BSD's EX_TEMPFAIL)."""


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
        "--out",
        type=Path,
        default=None,
        help=f"results folder (default {DEFAULT_OUT}/, git-ignored; `report` reads "
        f"{PUBLISHED} by default; publish a run with --out experiments/results)",
    )
    parser.add_argument(
        "--cells",
        metavar="REGEX",
        help="grid experiments: run only the cells whose id matches (e.g. one process per "
        "core on disjoint patterns, same --out: finished cells are merged under a lock)",
    )
    parser.add_argument(
        "--forget",
        metavar="REGEX",
        help="grid experiments: remove the finished cells whose id matches from the results "
        "file and exit, so that the next run trains them again (e.g. after a fix)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="stop cleanly at a checkpoint before this many minutes have passed; rerunning "
        "the same command resumes (grid experiments write every finished cell at once)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (default when CI is set)"
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host: one process per host; "
        "TPU pods, SLURM and Open MPI are detected, else give the three options below)",
    )
    parser.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="with --distributed: the address of process 0's coordinator service",
    )
    parser.add_argument(
        "--num-processes", type=int, help="with --distributed: how many processes in all"
    )
    parser.add_argument(
        "--process-id", type=int, help="with --distributed: this process's index, from 0"
    )
    parser.add_argument(
        "--data-source",
        choices=("auto", "tfds"),
        default="auto",
        help="auto: cache, then the offline sources (experiments/data.py); tfds: read a "
        "tensorflow-datasets folder prepared in ArrayRecord format, without TensorFlow",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the data source's folder: the tfds data_dir for --data-source tfds, else the "
        "dataset cache (default $DROPJAX_DATA or ~/.cache/dropjax)",
    )
    parser.add_argument(
        "--tensorboard",
        type=Path,
        metavar="DIR",
        help="also write the training curves to TensorBoard under DIR/<name>/<preset>/ "
        "(needs tensorboardX)",
    )
    return parser


def _data_and_curves(args: argparse.Namespace, name: str) -> contextlib.ExitStack:
    """The ``--data-source``/``--data-dir`` and ``--tensorboard`` settings for one run."""
    from experiments import data, tensorboard

    logdir = None if args.tensorboard is None else args.tensorboard / name / args.preset
    with contextlib.ExitStack() as stack:
        stack.enter_context(data.data_source(args.data_source, args.data_dir))
        stack.enter_context(tensorboard.writing(logdir))
        return stack.pop_all()


def _initialize_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """``jax.distributed.initialize`` with CPU collectives over gloo.

    Without arguments JAX detects the cluster (TPU pod, SLURM, Open MPI). On CPU (a local
    multi-process run) the cross-process collectives go through gloo: the default of recent
    jax releases, set here for older ones, where the option was unset.
    """
    import jax

    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    manual = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and any(v is not None for v in manual):
        parser.error("--coordinator, --num-processes and --process-id need --distributed")
    if args.distributed:
        _initialize_distributed(*manual)
    table = experiments()
    if args.name == "list":
        width = max((len(name) for name in table), default=0)
        for name, exp in table.items():
            print(f"{name:<{width}}  {exp.description}")
        return 0
    if args.name == "report":
        from experiments.report import write_report

        print(f"wrote {write_report(Path(args.out or PUBLISHED))}")
        return 0
    if args.name not in table:
        parser.error(f"unknown experiment {args.name!r}; `python -m experiments list` lists them")
    if args.replicas is not None and args.replicas < 1:
        parser.error("--replicas must be at least 1")
    ctx = RunContext(
        name=args.name,
        preset=args.preset,
        out_dir=Path(args.out or DEFAULT_OUT) / args.name,
        dataset=args.dataset,
        replicas=args.replicas,
        quiet=args.quiet or bool(os.environ.get("CI")),
        seed=args.seed,
        time_budget=args.time_budget,
        cells=args.cells,
    )
    if args.forget is not None:
        from experiments.cells import forget_cells

        try:
            gone = forget_cells(ctx.results_file, args.forget)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        print(f"removed {len(gone)} cells from {ctx.results_file}: {', '.join(gone) or '-'}")
        return 0
    try:
        with _data_and_curves(args, args.name):
            payload, path = execute(args.name, ctx)
    except BudgetExhausted as stop:
        print(
            f"{stop}. Finished cells are in {ctx.results_file}{_on_host0()}; rerun the same "
            "command to resume.",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    render = table[args.name].render
    if render is not None:
        print(render(payload["results"]))
    print(f"\nresults: {path}{_on_host0()}")
    return 0


def _on_host0() -> str:
    """Where the results file is, said on the processes of a multi-host run that write none."""
    import jax

    index = jax.process_index()
    return "" if index == 0 else f" on process 0's host (this is process {index}; it writes none)"


if __name__ == "__main__":
    sys.exit(main())
