"""The contract every claim implements, declared once.

A claim is one module under ``experiments/claims/``. It tests one quantitative statement of a
source document and ends with ``CLAIM = Claim(...)``, the only thing the rest of the project
reads from it (:mod:`experiments.catalog` is the only discovery):

* ``name`` and ``description``: the experiment's name on the command line, and the line that
  ``python -m experiments list`` prints;
* ``presets``: ``{"smoke": ..., "quick": ..., "paper": ...}``, each a frozen dataclass of
  the protocol at that scale (the ``paper`` preset is the source's protocol, or the scaled
  protocol its spec declares);
* ``spec``: the decision spec fixed before the data (a
  :class:`experiments.harness.stats.DecisionSpec`, or ``{part: DecisionSpec}`` for a claim
  of several parts, or a function of the preset name returning one), or None for a claim
  decided by a tolerance rather than a contrast. :func:`execute` has a new grid record its
  hash before the first cell trains and writes it again, with the hash then, into the
  results (``"spec"``, :func:`experiments.harness.stats.spec_record`) unless the claim
  records it itself;
* ``run(ctx) -> Outcome``: trains or measures the preset's cells through the grid of
  :mod:`experiments.harness.cells` (a one-shot claim is a grid of one cell, see
  :func:`one_cell`), summarises the finished cells, decides and draws; it returns the results
  and the grid, whose cells :func:`execute` writes beside them;
* ``render(results) -> str``: the markdown that the command line prints and REPORT.md embeds;
* ``partial(payload) -> results | None`` (grid claims): the evidence of an unfinished run's
  results file, for the report.

Examples:
  A claim whose whole measurement is one cell:

  >>> import tempfile
  >>> from pathlib import Path
  >>> from experiments.harness.claim import Claim, Outcome, execute, one_cell
  >>> from experiments.harness.results import RunContext
  >>> def run(ctx):
  ...     compute = lambda checkpoint_dir, budget: {"total": sum(range(3))}
  ...     result, grid = one_cell(ctx, {"n": 3}, compute)
  ...     return Outcome(dict(result, verdict="reproduced"), grid)
  >>> presets = dict.fromkeys(("smoke", "quick", "paper"))
  >>> toy = Claim("toy", "A toy claim", presets, run, lambda r: f"total {r['total']}")
  >>> out = Path(tempfile.mkdtemp())
  >>> payload, path = execute(toy, RunContext("toy", "smoke", out / "toy", quiet=True))
  >>> payload["results"], path.name, list(payload["grid"]["cells"])
  ({'total': 3, 'verdict': 'reproduced'}, 'smoke.json', ['all'])
  >>> toy.render(payload["results"])
  'total 3'
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from experiments.harness.results import (
    PRESETS,
    RunContext,
    cells_wall_time,
    environment,
    results_path,
    write_json_atomic,
)

if TYPE_CHECKING:
    from experiments.harness.cells import Grid

__all__ = ["Claim", "Outcome", "execute", "one_cell", "one_shot"]

ONE_CELL = "all"
"""The id of a one-shot claim's only cell."""


class Outcome(NamedTuple):
    """What a claim's ``run`` returns: its results (JSON-able) and the grid it ran (None
    when nothing could run here: the results then say why, ``"verdict": "not run"``)."""

    results: dict[str, Any]
    grid: Grid | None


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim's implementation of the contract (see the module docstring)."""

    name: str
    description: str
    presets: Mapping[str, Any]
    run: Callable[[RunContext], Outcome]
    render: Callable[[dict[str, Any]], str]
    partial: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    spec: Any = None

    def __post_init__(self):
        missing = [p for p in ("smoke", "quick", "paper") if p not in self.presets]
        if missing:
            raise ValueError(f"claim {self.name!r} has no preset {missing}")

    def specs(self, preset: str) -> dict[str, Any]:
        """The decision specs a run of ``preset`` records, by key: ``spec`` may be one
        :class:`~experiments.harness.stats.DecisionSpec` (keyed by the claim's name), a
        ``{key: DecisionSpec}`` dict (parts), or a function of the preset name returning
        either; None (a tolerance claim): no spec."""
        spec = self.spec(preset) if callable(self.spec) else self.spec
        if spec is None:
            return {}
        return dict(spec) if isinstance(spec, Mapping) else {self.name: spec}


def one_cell(
    ctx: RunContext, config: Any, compute: Callable[[Path, Any], dict[str, Any]]
) -> tuple[dict[str, Any], Grid]:
    """Runs a one-shot claim's whole measurement as the single cell of its grid.

    ``compute(checkpoint_dir, budget)`` returns the measurement (JSON-able); it gets the
    cell's checkpoint folder and the run's budget, which a long training may use
    (:func:`experiments.harness.train.resume_options`) to stop cleanly at a checkpoint and
    resume on a rerun, or ignore. The cell is written to the results
    file as soon as it finishes, so a rerun after a crash in the summary or the figure reuses
    it; ``config`` is the grid's fingerprint (a run with another configuration is refused).
    A finished results file stores the measurement once, as its ``results``
    (:func:`execute` leaves it out of the cell), and a rerun
    returns it from there. Returns the measurement (as stored, when it is reused) and the
    grid.
    """
    from experiments.harness.cells import Cell, grid_for
    from experiments.harness.multihost import from_process0
    from experiments.harness.results import read_results

    grid = grid_for(ctx, config)
    cell = Cell(ONE_CELL, {})
    if cell.id in grid.done and "result" not in grid.done[cell.id]:
        # A finished run's file keeps the measurement once, as its results (see execute).
        import jax

        stored = read_results(ctx.results_file)["results"] if jax.process_index() == 0 else None
        return from_process0(stored), grid
    if grid.only is not None and not grid.only.search(cell.id) and cell.id not in grid.done:
        raise ValueError(
            f"--cells selects cells of a grid; {ctx.name} runs as one cell, {cell.id!r}: "
            "leave --cells out"
        )
    done = grid.run([cell], lambda cell, folder, budget: compute(folder, budget))
    return done[cell.id], grid


def one_shot(
    presets: Mapping[str, Any],
    measure_all: Callable[..., dict[str, Any]],
    resumable: bool = False,
) -> Callable[[RunContext], Outcome]:
    """The ``run`` of a one-shot claim: ``measure_all(ctx)`` (measure, summarise, decide,
    draw) as the single cell of a grid whose fingerprint is the preset and the run's
    overrides. With ``resumable``, ``measure_all(ctx, checkpoint_dir, budget)`` (see
    :func:`one_cell`)."""

    def run(ctx: RunContext) -> Outcome:
        config = {
            "preset": _plain(presets[ctx.preset]),
            "dataset": ctx.dataset,
            "replicas": ctx.replicas,
            "seed": ctx.seed,
        }
        if resumable:
            compute = lambda checkpoint_dir, budget: measure_all(ctx, checkpoint_dir, budget)
        else:
            compute = lambda checkpoint_dir, budget: measure_all(ctx)
        results, grid = one_cell(ctx, config, compute)
        return Outcome(results, grid)

    run.__doc__ = measure_all.__doc__
    return run


def _plain(value: Any) -> Any:
    """``value`` as JSON-able data that is the same in every process (a function by its
    qualified name, never by its address)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', '?')}"
    return value


def execute(claim: Claim, ctx: RunContext) -> tuple[dict[str, Any], Path]:
    """Runs ``claim`` and writes its results file; returns (payload, path).

    The payload holds the claim's results, the run's metadata and the grid's cells, each
    with the environment and commit it ran at.
    """
    if ctx.preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {ctx.preset!r}")
    start = time.time()
    specs = claim.specs(ctx.preset)
    if specs:  # a new grid records them before its first cell (grid_for)
        ctx = dataclasses.replace(ctx, specs={k: s.to_json() for k, s in specs.items()})
    results, grid = claim.run(ctx)
    if specs and grid is not None and "spec" not in results:  # and again at summarise time
        from experiments.harness.stats import spec_record

        results = {**results, "spec": spec_record(specs, grid.specs_at_start)}
    payload = {
        "experiment": claim.name,
        "preset": ctx.preset,
        "dataset_override": ctx.dataset,
        "replicas_override": ctx.replicas,
        "seed": ctx.seed,
        "environment": environment(),
        "wall_time_s": round(time.time() - start, 3),
        "status": "complete",
        "results": results,
    }
    if grid is not None:
        payload["grid"] = _grid_json(grid)
        # The cells' training time, not this invocation's (which may only have summarised).
        payload["wall_time_s"] = cells_wall_time(payload["grid"]["cells"].values())
    path = results_path(ctx.out_dir.parent, claim.name, ctx.preset)
    if payload["environment"]["process_index"] == 0:  # one writer on a multi-host run
        write_json_atomic(path, payload)
    return payload, path


def _grid_json(grid) -> dict[str, Any]:
    """The grid as the results file stores it: a one-shot claim's only cell without its
    result, which is the file's results (stored once)."""
    out = dict(grid.as_json())
    cells = out["cells"]
    if list(cells) == [ONE_CELL]:
        out["cells"] = {ONE_CELL: {k: v for k, v in cells[ONE_CELL].items() if k != "result"}}
    return out
