"""One prepared command for a borrowed accelerator: every paper preset that fits, in one go.

An accelerator lent for a few minutes (one GPU, fresh and offline each time) should spend
them training, not setting up. This module prepares the data here and runs a fixed plan
there, each experiment under its share of a time budget, writing the usual results files
(cells, environment and device recorded per cell, see :mod:`experiments.harness.cells`)::

    # here, once: compressed copies of the cached datasets the plan needs (about 40 MB)
    python -m experiments.harness.device_batch pack            # -> data/device/*.npz (git-ignored)

    # there (the repository root, data/device carried along):
    python -m experiments.harness.device_batch run --out "$OUT" --budget-minutes 8

    # back here: finished cells merge into the local results file when the same
    # experiment is rerun with --out pointing at the returned folder, or copy them over.

The plan (:data:`PLAN`) is claim 1's full Table 3 grid and claim 2's Table 1 on the
Fashion-MNIST substitute (CIFAR-10 cannot be fetched on an offline machine); ResNet-20's
Table 2 does not fit in minutes and is left out. ``--plan smoke`` runs the smoke presets
instead: the CPU test of the same code path (``tests/test_device_batch.py``). Each
experiment gets ``--time-budget`` of what is left, split evenly over the experiments still
to run, so an unfinished one stops cleanly at a checkpoint with its finished cells saved.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.harness import data as data_lib

__all__ = ["PLAN", "SMOKE_PLAN", "pack", "run_plan"]

# (experiment, preset, --cells regex or None, datasets it reads)
PLAN: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("lenet_mnist", "paper", None, ("mnist",)),
    ("gao_ablation", "paper", "^table1/", ("fashion_mnist",)),
]
SMOKE_PLAN: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("lenet_mnist", "smoke", None, ("digits",)),
    ("gao_ablation", "smoke", None, ("digits",)),
]
PLANS = {"paper": PLAN, "smoke": SMOKE_PLAN}
DEFAULT_DIR = Path("data") / "device"


def pack(names: tuple[str, ...], out_dir: Path) -> list[Path]:
    """Compressed copies of the datasets ``names`` in ``out_dir``, in the cache format.

    Each dataset is loaded the usual way (:func:`experiments.harness.data.load`, from the local
    cache or its offline source), then written as ``<out_dir>/<name>.npz`` with
    ``np.savez_compressed`` (MNIST: 55 MB cached, about 11 MB packed), which the loader
    reads as its cache when ``DROPJAX_DATA`` names ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        data_lib.load(name)  # fills the local cache if needed
        with np.load(data_lib.cache_path(name), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        target = out_dir / f"{name}.npz"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        written.append(target)
    return written


def run_plan(
    plan: list[tuple[str, str, str | None, tuple[str, ...]]],
    out: Path,
    budget_minutes: float,
    data_dir: Path,
) -> list[dict]:
    """Runs each experiment of ``plan`` in a subprocess under its share of the budget.

    Returns one record per experiment: its command, exit code (0 finished, 75 stopped by
    the budget with its finished cells saved) and wall time.
    """
    env = {**os.environ, data_lib.DATA_DIR_ENV: str(data_dir.resolve())}
    env.setdefault("DROPJAX_RUNS", str(Path(tempfile.gettempdir()) / "dropjax-device-runs"))
    deadline = time.monotonic() + 60 * budget_minutes
    records = []
    for i, (name, preset, cells, _) in enumerate(plan):
        share = (deadline - time.monotonic()) / 60 / (len(plan) - i)
        if share < 0.5:
            records.append({"experiment": name, "preset": preset, "skipped": "no time left"})
            continue
        cmd = [sys.executable, "-m", "experiments", name, "--preset", preset]
        cmd += ["--out", str(out), "--time-budget", f"{share:.2f}"]
        if cells:
            cmd += ["--cells", cells]
        start = time.monotonic()
        rc = subprocess.call(cmd, env=env)
        records.append(
            {
                "experiment": name,
                "preset": preset,
                "command": " ".join(cmd[1:]),
                "returncode": rc,
                "wall_s": round(time.monotonic() - start, 1),
            }
        )
        print(f"[device_batch] {records[-1]}", file=sys.stderr, flush=True)
    return records


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.harness.device_batch")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack", help="compress the plan's datasets into --data-dir")
    p.add_argument("--plan", choices=sorted(PLANS), default="paper")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    r = sub.add_parser("run", help="run the plan under a time budget")
    r.add_argument("--plan", choices=sorted(PLANS), default="paper")
    r.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    r.add_argument("--out", type=Path, required=True, help="where the results files go")
    r.add_argument("--budget-minutes", type=float, default=8.0)
    return parser


def options() -> set[str]:
    """Every option string of the command line (both verbs)."""
    parser = _parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {o for p in verbs.choices.values() for a in p._actions for o in a.option_strings}


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc)."""
    parser = _parser()
    args = parser.parse_args(argv)
    plan = PLANS[args.plan]
    if args.verb == "pack":
        names = tuple(dict.fromkeys(n for *_, names in plan for n in names))
        for path in pack(names, args.data_dir):
            print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
        return 0
    missing = [n for *_, names in plan for n in names if not (args.data_dir / f"{n}.npz").is_file()]
    if missing:
        parser.error(
            f"{args.data_dir} lacks {', '.join(sorted(set(missing)))}: run "
            f"`python -m experiments.harness.device_batch pack --plan {args.plan}` here first and "
            f"carry {args.data_dir} along"
        )
    records = run_plan(plan, args.out, args.budget_minutes, args.data_dir)
    return 0 if all(r.get("returncode") in (0, 75) for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
