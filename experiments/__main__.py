"""Command line for the experiments.

``python -m experiments list`` prints one experiment a line, its name first, then a short
description (from the catalog: no experiment is imported, so it takes well under a second);
``python -m experiments report`` renders ``experiments/REPORT.md`` from the results files.
``python -m experiments NAME --preset {smoke,quick,paper}`` runs one through
:func:`experiments.harness.claim.execute`, which writes ``<out>/<name>/<preset>.json``,
and prints the claim's markdown table.

A bad value on the command line, or a results file that is not valid JSON, is one line on
stderr, ``python -m experiments: error: ...``, and exit status 2, before anything runs or
any file is written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from experiments.catalog import DESCRIPTIONS, NAMES, SCALED, claim
from experiments.harness.budget import BudgetExhausted
from experiments.harness.claim import execute
from experiments.harness.host_devices import configure as configure_host_devices
from experiments.harness.results import (
    DEFAULT_OUT,
    PRESETS,
    PUBLISHED,
    ResultsFileError,
    RunContext,
    read_results,
)

EXIT_INCOMPLETE = 75
"""Exit status of a run stopped by ``--time-budget`` (resumable; BSD's EX_TEMPFAIL)."""


MAX_SEED = 2**31 - 1
"""The largest ``--seed``: replica r trains with seed + r as a uint32, so this leaves room."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``prog: error: message``, exit status 2): the
    usage, several lines here, is ``--help``'s job."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def _index(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {value}")
    return value


def _seed(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be from 0 to 2**31 - 1 (replica r uses seed + r as a uint32); got {value}"
        )
    return value


def _minutes(text: str) -> float:
    value = _number(text, float)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes; got {text}")
    return value


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a regular expression ({err}): {text!r}") from err
    return text


def _dataset(text: str) -> str:
    from experiments.harness import data

    try:
        data.cache_path(text)  # resolves the name as data.load does; unknown names raise
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        help="smoke: seconds, no download (CI); quick: minutes on a CPU; scaled: a declared "
        "scaled-down protocol that converges on a CPU (claims whose paper protocol cannot run "
        "here); paper: the paper's protocol (default: smoke)",
    )
    parser.add_argument("--dataset", type=_dataset, help="override the preset's dataset")
    parser.add_argument(
        "--replicas", type=_positive_int, help="override the preset's replica count"
    )
    parser.add_argument(
        "--seed", type=_seed, default=0, help="base seed (0 or more); replica r uses seed + r"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"results folder (default {DEFAULT_OUT}/, git-ignored; `report` reads "
        f"{PUBLISHED} by default; publish a run with --out experiments/results)",
    )
    _add_grid_options(parser)
    _add_distributed_options(parser)
    _add_data_options(parser)
    return parser


def _add_grid_options(parser: argparse.ArgumentParser) -> None:
    """Grid experiments: which cells, forgetting cells, the time budget, progress."""
    parser.add_argument(
        "--cells",
        type=_regex,
        metavar="REGEX",
        help="grid experiments: run only the cells whose id matches (e.g. one process per "
        "core on disjoint patterns, same --out: finished cells are merged under a lock)",
    )
    parser.add_argument(
        "--forget",
        type=_regex,
        metavar="REGEX",
        help="grid experiments: remove the finished cells whose id matches from the results "
        "file and exit, so that the next run trains them again (e.g. after a fix)",
    )
    parser.add_argument(
        "--time-budget",
        type=_minutes,
        metavar="MINUTES",
        help="stop cleanly at a checkpoint before this many minutes have passed; rerunning "
        "the same command resumes (grid experiments write every finished cell at once)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars (default when CI is set)"
    )
    parser.add_argument(
        "--devices",
        type=_positive_int,
        metavar="N",
        help="CPU: N host devices, one XLA thread each (default: one per core this process "
        "may use, so `taskset` limits it; a count already in XLA_FLAGS is kept)",
    )
    parser.add_argument(
        "--split",
        choices=("replicas", "batch"),
        help="how the devices share a run: replicas (default: whole replicas per device, "
        "numbers identical to one device) or batch (every batch split over all devices; "
        "the sums reorder, so numbers vary with the device count)",
    )


def _add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """Multi-host runs: one process per host."""
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
        "--num-processes",
        type=_positive_int,
        help="with --distributed: how many processes in all",
    )
    parser.add_argument(
        "--process-id", type=_index, help="with --distributed: this process's index, from 0"
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where the data come from, and TensorBoard curves."""
    parser.add_argument(
        "--data-source",
        choices=("auto", "tfds"),
        default="auto",
        help="auto: cache, then the offline sources (experiments/harness/data/); tfds: read a "
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


def _data_and_curves(args: argparse.Namespace, name: str) -> contextlib.ExitStack:
    """The ``--data-source``/``--data-dir`` and ``--tensorboard`` settings for one run."""
    from experiments.harness import data, tensorboard

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


def _check_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks that need more than one flag, or the name (one-line errors, exit 2)."""
    manual = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and any(v is not None for v in manual):
        parser.error("--coordinator, --num-processes and --process-id need --distributed")
    if args.num_processes is not None and args.process_id is not None:
        if args.process_id >= args.num_processes:
            parser.error(
                f"--process-id must be below --num-processes ({args.num_processes}); "
                f"got {args.process_id}"
            )
    if args.name not in ("list", "report", *NAMES):
        parser.error(f"unknown experiment {args.name!r}; `python -m experiments list` lists them")
    if args.preset == "scaled" and args.name not in ("list", "report", *SCALED):
        parser.error(
            f"{args.name} has no scaled preset (its paper protocol fits, or none is declared "
            f"yet); the experiments with one: {', '.join(SCALED)}"
        )
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder (created if missing)")
    if args.data_dir is not None and args.data_source == "tfds" and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder (--data-source tfds reads one)")


def _fail(message: str) -> NoReturn:
    """A one-line error in argparse's form, exit status 2."""
    print(f"python -m experiments: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_results_files(paths: Sequence[Path]) -> None:
    """Each existing results file must read as one; the files are left untouched."""
    for path in paths:
        if path.is_file():
            try:
                read_results(path)
            except ResultsFileError as err:
                _fail(str(err))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _check_values(parser, args)
    if args.name == "list":
        width = max(len(name) for name in NAMES)
        for name in sorted(NAMES):
            print(f"{name:<{width}}  {DESCRIPTIONS[name]}")
        return 0
    if args.name == "report":
        from experiments.report import write_report

        out = Path(args.out or PUBLISHED)
        _check_results_files(sorted(out.glob("*/*.json")))
        print(f"wrote {write_report(out)}")
        return 0
    try:  # before anything starts JAX: the flags are read once
        devices = configure_host_devices(args.devices)
    except ValueError as err:
        parser.error(str(err))
    if args.split is not None:
        os.environ["EXPERIMENTS_SPLIT"] = args.split
    if args.distributed:
        _initialize_distributed(args.coordinator, args.num_processes, args.process_id)
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
    _check_results_files([ctx.results_file])
    if not (ctx.quiet or args.forget is not None):
        print(f"[{args.name}] {devices}", file=sys.stderr)
    if args.forget is not None:
        from experiments.harness.cells import forget_cells

        try:
            gone = forget_cells(ctx.results_file, args.forget)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        print(f"removed {len(gone)} cells from {ctx.results_file}: {', '.join(gone) or '-'}")
        return 0
    try:
        with _data_and_curves(args, args.name):
            payload, path = execute(claim(args.name), ctx)
    except BudgetExhausted as stop:
        print(
            f"{stop}. Finished cells are in {ctx.results_file}{_on_host0()}; rerun the same "
            "command to resume.",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    except ResultsFileError as err:  # a results file that went bad while this run waited
        _fail(str(err))
    except json.JSONDecodeError:
        _check_results_files([ctx.results_file])  # names the file when it is the culprit
        raise
    print(claim(args.name).render(payload["results"]))
    print(f"\nresults: {path}{_on_host0()}")
    return 0


def _on_host0() -> str:
    """Where the results file is, said on the processes of a multi-host run that write none."""
    import jax

    index = jax.process_index()
    return "" if index == 0 else f" on process 0's host (this is process {index}; it writes none)"


if __name__ == "__main__":
    sys.exit(main())
