"""Long runs as grids of cells that survive the end of a session.

A paper-protocol run takes hours on a CPU, and a session (or a preemptible TPU VM) can end at
any moment. So an experiment that trains many (arm, rate, seed-group) combinations runs them
as *cells*:

* each finished cell is written at once, atomically, into the experiment's results file
  (``<out>/<name>/<preset>.json``, ``"status": "partial"`` until the last cell lands), with
  the environment it ran in (device, commit, versions) and its wall time;
* rerunning the same command skips finished cells and resumes the unfinished one from its
  latest Orbax checkpoint;
* checkpoints live outside the work tree, under :func:`runs_dir` (``$DROPJAX_RUNS``, default
  ``~/.cache/dropjax/runs``), so a fresh clone on the same machine resumes, and a finished
  cell's checkpoint is deleted;
* a time budget (``--time-budget MINUTES``) stops cleanly at a checkpoint before it runs out
  (the estimate is the slowest segment seen so far), and a progress line after every cell
  says how many cells are done and the estimated time left.

A results file written with another configuration is never mixed with the new one: the file
records a fingerprint of the grid's configuration and a mismatch is an error that names the
fix (another ``--out``, or delete the file).

To keep a long run on one core of a shared machine, see README ("Long runs"): ``taskset -c
1`` plus ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.harness.budget import AgreedBudget, Budget, BudgetExhausted
from experiments.harness.multihost import from_process0
from experiments.harness.results import RunContext, environment, write_json_atomic

__all__ = [
    "Cell",
    "Grid",
    "grid_for",
    "merge_seed_groups",
    "runs_dir",
]


def runs_dir() -> Path:
    """Where checkpoints of unfinished cells live: ``$DROPJAX_RUNS`` or the user cache.

    Examples:
      >>> import os
      >>> from experiments.harness.cells import runs_dir
      >>> os.environ["DROPJAX_RUNS"] = "/tmp/dropjax-runs-doc"
      >>> str(runs_dir())
      '/tmp/dropjax-runs-doc'
      >>> del os.environ["DROPJAX_RUNS"]
    """
    env = os.environ.get("DROPJAX_RUNS")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dropjax" / "runs"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of a grid: an id (stable across runs) and its JSON-able parameters."""

    id: str
    params: dict[str, Any]

    @property
    def slug(self) -> str:
        """The id as a folder name."""
        return re.sub(r"[^A-Za-z0-9_.=-]+", "_", self.id)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fingerprint(config: Any) -> str:
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Grid:
    """Runs cells one after another, writing each finished one into the results file.

    Args:
      name: the experiment's name.
      preset: the preset.
      results_file: ``<out>/<name>/<preset>.json``.
      config: the grid's configuration (what makes two runs comparable: protocol, data,
        arms); its fingerprint is stored and checked on resume.
      budget: the time budget.
      quiet: no progress lines.
      checkpoint_root: where unfinished cells keep checkpoints (default
        ``runs_dir() / name / preset``).
      write: whether this process writes files (process 0 of a multi-host run).
      only: a regular expression: run only the cells whose id it matches (``--cells``). Several
        processes may run disjoint parts of one grid into the same results file, e.g. one per
        core: each write takes a lock and merges the cells other processes have written.
      extends: configurations this one extends (the same cells, plus new ones): a results
        file written under one of them is taken over, its cells kept, and rewritten under
        this configuration's fingerprint at the next write.
      specs: ``{key: decision spec (JSON-able)}``: each claim's decision rule, recorded in the
        results file (``"specs_at_start"``, with its hash) before the first cell of this run
        trains, unless the file already holds one for that key. Summaries compare it with
        the spec in force then (:func:`experiments.harness.stats.spec_hash`).

    Raises:
      ValueError: the results file holds cells of another configuration.
    """

    def __init__(
        self,
        name: str,
        preset: str,
        results_file: Path,
        config: Any,
        *,
        budget: Budget | None = None,
        quiet: bool = False,
        checkpoint_root: Path | None = None,
        write: bool = True,
        only: str | None = None,
        extends: Sequence[Any] = (),
        specs: dict[str, Any] | None = None,
    ):
        self.name, self.preset = name, preset
        self.results_file = Path(results_file)
        self.fingerprint = _fingerprint(config)
        self._accepted = {self.fingerprint, *(_fingerprint(c) for c in extends)}
        self.specs = dict(specs or {})
        self.specs_at_start: dict[str, Any] = {}
        self.budget = budget or Budget(None)
        self.quiet = quiet
        self.write = write
        self.checkpoint_root = Path(checkpoint_root or runs_dir() / name / preset)
        self.only = None if only is None else re.compile(only)
        self.done: dict[str, dict[str, Any]] = {}
        self._env: dict[str, Any] | None = None
        self.done = self._on_disk()

    def _on_disk(self) -> dict[str, dict[str, Any]]:
        """The finished cells in the results file (checked to be of this configuration)."""
        if not self.results_file.exists():
            return {}
        grid = json.loads(self.results_file.read_text()).get("grid")
        if grid is None:
            return {}
        self.specs_at_start = {**grid.get("specs_at_start", {}), **self.specs_at_start}
        if grid.get("fingerprint") not in self._accepted:
            raise ValueError(
                f"{self.results_file} holds cells of another configuration of "
                f"{self.name}/{self.preset} (fingerprint {grid.get('fingerprint')} vs "
                f"{self.fingerprint}); pass another --out, or delete that file to start over"
            )
        return dict(grid.get("cells", {}))

    def checkpoint_dir(self, cell: Cell) -> Path:
        return self.checkpoint_root / cell.slug

    def _save_partial(self, total: int) -> None:
        if not self.write:
            return
        self.results_file.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.results_file):  # other processes may run other cells of this grid
            self.done = {**self._on_disk(), **self.done}
            _write_partial(self.results_file, self.name, self.preset, total, self.as_json())

    def as_json(self) -> dict[str, Any]:
        """The finished cells, the fingerprint and the decision specs recorded at the start,
        as stored in the results file."""
        out: dict[str, Any] = {"fingerprint": self.fingerprint, "cells": self.done}
        if self.specs_at_start:
            out["specs_at_start"] = self.specs_at_start
        return out

    def _reopen(self, total: int) -> None:
        """A results file written ``complete`` whose grid has since gained cells (new arms,
        controls) is unfinished again: rewritten ``partial`` with the new total, its cells
        kept, so the report summarises it from the cells at the current code."""
        if not self.write or not self.results_file.exists():
            return
        status = json.loads(self.results_file.read_text()).get("status")
        if status == "complete":
            self._save_partial(total)

    def _record_specs(self, total: int) -> None:
        """Writes each spec the file does not hold yet, before the first cell trains."""
        from experiments.harness.stats import spec_hash

        new = {
            key: {"hash": spec_hash(spec), "spec": spec, "recorded": _now()}
            for key, spec in self.specs.items()
            if key not in self.specs_at_start
        }
        if new and self.write:
            self.specs_at_start.update(new)
            self._save_partial(total)

    def run(
        self,
        cells: Sequence[Cell],
        measure: Callable[[Cell, Path, Budget], dict[str, Any]],
        *,
        total: int | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Runs every unfinished cell; returns ``{cell id: measured result}`` for all cells.

        ``total`` is the whole grid's cell count when ``cells`` is one stage of it (what the
        results file reports as ``cells_total``; default ``len(cells)``).

        ``measure(cell, checkpoint_dir, budget)`` trains (resuming from ``checkpoint_dir``)
        and returns the cell's JSON-able result; it should pass ``budget.callback`` to the
        trainer so that the budget is checked at every checkpoint.

        Raises:
          BudgetExhausted: the budget ran out; finished cells are saved, the unfinished
            one has its checkpoint, and rerunning the same command resumes.
        """
        ids = [c.id for c in cells]
        if len(set(ids)) != len(ids):
            raise ValueError("cell ids must be unique")
        todo = [c for c in cells if c.id not in self.done]
        if self.only is not None:
            todo = [c for c in todo if self.only.search(c.id)]
        spent: list[float] = []
        finished = sum(c.id in self.done for c in cells)
        if not self.quiet and len(todo) < len(cells):
            elsewhere = len(cells) - finished - len(todo)
            print(
                f"[{self.name}/{self.preset}] {finished}/{len(cells)} cells already in "
                f"{self.results_file}; {len(todo)} to run here"
                + (f", {elsewhere} left out by --cells" if elsewhere else "")
                + "; resuming",
                file=sys.stderr,
            )
        total = total or len(cells)
        if todo:
            self._record_specs(total)
        if any(c.id not in self.done for c in cells):
            self._reopen(total)
        for cell in todo:
            self.budget.check(expected_s=0.0)
            self.budget.start_segment_clock()
            start = time.time()
            result = measure(cell, self.checkpoint_dir(cell), self.budget)
            wall = time.time() - start
            spent.append(wall)
            if self._env is None:
                self._env = environment()
            self.done[cell.id] = {
                "params": cell.params,
                "result": result,
                "wall_s": round(wall, 1),
                "finished": _now(),
                "environment": self._env,
            }
            self._save_partial(total)
            if self.write:
                shutil.rmtree(self.checkpoint_dir(cell), ignore_errors=True)
            if not self.quiet:
                left = len([c for c in todo if c.id not in self.done])
                eta = left * sum(spent) / len(spent)
                print(
                    f"[{self.name}/{self.preset}] cell {cell.id} done in {wall / 60:.1f} min; "
                    f"{sum(c.id in self.done for c in cells)}/{len(cells)} cells done, "
                    f"{left} more here, about {_hms(eta)} left",
                    file=sys.stderr,
                    flush=True,
                )
        if self.write:  # the last cell's folder is gone; drop the empty preset folder
            with contextlib.suppress(OSError):
                self.checkpoint_root.rmdir()
        self.done = {**self._on_disk(), **self.done}  # cells other processes finished
        missing = [c.id for c in cells if c.id not in self.done]
        if missing:
            raise BudgetExhausted(
                f"the cells selected by --cells are done; {len(missing)} other cells of the "
                f"grid are not (e.g. {missing[0]!r})"
            )
        return {c.id: self.done[c.id]["result"] for c in cells}


def forget_cells(results_file: Path, pattern: str) -> list[str]:
    """Removes the finished cells whose id matches ``pattern`` from a grid's results file,
    so that the next run of the same command trains them again (e.g. after a fix to the
    code they ran at); returns their ids. The file becomes ``partial``; the write takes
    the grid's lock, so processes running other cells of the grid keep theirs.

    Raises:
      FileNotFoundError: there is no such results file.
      ValueError: the file holds no grid.
    """
    results_file = Path(results_file)
    if not results_file.exists():
        raise FileNotFoundError(f"no results file {results_file}; check --out and --preset")
    with _locked(results_file):
        payload = json.loads(results_file.read_text())
        grid = payload.get("grid")
        if grid is None:
            raise ValueError(f"{results_file} holds no grid of cells: rerun it instead")
        cells = grid.get("cells", {})
        total = payload.get("cells_total") or (payload.get("results") or {}).get("cells_total")
        gone = [cell_id for cell_id in cells if re.search(pattern, cell_id)]
        if gone:
            kept = {k: v for k, v in cells.items() if k not in gone}
            _write_partial(
                results_file,
                payload.get("experiment"),
                payload.get("preset"),
                total or len(cells),
                {**grid, "cells": kept},
            )
    return gone


@contextlib.contextmanager
def _locked(results_file: Path):
    """Holds the grid's lock file beside ``results_file`` (every writer of it takes this)."""
    with open(results_file.with_name(f".{results_file.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _write_partial(results_file: Path, name, preset, total: int, grid: dict[str, Any]) -> None:
    """Writes an unfinished grid's results file: its finished cells, ``status: partial``."""
    write_json_atomic(
        results_file,
        {
            "experiment": name,
            "preset": preset,
            "status": "partial",
            "cells_done": len(grid["cells"]),
            "cells_total": total,
            "grid": grid,
        },
    )


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _has_cells(path: Path) -> bool:
    """Whether the results file ``path`` holds finished cells (of any configuration)."""
    try:
        return bool(json.loads(Path(path).read_text()).get("grid", {}).get("cells"))
    except (OSError, ValueError, AttributeError):
        return False


def grid_for(
    ctx: RunContext,
    config: Any,
    *,
    extends: Sequence[Any] = (),
    specs: dict[str, Any] | None = None,
) -> Grid:
    """The :class:`Grid` of run ``ctx``: cells go into ``ctx.results_file``, the budget is
    ``ctx.time_budget``, and the finished cells also land in the final results file (a
    claim's ``run`` returns its grid, which :func:`experiments.harness.claim.execute`
    stores as ``"grid"``).

    ``specs`` (default: ``ctx.specs`` when the results file holds no cell yet) are recorded
    before the first cell trains; a file whose cells ran without a record gets none, so a
    hash is never written after the data it would claim to precede."""
    import jax

    if specs is None and ctx.specs and not _has_cells(ctx.results_file):
        specs = ctx.specs  # a new grid records the claim's specs; an older one stays as it ran
    grid = Grid(
        ctx.name,
        ctx.preset,
        ctx.results_file,
        config,
        quiet=ctx.quiet,
        write=jax.process_index() == 0,
        only=ctx.cells,
        extends=extends,
        specs=specs,
    )
    # Multi-host: the finished cells are those of process 0's results file (the only one
    # written), and every process stops when process 0's budget runs out.
    grid.done = from_process0(grid.done)
    grid.budget = AgreedBudget(ctx.time_budget)
    return grid


def run_grid(
    ctx: RunContext,
    config: Any,
    cells: list[Cell],
    measure,
    on_stop: Callable[[dict[str, dict], Grid], None] | None = None,
    specs: dict[str, Any] | None = None,
) -> tuple[dict[str, dict], Grid]:
    """Runs ``cells`` in run ``ctx``'s grid; returns ``{cell id: {"params", "result"}}``
    and the grid.

    ``on_stop(records, grid)``, if given, is called with the finished cells' records (same
    form) when the run stops before the grid is complete (budget spent, or ``--cells`` left
    the rest to other processes), before :class:`BudgetExhausted` propagates: what a claim
    uses to draw its figures from the cells in so far.
    """
    grid = grid_for(ctx, config, specs=specs)

    def records(results: dict[str, Any]) -> dict[str, dict]:
        return {
            c.id: {"params": c.params, "result": results[c.id]} for c in cells if c.id in results
        }

    try:
        done = grid.run(cells, measure)
    except BudgetExhausted:
        if on_stop is not None:
            on_stop(records({cell_id: cell["result"] for cell_id, cell in grid.done.items()}), grid)
        raise
    return records(done), grid


def finished_cells(payload: dict[str, Any], presets: dict[str, Any]) -> tuple | None:
    """``(preset, records, seeds)`` of an unfinished run's results file: its preset from
    ``presets``, its finished cells and their seeds (sorted); None when no cell finished
    yet. What an experiment's ``partial`` hook starts from."""
    records = payload["grid"]["cells"]
    if not records:
        return None
    seeds = sorted({s for r in records.values() for s in r["params"]["seeds"]})
    return presets[payload["preset"]], records, seeds


def merge_seed_groups(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's training results from its seed-group cells, joined over seeds.

    Each record is a :meth:`experiments.harness.train.TrainResult.to_json` dict with its cell's
    ``seeds``; seeds, final metrics and every curve entry's per-replica lists are
    concatenated in seed order (the curves' steps must agree), timings kept per group.

    Examples:
      >>> from experiments.harness.cells import merge_seed_groups
      >>> def rec(seeds, acc):
      ...     m = {"train_loss": acc, "train_acc": acc, "test_loss": acc, "test_acc": acc}
      ...     return {"seeds": seeds, "final": m, "curves": [{"step": 1, **m}], "timing": {}}
      >>> merge_seed_groups([rec([2, 3], [0.3, 0.4]), rec([0, 1], [0.1, 0.2])])["final"]["test_acc"]
      [0.1, 0.2, 0.3, 0.4]
    """
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    records = sorted(records, key=lambda r: r["seeds"][0])
    final = {k: sum((r["final"][k] for r in records), []) for k in keys}
    curves = []
    for entries in zip(*(r["curves"] for r in records), strict=True):
        if len({e["step"] for e in entries}) != 1:
            raise ValueError("seed groups evaluated at different steps cannot be merged")
        curves.append({**entries[0], **{k: sum((e[k] for e in entries), []) for k in keys}})
    return {
        "seeds": sum((r["seeds"] for r in records), []),
        "final": final,
        "curves": curves,
        "timing": [r.get("timing") for r in records],
    }
