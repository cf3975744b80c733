"""What a run is asked to do (:class:`RunContext`), and the results file every claim
writes: its layout, its atomic write (temp file + ``os.replace``, so an interrupted run never
leaves a half-written file), reading it back, and the environment it records (device kind
and count, jax/flax versions, git commit). :func:`experiments.harness.claim.execute` runs a
claim and writes its file.
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
from pathlib import Path
from typing import Any

from experiments.harness.host_devices import default_split

__all__ = [
    "PRESETS",
    "PUBLISHED",
    "RunContext",
    "ResultsFileError",
    "cleanup_checkpoints",
    "not_run_result",
    "read_results",
    "results_path",
    "save_figure_atomic",
    "write_json_atomic",
]

PRESETS = ("smoke", "quick", "scaled", "paper")
"""Every preset name; ``scaled`` (a declared scaled-down protocol, for the claims whose
paper protocol cannot run on a CPU: :data:`experiments.catalog.SCALED`) is optional."""
PUBLISHED = Path(__file__).resolve().parent.parent / "results"
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
      specs: ``{key: decision spec (JSON)}``: the claim's decision specs for this preset,
        which a new grid records before its first cell (set by
        :func:`experiments.harness.claim.execute` from the claim's ``spec``).
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
    specs: dict[str, Any] | None = None

    @property
    def results_file(self) -> Path:
        """``<out>/<name>/<preset>.json``."""
        return self.out_dir / f"{self.preset}.json"

    def seeds(self, replicas: int) -> list[int]:
        """The run's seeds: ``seed, seed + 1, ...``, ``self.replicas`` of them or ``replicas``."""
        return [self.seed + r for r in range(self.replicas or replicas)]


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
      >>> from experiments.harness.results import read_results
      >>> path = Path(tempfile.mkdtemp()) / "quick.json"
      >>> _ = path.write_text('{"status": "complete"')
      >>> read_results(path)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      experiments.harness.results.ResultsFileError: .../quick.json is not valid JSON (...): ...
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
    """Device kind and count, how the harness splits work over the devices (the trainer's
    default split and ``XLA_FLAGS``), library versions, git commit, host."""
    import flax
    import jax

    devices = jax.devices()
    return {
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "split": default_split(jax.process_count()),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "host": platform.node(),
    }


def cells_wall_time(cells) -> float:
    """A grid's training time in seconds: the sum of its finished cells' ``wall_s``."""
    return round(sum(cell["wall_s"] for cell in cells), 1)


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
