"""The experiment registry and the results files every experiment writes.

An experiment is a function ``run(ctx: RunContext) -> dict`` registered under a name with
:func:`register`. It returns a JSON-able dict of results; :func:`execute` adds the metadata
(config, seeds, data source, device kind and count, jax/flax versions, git commit, wall
time) and writes ``<out>/<name>/<preset>.json`` atomically (temp file + ``os.replace``), so
an interrupted run never leaves a half-written results file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "PRESETS",
    "Experiment",
    "RunContext",
    "ResultsFileError",
    "cleanup_checkpoints",
    "execute",
    "not_run_result",
    "lookup",
    "read_results",
    "register",
    "registered",
    "results_path",
    "save_figure_atomic",
    "write_json_atomic",
]

PRESETS = ("smoke", "quick", "paper")
PUBLISHED = Path(__file__).resolve().parent / "results"
"""The committed results that REPORT.md renders; runs write here only when asked to
(``--out experiments/results``)."""
DEFAULT_OUT = Path("runs")
"""Where runs write by default: a git-ignored folder of the current directory."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What an experiment run is asked to do.

    Attributes:
      name: the experiment's registered name.
      preset: ``"smoke"`` (seconds, CI), ``"quick"`` (minutes on a CPU) or ``"paper"`` (the
        seeds' exact protocol).
      out_dir: the experiment's own results folder, ``<out>/<name>``; checkpoints and
        figures go here too.
      dataset: a dataset override (None: the experiment's default for the preset).
      replicas: a replica-count override (None: the preset's).
      quiet: no progress bars (CI).
      seed: base seed; replica r uses seed + r.
      time_budget: minutes this run may take; a grid experiment stops cleanly at a
        checkpoint before they run out (rerun the command to resume).
      cells: a regular expression selecting which cells of a grid experiment to run.
    """

    name: str
    preset: str
    out_dir: Path
    dataset: str | None = None
    replicas: int | None = None
    quiet: bool = False
    seed: int = 0
    time_budget: float | None = None
    cells: str | None = None
    grids: list = dataclasses.field(default_factory=list, compare=False, repr=False)

    @property
    def results_file(self) -> Path:
        """``<out>/<name>/<preset>.json``."""
        return self.out_dir / f"{self.preset}.json"

    def seeds(self, replicas: int) -> list[int]:
        """The run's seeds: ``seed, seed + 1, ...``, ``self.replicas`` of them or ``replicas``."""
        return [self.seed + r for r in range(self.replicas or replicas)]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: its ``run`` and the module-level hooks beside it.

    ``render`` and ``partial`` are the functions of those names in ``run``'s module
    (looked up when asked for, so they may be defined after ``run``), unless given to
    :func:`register`.
    """

    name: str
    description: str
    run: Callable[[RunContext], dict[str, Any]]
    render_fn: Callable[[dict[str, Any]], str] | None = None
    partial_fn: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None

    def _hook(self, name: str):
        fn = self.run.__globals__.get(name)
        return fn if callable(fn) else None

    @property
    def render(self) -> Callable[[dict[str, Any]], str] | None:
        """``render(results) -> str``: the markdown the CLI prints and REPORT.md embeds."""
        return self.render_fn or self._hook("render")

    @property
    def partial(self) -> Callable[[dict[str, Any]], dict[str, Any] | None] | None:
        """``partial(payload) -> results``: an unfinished grid's evidence (the report's)."""
        return self.partial_fn or self._hook("partial")


_REGISTRY: dict[str, Experiment] = {}


def register(
    name: str,
    description: str,
    render: Callable[[dict], str] | None = None,
    partial: Callable[[dict], dict | None] | None = None,
):
    """Decorator: registers ``run(ctx) -> dict`` as experiment ``name``.

    ``render(results) -> str`` (optional) turns a results dict into the markdown table that
    the command line prints and REPORT.md embeds. ``partial(payload) -> results`` (optional,
    grid experiments) summarises the finished cells of an unfinished run's results file, so
    the report can show the evidence gathered so far. By default both are the module-level
    functions named ``render`` and ``partial`` in ``run``'s module.
    """

    def wrap(run: Callable[[RunContext], dict[str, Any]]):
        if name in _REGISTRY:
            raise ValueError(f"experiment {name!r} is registered twice")
        _REGISTRY[name] = Experiment(name, description, run, render, partial)
        return run

    return wrap


def registered() -> dict[str, Experiment]:
    """The experiments registered so far (:func:`experiments.catalog.experiments` imports
    them all first)."""
    return dict(_REGISTRY)


def lookup(name: str) -> Experiment:
    """The experiment ``name``, importing its module ``experiments.<name>`` when needed.

    Raises:
      KeyError: no such experiment (the message says how to list them).
    """
    if name not in _REGISTRY:
        import importlib

        try:
            importlib.import_module(f"experiments.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"experiments.{name}":
                raise
    if name not in _REGISTRY:
        raise KeyError(f"unknown experiment {name!r}; `python -m experiments list` lists them")
    return _REGISTRY[name]


def results_path(out: Path, name: str, preset: str) -> Path:
    return Path(out) / name / f"{preset}.json"


class ResultsFileError(ValueError):
    """A results file that cannot be read as one: not JSON, or JSON but not an object."""


def read_results(path: Path) -> dict[str, Any]:
    """The payload of the results file ``path`` (a JSON object), leaving the file as it is.

    Raises:
      ResultsFileError: the file is not valid JSON (truncated by a crash that bypassed the
        atomic write, say, or holding git merge-conflict markers) or not a JSON object; the
        one-line message names the file and the way out.
      FileNotFoundError: there is no such file.

    Examples:
      >>> import tempfile
      >>> from pathlib import Path
      >>> from experiments.registry import read_results
      >>> path = Path(tempfile.mkdtemp()) / "quick.json"
      >>> _ = path.write_text('{"status": "complete"')
      >>> read_results(path)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      experiments.registry.ResultsFileError: .../quick.json is not valid JSON (...): ...
    """
    path = Path(path)
    text = path.read_text()
    way_out = (
        "fix it, or delete it to start over (its finished cells are lost), or pass another --out"
    )
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        what = f"{err.msg} at line {err.lineno} column {err.colno}"
        if any(line.startswith(("<<<<<<< ", "=======", ">>>>>>> ")) for line in text.splitlines()):
            what += "; it holds git merge-conflict markers"
        raise ResultsFileError(f"{path} is not valid JSON ({what}): {way_out}") from err
    if not isinstance(payload, dict):
        kind = type(payload).__name__
        raise ResultsFileError(f"{path} holds a JSON {kind}, not a results object: {way_out}")
    return payload


def write_json_atomic(path: Path, payload: Any) -> None:
    """Writes JSON to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=False, default=_json_default)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_figure_atomic(fig, path: Path, *, dpi: int = 110, title: str | None = None) -> None:
    """Saves a matplotlib figure via a temp file and ``os.replace``, then closes it.

    With ``title``, first sets it as the figure's title and tightens the layout.
    """
    import matplotlib.pyplot as plt

    if title is not None:
        fig.suptitle(title, fontsize="medium")
        fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def _json_default(value):
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__array__"):
        return np.asarray(value).tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    """Device kind and count, library versions, git commit, host."""
    import flax
    import jax

    devices = jax.devices()
    return {
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "host": platform.node(),
    }


def cells_wall_time(cells) -> float:
    """A grid's training time in seconds: the sum of its finished cells' ``wall_s``."""
    return round(sum(cell["wall_s"] for cell in cells), 1)


def execute(name: str, ctx: RunContext) -> tuple[dict[str, Any], Path]:
    """Runs experiment ``name`` and writes its results file; returns (payload, path)."""
    experiment = lookup(name)
    if ctx.preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}; got {ctx.preset!r}")
    start = time.time()
    results = experiment.run(ctx)
    payload = {
        "experiment": name,
        "preset": ctx.preset,
        "dataset_override": ctx.dataset,
        "replicas_override": ctx.replicas,
        "seed": ctx.seed,
        "environment": environment(),
        "wall_time_s": round(time.time() - start, 3),
        "status": "complete",
        "results": results,
    }
    if ctx.grids:  # the cells, each with the environment and commit it ran at
        payload["grid"] = ctx.grids[-1].as_json()
        # The cells' training time, not this invocation's (which may only have summarised).
        payload["wall_time_s"] = cells_wall_time(payload["grid"]["cells"].values())
    path = results_path(ctx.out_dir.parent, name, ctx.preset)
    if payload["environment"]["process_index"] == 0:  # one writer on a multi-host run
        write_json_atomic(path, payload)
    return payload, path


def not_run_result(reason: str, claim: str, source: str, paper: dict[str, Any]) -> dict:
    """The honest result of a run that could not happen here."""
    return {
        "not_run": True,
        "reason": reason,
        "claim": claim,
        "source": source,
        "paper": paper,
        "verdict": "not run",
    }


def cleanup_checkpoints(root: Path) -> None:
    """Removes a run's checkpoints (and the parent folder when it is empty)."""
    shutil.rmtree(root, ignore_errors=True)
    with contextlib.suppress(OSError):
        root.parent.rmdir()
